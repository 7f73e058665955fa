"""ONNX Runtime: the embedded default backend, on the CPU or, with ``providers``, an NVIDIA GPU.

``compile`` saves the graph after ORT's portable optimizations (constant folding, fusions that do
not depend on the CPU), so loading a half at serve time is quick and a half that ORT cannot load
fails at compile time rather than in production. The CPU-specific layout rewrites (NCHWc) are
applied when the runner loads it, on the machine that runs it.

``providers`` (``--providers cpu|cuda|tensorrt``) picks ORT's execution providers. ``tensorrt`` is
the TensorRT EP (engine and timing caches in the half's folder, fp16/int8 enabled when the ONNX
itself is float16 or QDQ int8), then CUDA, then CPU; ``cuda`` is CUDA then CPU. A GPU session runs
the portable ONNX rather than the CPU-optimized build (that can hold CPU-only fused kernels), so
the backend then builds nothing and is named ``onnxrt-cuda``/``onnxrt-tensorrt`` (its artifact
lookups fall back to the portable rows). A provider this onnxruntime lacks falls back to the next
with one warning line saying what to install. The GPU paths have only been tested here through
that fallback, on a CPU (docs/gpu.md).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from tlcut import dtypes
from tlcut.bundle import ORT_TRT_CACHE, half_folder_of
from tlcut.errors import TlcutError
from tlcut.runtime.backends import ONNXRT
from tlcut.runtime.backends.base import Backend, Runner


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


#: ``--providers`` choices, and the ONNX Runtime execution provider each one asks for first.
PROVIDERS = ("cpu", "cuda", "tensorrt")
EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GPU_HOWTO = ("install ONNX Runtime's GPU build with `pip uninstall -y onnxruntime && pip install onnxruntime-gpu` "
             "(on a Jetson, the onnxruntime-gpu wheel built for its JetPack; the TensorRT provider also needs "
             "TensorRT's libraries)")
_warned: set = set()


def precision_needs(model) -> set:
    """What an ONNX graph asks of an engine: {"float16"} if it computes in float16 (float16
    initializers or casts), {"int8"} if it is QDQ-quantized. GPU engines enable those precisions only then."""
    from onnx import TensorProto

    g = model.graph
    needs = set()
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        needs.add("int8")
    if (any(i.data_type == TensorProto.FLOAT16 for i in g.initializer)
            or any(n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
                   for n in g.node)):
        needs.add("float16")
    return needs


def trt_cache_dir(path) -> Path | None:
    """ORT's TensorRT EP cache for the half at ``path``: ``<half folder>/onnxrt-trt-cache/`` (the
    half folder being the file's folder, or its parent for a file in an engine's subfolder such as
    ``onnxrt/``). None for an in-memory graph: nothing is cached then."""
    if isinstance(path, (bytes, bytearray)):
        return None
    return half_folder_of(Path(path).resolve(), ONNXRT) / ORT_TRT_CACHE


def provider_list(choice: str, needs=frozenset(), cache_dir=None) -> list:
    """The providers (name, options) that ``--providers choice`` asks for, best first; CPU always last."""
    if choice not in PROVIDERS:
        raise TlcutError(f"--providers must be one of {', '.join(PROVIDERS)}, got '{choice}'")
    out: list = []
    if choice == "tensorrt":
        opts = {"trt_fp16_enable": str("float16" in needs), "trt_int8_enable": str("int8" in needs)}
        if cache_dir is not None:
            opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir),
                        trt_timing_cache_enable="True", trt_timing_cache_path=str(cache_dir))
        out.append((EP_NAMES["tensorrt"], opts))
    if choice in ("tensorrt", "cuda"):
        out.append((EP_NAMES["cuda"], {}))
    out.append((EP_NAMES["cpu"], {}))
    return out


def select_providers(choice: str, available, needs=frozenset(), cache_dir=None) -> tuple[list, str | None]:
    """The providers of ``choice`` that this onnxruntime has (``available``), and the one warning
    to print when the first one asked for is missing (None when it is there)."""
    wanted = provider_list(choice, needs, cache_dir)
    kept = [p for p in wanted if p[0] in available] or [(EP_NAMES["cpu"], {})]
    return kept, (None if kept[0][0] == wanted[0][0] else fallback_warning(choice, kept[0][0], available))


def fallback_warning(choice: str, used: str, available) -> str:
    return (f"--providers {choice} asked for ONNX Runtime's {EP_NAMES[choice]}, which this onnxruntime does not "
            f"provide here (it has {', '.join(available) or 'none'}); running on {used} instead. For the GPU: "
            f"{GPU_HOWTO}")


def warn_once(message: str) -> None:
    """One line on stderr per distinct message and process (an edge loads many halves)."""
    if message not in _warned:
        _warned.add(message)
        print(f"tlcut: warning: {message}", file=sys.stderr, flush=True)


def session_options(threads: int | None = None, profile: bool = False, level: str = "all"):
    ort = _ort()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.enable_profiling = profile
    if profile:
        # A profiled session runs beside a plain one in bench; its idle workers must not spin
        # and steal the cores the plain run is being timed on.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="tlcut-ort-"), "profile")
    return so


class OnnxrtRunner(Runner):
    def __init__(self, path, threads: int | None = None, profile: bool = False, providers: str = "cpu"):
        super().__init__(f"{ONNXRT}:{Path(path).name}" if not isinstance(path, bytes) else f"{ONNXRT}:<memory>")
        self.path = path
        self.threads = threads
        self.profile = profile
        self.providers = providers
        self.session = None

    def _providers(self, ort) -> list:
        if self.providers == "cpu":
            return ["CPUExecutionProvider"]
        import onnx

        model = (onnx.load_from_string(self.path) if isinstance(self.path, bytes)
                 else onnx.load(str(self.path), load_external_data=False))
        kept, warning = select_providers(self.providers, ort.get_available_providers(), precision_needs(model),
                                         trt_cache_dir(self.path))
        if warning:
            warn_once(warning)
        if kept[0][0] == EP_NAMES["tensorrt"]:
            Path(kept[0][1].get("trt_engine_cache_path", ".")).mkdir(parents=True, exist_ok=True)
        return kept

    def _activate_impl(self):
        ort = _ort()
        src = self.path if isinstance(self.path, bytes) else str(self.path)
        providers = self._providers(ort)
        if self.providers != "cpu":
            # A GPU provider that cannot start logs its own multi-line error; we say it in one line below.
            ort.set_default_logger_severity(4)
        try:
            self.session = ort.InferenceSession(src, session_options(self.threads, self.profile), providers=providers)
        except Exception as e:
            raise TlcutError(f"ONNX Runtime cannot load {self.name}: {str(e).splitlines()[0][:200]}") from None
        finally:
            ort.set_default_logger_severity(3)
        used = self.session.get_providers()
        if self.providers != "cpu" and used and used[0] != providers[0][0]:
            # listed as available but it did not start (e.g. the TensorRT EP without TensorRT's libraries)
            warn_once(f"--providers {self.providers}: ONNX Runtime lists {providers[0][0]} but could not start it "
                      f"(its CUDA/TensorRT libraries are missing or do not match this onnxruntime-gpu); running on "
                      f"{used[0]} instead. For the GPU: {GPU_HOWTO}")
        self._meta = {i.name: (dtypes.from_ort(i.type), tuple(i.shape)) for i in self.session.get_inputs()}
        self._outs = [o.name for o in self.session.get_outputs()]
        self._RunOptions, self._run_options = ort.RunOptions, None

    def _deactivate_impl(self):
        self.session = None

    def _input_metadata_impl(self):
        return self._meta

    def _output_names_impl(self):
        return self._outs

    def _infer_impl(self, feed):
        self._run_options = ro = self._RunOptions()  # one per run: cancel() sets its terminate flag
        ro.terminate = self._stop.is_set()  # a cancel that read the last run's options
        return dict(zip(self._outs, self.session.run(self._outs, feed, ro)))

    def _cancel_impl(self):
        if self._run_options is not None:
            self._run_options.terminate = True

    def end_profiling(self) -> str:
        """Stop ORT's profiler and return the path of its JSON trace."""
        return self.session.end_profiling()


class OnnxrtBackend(Backend):
    name = ONNXRT
    has_node_profiler = True
    builds = True

    def __init__(self, providers: str | None = None, **options):
        super().__init__(**options)
        self.providers = providers or "cpu"
        if self.providers not in PROVIDERS:
            raise TlcutError(f"--providers must be one of {', '.join(PROVIDERS)}, got '{self.providers}'")
        if self.providers != "cpu":
            # A GPU session runs the portable ONNX (see the module docstring); ORT's per-node
            # profile of asynchronous GPU kernels is no per-node time, so bench profiles on the CPU.
            self.name = f"onnxrt-{self.providers}"
            self.builds = False
            self.has_node_profiler = False

    @classmethod
    def add_args(cls, g):
        return [g.add_argument(
            "--providers", default="cpu", choices=PROVIDERS,
            help=f"ONNX Runtime's execution providers (--backend {cls.name}): cpu; cuda (then CPU); tensorrt "
                 "(TensorRT EP with an engine cache in the bundle, then CUDA, then CPU). One missing here "
                 "falls back to the next with a warning (default cpu)")]

    @classmethod
    def options_from_args(cls, a, chosen):
        if a.providers != "cpu" and chosen != cls.name:
            raise TlcutError(f"--providers picks ONNX Runtime's execution providers; it needs --backend {cls.name}, "
                             f"not --backend {chosen}")
        return {"providers": a.providers}

    def compile(self, onnx_path, out_path, *, threads=None):
        ort = _ort()
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        so = session_options(threads, level="extended")
        so.optimized_model_filepath = str(out_path)
        try:
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise TlcutError(f"ONNX Runtime cannot load {onnx_path}: {str(e).splitlines()[0][:200]}") from None

    def runner(self, artifact, *, threads=None, profile=False):
        return OnnxrtRunner(artifact, threads=threads, profile=profile, providers=self.providers)

    def node_times(self, runner, onnx_path, *, skip: int) -> np.ndarray:
        """Seconds spent in each node of ``onnx_path`` in each run of ``runner`` (made with
        ``profile=True``) after the first ``skip`` runs; one row per run. Ends the profiling.

        ORT rewrites the graph before running it (fusions, NCHWc reorders), so kernel names are
        mapped back: a kernel named after a node is that node's; one named after a tensor
        (``T:0_nchwc``) belongs to the tensor's producer; anything else to the kernel before it.
        """
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        by_name = {n.name: i for i, n in enumerate(model.graph.node)}
        producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
        trace = runner.end_profiling()
        try:
            events = json.loads(Path(trace).read_text())
        finally:
            Path(trace).unlink(missing_ok=True)
            os.rmdir(Path(trace).parent)
        runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[skip:]
        kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                         key=lambda e: e["ts"])
        out = np.zeros((len(runs), len(model.graph.node)))
        r, last = 0, 0
        for e in kernels:
            while r < len(runs) and e["ts"] > runs[r]["ts"] + runs[r]["dur"]:
                r += 1
            if r >= len(runs):
                break
            if e["ts"] < runs[r]["ts"]:
                continue  # a skipped run
            name = e["name"][: -len("_kernel_time")]
            idx = by_name.get(name)
            if idx is None:
                m = _TENSOR_REF.match(name)
                idx = producer.get(m.group(1) if m else _LAYOUT_SUFFIX.sub("", name))
            last = idx if idx is not None else last
            out[r, last] += e["dur"] * 1e-6
        return out


_TENSOR_REF = re.compile(r"^(.*?:\d+)")
#: ORT's layout transformer names a kernel after the tensor it converts: ``y_nchwc`` is ``y``'s.
_LAYOUT_SUFFIX = re.compile(r"_nchwc$")
