"""OpenVINO on the CPU: reads the portable ONNX halves directly (any opset), float32 or QDQ int8.

OpenVINO compiles an ONNX file at load time, so ``compile`` builds nothing of its own. QDQ int8
halves run as real int8 kernels here (OpenVINO folds the Quantize/Dequantize pairs into low-precision
convolutions), which is where it beats ONNX Runtime on a CPU without VNNI. The performance hint
(latency: one request at a time with every thread on it; throughput: several streams) and the
thread count are the two settings that matter on a 2-core box; both are flags.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError
from tlcut.runtime.backends import OPENVINO
from tlcut.runtime.backends.base import Backend, Runner

HINTS = ("latency", "throughput")


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise TlcutError("the openvino backend needs OpenVINO; install it with `pip install 'tlcut[openvino]'`") from None
    return ov


class OpenvinoRunner(Runner):
    def __init__(self, path, threads: int | None = None, hint: str = "latency"):
        super().__init__(f"{OPENVINO}:{Path(path).name}" if not isinstance(path, bytes) else f"{OPENVINO}:<memory>")
        if hint not in HINTS:
            raise TlcutError(f"--hint must be one of {', '.join(HINTS)}, got '{hint}'")
        self.path, self.threads, self.hint = path, threads, hint
        self.request = None

    def _activate_impl(self):
        ov = _ov()
        core = ov.Core()
        # The CPU plugin's default inference precision here is bf16 (it reports so even without
        # AVX-512): a float32 half must give float32 answers, so ask for f32. QDQ int8 halves still
        # run their quantized layers in int8.
        cfg = {"PERFORMANCE_HINT": self.hint.upper(), "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        tmp = None
        try:
            src = self.path
            if isinstance(src, bytes):  # OpenVINO reads ONNX from a file; bench hands runners in-memory graphs
                fd, tmp = tempfile.mkstemp(suffix=".onnx")
                with os.fdopen(fd, "wb") as f:
                    f.write(src)
                src = tmp
            compiled = core.compile_model(core.read_model(str(src)), "CPU", cfg)
        except Exception as e:
            raise TlcutError(f"OpenVINO cannot load {self.name}: {str(e).strip().splitlines()[0][:200]}") from None
        finally:
            if tmp:
                os.unlink(tmp)
        self._meta = {p.get_any_name(): (np.dtype(p.get_element_type().to_dtype()), tuple(p.get_shape()))
                      for p in compiled.inputs}
        self._outs = [p.get_any_name() for p in compiled.outputs]
        self._ports = list(compiled.outputs)
        self.request = compiled.create_infer_request()

    def _deactivate_impl(self):
        self.request = None

    def _input_metadata_impl(self):
        return self._meta

    def _output_names_impl(self):
        return self._outs

    def _infer_impl(self, feed):
        # started and waited for, not infer(): a synchronous run ignores cancel()
        self.request.start_async(feed)
        if self._stop.is_set():  # a cancel that came before the start
            self.request.cancel()
        self.request.wait()
        return {name: np.array(self.request.get_tensor(port).data, copy=True) for name, port in zip(self._outs, self._ports)}

    def _cancel_impl(self):
        if self.request is not None:
            self.request.cancel()


class OpenvinoBackend(Backend):
    name = OPENVINO
    builds = False

    def __init__(self, hint: str | None = None, **options):
        super().__init__(**options)
        self.hint = hint or "latency"

    @classmethod
    def add_args(cls, g):
        return [g.add_argument("--hint", default="latency", choices=HINTS,
                               help="OpenVINO's performance hint: one request at a time, or several streams "
                                    "(default latency)")]

    @classmethod
    def options_from_args(cls, a, chosen):
        return {"hint": a.hint}  # ignored by the other backends, as it always was

    def runner(self, artifact, *, threads=None, profile=False):
        return OpenvinoRunner(artifact, threads=threads, hint=self.hint)
