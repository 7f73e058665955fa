"""TensorRT on an NVIDIA GPU (an x86 edge server or a Jetson): engines built from a half's ONNX.

NEVER RUN: no machine this project is built and tested on has TensorRT (docs/gpu.md). The pure
parts (``engine_key``, ``needs_rebuild``, ``builder_flags``, the cache paths) are unit-tested on a
CPU; the rest is written against TensorRT 10/11's and cuda-python's documented Python APIs and is
exercised only by ``scripts/gpu-check.sh`` where there is a GPU. Keep it small.

A TensorRT engine only runs on the GPU model, TensorRT version and platform it was built on (an
x86 engine does not run on a Jetson, and there is no cross-building), so an engine is built on the
machine that runs it, from the portable ONNX. Every engine carries a record beside it
(``X.engine.json``: the key ``engine_key(trt version, GPU name, compute capability)`` and the
sha256 of its ONNX); an engine whose record does not match this machine or its ONNX is rebuilt,
never loaded. Timing caches are keyed the same way, since they carry only between identical
TensorRT versions and GPUs.

Precision comes from the ONNX: float32, float16 (casts in the graph), or QDQ int8 from
``tlcut compile --precision int8``. TensorRT 11 builds strongly typed networks only and has no
precision flags; on TensorRT 10 the FP16/INT8 builder flags are set only when the ONNX asks for
them, and TF32 is cleared for a float32 graph so a float32 engine computes in float32.

The runner deserializes the engine, allocates pinned host and device buffers once, and on each
``infer`` copies in, enqueues (``execute_async_v3``, or a captured CUDA graph with
``cuda_graph=True``) and copies out on one stream.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from tlcut.bundle import build_record, engine_dir_of, run_time_build, timing_cache_file
from tlcut.errors import TlcutError
from tlcut.runtime.backends import TENSORRT
from tlcut.runtime.backends.base import Backend, Runner

NOT_INSTALLED = ("the tensorrt backend needs TensorRT, which is not installed here: on an x86 GPU machine "
                 "`pip install 'tlcut[tensorrt]'`, on a Jetson it comes with JetPack (`sudo apt install "
                 "nvidia-jetpack`); engines are built on the machine that runs them, so run this there")
NO_CUDA_PYTHON = ("the tensorrt backend needs NVIDIA's cuda-python for its buffers and stream: "
                  "`pip install cuda-python` (the major version of your CUDA), or `pip install 'tlcut[tensorrt]'`")
#: An engine's file suffix; engines built at run time and the timing caches are filed by
#: tlcut/bundle.py (``run_time_build``, ``timing_cache_file``, ``build_record``) under the backend's name.
SUFFIX = ".engine"


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TlcutError(NOT_INSTALLED) from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise TlcutError(NO_CUDA_PYTHON) from None
    return cudart


def _ck(cudart, result):
    """The values of a cuda-python call ``(err, *values)``; a CUDA error becomes a one-line TlcutError."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise TlcutError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


# -- pure functions: unit-tested without a GPU ---------------------------------------------------
def version3(version: str) -> str:
    """'10.3.0.30' -> '10.3.0': the build number never differs within a release."""
    parts = str(version).strip().split(".")
    if not parts[0].isdigit():
        raise ValueError(f"not a TensorRT version: {version!r}")
    return ".".join((parts + ["0", "0"])[:3])


def engine_key(trt_version: str, gpu_name: str, cc) -> str:
    """The name engines and timing caches are filed under: TensorRT version, GPU, compute capability,
    e.g. ``trt10.3.0_orin_sm87``. scripts and build_engine.sh compute the same string."""
    major, minor = (int(x) for x in (cc.split(".") if isinstance(cc, str) else cc))
    gpu = re.sub(r"[^a-z0-9]+", "-", str(gpu_name).lower()).strip("-") or "gpu"
    return f"trt{version3(trt_version)}_{gpu}_sm{major}{minor}"


def needs_rebuild(meta: dict | None, key: str, onnx_sha256: str | None) -> str | None:
    """Why an engine with build record ``meta`` must not be loaded on a machine of ``key`` for an
    ONNX with ``onnx_sha256`` (None: the ONNX is not at hand to check), or None when it may."""
    if not meta:
        return "has no build record"
    if meta.get("key") != key:
        return f"was built for {meta.get('key')}, this machine is {key}"
    if onnx_sha256 and meta.get("onnx_sha256") != onnx_sha256:
        return "was built from another version of its ONNX"
    return None


def builder_flags(needs, trt_major: int) -> list[str]:
    """TensorRT builder flags for a graph needing ``needs`` ({"float16", "int8"}): none on TensorRT
    11 (strongly typed: the ONNX's types are the precision), FP16/INT8 on 10 only where asked."""
    if trt_major >= 11:
        return []
    return [f for f, p in (("FP16", "float16"), ("INT8", "int8")) if p in needs]


def engine_cache_path(onnx_path, key: str) -> Path:
    """Where an engine built at run time for ``onnx_path`` lives: ``<its folder>/tensorrt/<key>/<stem>.engine``."""
    return run_time_build(onnx_path, TENSORRT, key, SUFFIX)


def read_meta(engine_path) -> dict | None:
    try:
        return json.loads(build_record(engine_path).read_text())
    except (OSError, ValueError):
        return None


# -- TensorRT itself: cannot run here -------------------------------------------------------------
def this_machine(trt, cudart) -> tuple[str, str, tuple[int, int]]:
    """(TensorRT version, GPU name, compute capability) of the current device."""
    dev = _ck(cudart, cudart.cudaGetDevice())
    props = _ck(cudart, cudart.cudaGetDeviceProperties(dev))
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0")[0].decode(errors="replace")
    return trt.__version__, name, (int(props.major), int(props.minor))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path, engine_path, *, workspace_mib: int = 1024, timing_cache=None) -> dict:
    """Build and save an engine for ``onnx_path`` with this machine's timing cache (by default in
    the half's ``tensorrt/`` folder); write its build record beside it and return it."""
    import onnx

    from tlcut.bundle import sha256_file, write_json_atomic
    from tlcut.runtime.backends.onnxrt import precision_needs

    trt, cudart = _trt(), _cudart()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    version, gpu, cc = this_machine(trt, cudart)
    key = engine_key(version, gpu, cc)
    needs = precision_needs(onnx.load(str(onnx_path), load_external_data=False))
    major = int(version.split(".")[0])

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (10), strongly typed always (11)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise TlcutError(f"TensorRT {version} cannot parse {onnx_path}: {errs[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    flags = builder_flags(needs, major)
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    if not needs and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # float32 means float32, not TF32
    tc_path = Path(timing_cache) if timing_cache else timing_cache_file(engine_dir_of(engine_path, TENSORRT), key)
    try:  # keyed by machine, so it should match; a damaged one is started afresh rather than trusted
        cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
    except Exception:
        cache = None
    cache = cache or config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TlcutError(f"TensorRT {version} could not build an engine for {onnx_path}; its log above says why")
    build_record(engine_path).unlink(missing_ok=True)  # no record ever vouches for a half-replaced engine
    _atomic_write(engine_path, bytes(plan))
    _atomic_write(tc_path, bytes(config.get_timing_cache().serialize()))
    meta = {"key": key, "tensorrt": version, "gpu": gpu, "compute_capability": f"{cc[0]}.{cc[1]}",
            "onnx": os.path.relpath(onnx_path, engine_path.parent), "onnx_sha256": sha256_file(onnx_path),
            "precision_needs": sorted(needs), "builder_flags": flags, "builder": "tlcut"}
    write_json_atomic(build_record(engine_path), meta)
    return meta


def resolve_engine(path) -> Path:
    """The engine to load for ``path`` (an engine or a portable ONNX) on this machine: that engine
    if its record matches, else one built now (once) into the half's engine cache."""
    from tlcut.bundle import sha256_file

    trt, cudart = _trt(), _cudart()
    key = engine_key(*this_machine(trt, cudart))
    path = Path(path)
    if path.suffix == SUFFIX:
        meta = read_meta(path)
        src = (path.parent / meta["onnx"]).resolve() if meta and meta.get("onnx") else None
        reason = needs_rebuild(meta, key, sha256_file(src) if src and src.is_file() else None)
        if reason is None:
            return path
        if src is None or not src.is_file():
            raise TlcutError(f"{path} {reason}, and the ONNX it was built from is not beside it; "
                             f"run `tlcut compile BUNDLE --cuts K --backend tensorrt` on this machine")
        print(f"tlcut: warning: {path.name} {reason}; not loading it: using an engine built on this machine from "
              f"{src.name} instead (built once, then cached)", file=sys.stderr, flush=True)
        path = src
    cached = engine_cache_path(path, key)
    if cached.is_file() and needs_rebuild(read_meta(cached), key, sha256_file(path)) is None:
        return cached
    print(f"tlcut: building a TensorRT engine for {path.name} on this GPU ({key}); minutes on a Jetson, "
          f"once: it is kept in {cached.parent}", file=sys.stderr, flush=True)
    try:
        build_engine(path, cached)
    except PermissionError:
        raise TlcutError(f"cannot write the engine cache {cached.parent}; run `tlcut compile BUNDLE --backend "
                         f"tensorrt` (or the folder's build_engine.sh) on this machine as a user who may") from None
    return cached


class TensorrtRunner(Runner):
    def __init__(self, path, cuda_graph: bool = False):
        if isinstance(path, (bytes, bytearray)):
            raise TlcutError("the tensorrt backend builds engines from ONNX files, not in-memory graphs; "
                             "bench with --backend onnxrt and time engines with scripts/gpu-check.sh")
        super().__init__(f"{TENSORRT}:{Path(path).name}")
        self.path, self.cuda_graph = Path(path), cuda_graph
        self._bufs: dict = {}
        self._graph = self._graph_exec = self._stream = None

    def _activate_impl(self):
        trt, cudart = _trt(), _cudart()
        self._cudart = cudart
        engine_path = resolve_engine(self.path)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise TlcutError(f"TensorRT cannot load {engine_path}; delete it and its .json to have it rebuilt")
        self._context = self._engine.create_execution_context()
        self._stream = _ck(cudart, cudart.cudaStreamCreate())
        self._meta, self._outs = {}, []
        try:
            for i in range(self._engine.num_io_tensors):
                name = self._engine.get_tensor_name(i)
                shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                host_ptr = _ck(cudart, cudart.cudaMallocHost(nbytes))  # pinned: async copies
                host = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(host_ptr)))
                dev_ptr = _ck(cudart, cudart.cudaMalloc(nbytes))
                self._bufs[name] = (host.view(dtype).reshape(shape), int(host_ptr), int(dev_ptr), nbytes)
                self._context.set_tensor_address(name, int(dev_ptr))
                if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    self._meta[name] = (dtype, shape)
                else:
                    self._outs.append(name)
            self._enqueue()  # the first enqueue finishes TensorRT's lazy set-up (and must precede capture)
            _ck(cudart, cudart.cudaStreamSynchronize(self._stream))
            if self.cuda_graph:
                self._capture()
        except BaseException:
            self._deactivate_impl()
            raise

    def _capture(self):
        c = self._cudart
        _ck(c, c.cudaStreamBeginCapture(self._stream, c.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        try:
            self._enqueue()
        finally:
            self._graph = _ck(c, c.cudaStreamEndCapture(self._stream))
        self._graph_exec = _ck(c, c.cudaGraphInstantiateWithFlags(self._graph, 0))

    def _enqueue(self):
        if not self._context.execute_async_v3(int(self._stream)):
            raise TlcutError(f"{self.name}: TensorRT failed to enqueue the engine")

    def _execute(self):
        if self._graph_exec is not None:
            _ck(self._cudart, self._cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue()

    def _deactivate_impl(self):
        c = getattr(self, "_cudart", None)
        if c is None:
            return
        if self._graph_exec is not None:
            c.cudaGraphExecDestroy(self._graph_exec)
        if self._graph is not None:
            c.cudaGraphDestroy(self._graph)
        for _, host_ptr, dev_ptr, _ in self._bufs.values():
            c.cudaFree(dev_ptr)
            c.cudaFreeHost(host_ptr)
        if self._stream is not None:
            c.cudaStreamDestroy(self._stream)
        self._bufs, self._graph, self._graph_exec, self._stream = {}, None, None, None
        self._context = self._engine = self._runtime = None

    def _input_metadata_impl(self):
        return self._meta

    def _output_names_impl(self):
        return self._outs

    def _infer_impl(self, feed):
        c, h2d, d2h = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._meta:
            host, host_ptr, dev_ptr, nbytes = self._bufs[name]
            np.copyto(host, feed[name], casting="no")
            _ck(c, c.cudaMemcpyAsync(dev_ptr, host_ptr, nbytes, h2d, self._stream))
        self._execute()
        for name in self._outs:
            _, host_ptr, dev_ptr, nbytes = self._bufs[name]
            _ck(c, c.cudaMemcpyAsync(host_ptr, dev_ptr, nbytes, d2h, self._stream))
        _ck(c, c.cudaStreamSynchronize(self._stream))
        return {name: self._bufs[name][0].copy() for name in self._outs}

    def compute_only(self) -> None:
        """One run on the inputs already on the device, no copies: what trtexec calls GPU compute time."""
        self._require_active()
        self._execute()
        _ck(self._cudart, self._cudart.cudaStreamSynchronize(self._stream))


class TensorrtBackend(Backend):
    """Builds engines at ``tlcut compile --backend tensorrt`` (``halves/K/tensorrt/*.engine``) and
    runs them; a bundle without engines runs too (each half is built once, into its engine cache)."""

    name = TENSORRT
    builds = True
    suffix = SUFFIX

    def __init__(self, cuda_graph: bool = False, workspace_mib: int = 1024, **options):
        super().__init__(**options)
        _trt()  # a one-line error now, before compile writes anything
        _cudart()
        self.cuda_graph, self.workspace_mib = cuda_graph, workspace_mib

    def compile(self, onnx_path, out_path, *, threads=None):
        build_engine(onnx_path, out_path, workspace_mib=self.workspace_mib)

    def runner(self, artifact, *, threads=None, profile=False):
        return TensorrtRunner(artifact, cuda_graph=self.cuda_graph)
