"""ONNX Runtime on the CPU: the embedded default backend.

``compile`` saves the graph after ORT's portable optimizations (constant folding, fusions that do
not depend on the CPU), so loading a half at serve time is quick and a half that ORT cannot load
fails at compile time rather than in production. The CPU-specific layout rewrites (NCHWc) are
applied when the runner loads it, on the machine that runs it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from tlcut import dtypes
from tlcut.errors import TlcutError
from tlcut.runtime.backends.base import Backend, Runner


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


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
    def __init__(self, path, threads: int | None = None, profile: bool = False):
        super().__init__(f"onnxrt:{Path(path).name}" if not isinstance(path, bytes) else "onnxrt:<memory>")
        self.path = path
        self.threads = threads
        self.profile = profile
        self.session = None

    def _activate_impl(self):
        ort = _ort()
        src = self.path if isinstance(self.path, bytes) else str(self.path)
        try:
            self.session = ort.InferenceSession(src, session_options(self.threads, self.profile),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise TlcutError(f"ONNX Runtime cannot load {self.name}: {str(e).splitlines()[0][:200]}") from None
        self._meta = {i.name: (dtypes.from_ort(i.type), tuple(i.shape)) for i in self.session.get_inputs()}
        self._outs = [o.name for o in self.session.get_outputs()]

    def _deactivate_impl(self):
        self.session = None

    def _input_metadata_impl(self):
        return self._meta

    def _output_names_impl(self):
        return self._outs

    def _infer_impl(self, feed):
        return dict(zip(self._outs, self.session.run(self._outs, feed)))

    def end_profiling(self) -> str:
        """Stop ORT's profiler and return the path of its JSON trace."""
        return self.session.end_profiling()


class OnnxrtBackend(Backend):
    name = "onnxrt"
    has_node_profiler = True
    builds = True

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
        return OnnxrtRunner(artifact, threads=threads, profile=profile)

    def node_times(self, runner, onnx_path, *, skip: int) -> np.ndarray:
        """Seconds spent in each node of ``onnx_path`` in each run of ``runner`` (made with
        ``profile=True``) after the first ``skip`` runs; one row per run. Ends the profiling.

        ORT rewrites the graph before running it (fusions, NCHWc reorders), so kernel names are
        mapped back: a kernel named after a node is that node's; one named after a tensor
        (``T:0_nchwc``) belongs to the tensor's producer; anything else to the kernel before it.
        """
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
                idx = producer.get(m.group(1)) if m else None
            last = idx if idx is not None else last
            out[r, last] += e["dur"] * 1e-6
        return out


_TENSOR_REF = re.compile(r"^(.*?:\d+)")
