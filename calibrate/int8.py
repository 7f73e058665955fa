"""INT8 calibration: real inputs in, statically calibrated QDQ ONNX halves out.

ONNX Runtime's own `quantize_static` makes QDQ models (symmetric int8 activations, symmetric
per-channel int8 weights): the form TensorRT consumes for explicit quantization and that ONNX
Runtime and OpenVINO both run on a CPU. The weights use 7 of the 8 bits (``reduce_range``): a CPU
without VNNI adds pairs of 8-bit products in 16 bits, which saturate with full-range weights, so
one half answered differently on a machine with VNNI, where its fidelity may have been measured,
and on one without (tests/test_calibration.py); with 7-bit weights every CPU computes the QDQ graph
as written. Head and tail are calibrated separately, each on what it
really sees: the head on model inputs, the tail on the float32 head's outputs for those same
inputs (through the DeviceTL where the half carries it). Calibration images come from the training
split, never the test split.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_COUNT = 64
DEFAULT_BATCH = 8  # samples whose intermediate outputs are held at once
WEIGHT_BITS = 7  # reduce_range: see above


def calibration_inputs(bundle, data: str, count: int = DEFAULT_COUNT, seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """``count`` model inputs from ``data`` ('elpv' or an image folder), and where they came from."""
    inp = bundle.inputs[0]
    if count < 1:
        raise TlcutError(f"--calib-count must be at least 1, got {count}")
    shape, layout = inp["shape"], inp.get("layout") or "NHWC"
    if len(shape) != 4:
        raise TlcutError(f"INT8 calibration reads images; this model's input is {inp['dtype']}{shape}, not an image")
    if data == "elpv":
        from tlcut.models import datasets

        args = datasets.data_args(bundle.manifest["source"].get("training") or {})
        h, c = (shape[1], shape[3]) if layout == "NHWC" else (shape[2], shape[1])
        args.update(size=h, channels=c)
        ds = datasets.load("elpv", **args)
        x = ds.train.x  # never the test split
        pick = np.random.default_rng(seed).permutation(len(x))[:count]
        arrays = [(x[i][None].astype(np.float32) / 255.0).astype(inp["dtype"]) for i in pick]
        if layout == "NCHW":
            arrays = [a.transpose(0, 3, 1, 2).copy() for a in arrays]
        source = "elpv (train split)"
    else:
        if not Path(data).is_dir():
            raise TlcutError(f"calibration folder '{data}' does not exist; give --calib elpv or a folder of images")
        from tlcut.models.images import load_folder

        arrays = load_folder(data, shape, layout, inp["dtype"])[:count]
        source = str(Path(data).resolve())
    return arrays, {"source": source, "count": len(arrays), "seed": seed}


def quantize(onnx_in: Path, onnx_out: Path, feeds: list[dict[str, np.ndarray]], method: str = "entropy",
             batch: int = DEFAULT_BATCH) -> None:
    """Write the QDQ int8 version of ``onnx_in`` calibrated on ``feeds`` (one dict per sample).

    The activation ranges come from `tensor_ranges`, ``batch`` samples at a time, and reach
    ``quantize_static`` precomputed, so what is held at once is bounded by the batch, not the count."""
    if method not in METHODS:
        raise TlcutError(f"--calib-method must be one of {', '.join(METHODS)}, got '{method}'")
    check_batch(batch)
    if not feeds:
        raise TlcutError("no calibration samples; give --calib a folder with images in it, or elpv")
    import onnx

    # Softmax stays float: its outputs live in [0, 1] and a symmetric int8 scale set by the largest
    # one flattens the small ones to zero (a near-uniform output loses every class).
    soft = [n.name for n in onnx.load(str(onnx_in), load_external_data=False).graph.node if n.op_type == "Softmax"]
    try:
        # the calibrator prints its histogram settings and a pre-processing hint: not for our users
        with tempfile.TemporaryDirectory(prefix="tlcut-calib-") as tmp, \
                contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
            ranges = tensor_ranges(onnx_in, feeds, method, batch, Path(tmp))
            _write_qdq(onnx_in, onnx_out, ranges, soft, Path(tmp))
    except TlcutError:
        raise
    except Exception as e:
        raise TlcutError(f"INT8 quantization of {Path(onnx_in).name} failed: {str(e).splitlines()[0][:200]}") from None


def check_batch(batch) -> int:
    """``--calib-batch``: samples whose intermediate outputs are held at once."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise TlcutError(f"--calib-batch must be a whole number of samples, at least 1, got '{batch}'")
    return batch


def tensor_ranges(onnx_in: Path, feeds: list[dict], method: str, batch: int, workdir: Path):
    """The activation ranges ``quantize_static`` would compute from all of ``feeds`` at once, collected
    ``batch`` samples at a time.

    ONNX Runtime's histogram calibrators hold every intermediate output of every sample they are fed
    in one call. Fed in batches, they merge histograms by widening the first batch's bins, which moves
    entropy and percentile thresholds. So a first pass takes each tensor's extremes sample by sample,
    and the histograms start at the range the whole set spans: every batch then falls in the same
    bins as the all-at-once histogram, and the counts add up to it exactly."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates by default
    cal = create_calibrator(Path(onnx_in), ops, augmented_model_path=str(workdir / "augmented.onnx"),
                            calibrate_method=_method(method), providers=["CPUExecutionProvider"],
                            extra_options=CALIB_OPTIONS)
    if isinstance(cal, HistogramCalibrater):
        _start_histograms(cal, feeds)
    for i in range(0, len(feeds), batch):
        cal.collect_data(Samples(feeds[i:i + batch]))
    return cal.compute_data()


class Samples:
    """A calibration data reader over a list of feeds (ONNX Runtime's reader protocol: get_next)."""

    def __init__(self, feeds):
        self.feeds, self.read = feeds, 0

    def get_next(self):
        if self.read == len(self.feeds):
            return None
        self.read += 1
        return self.feeds[self.read - 1]


# quantize_static's extra_options, and the calibrator's names for those that reach it
QUANT_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True}
CALIB_OPTIONS = {"symmetric": True}


def _method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[method]


def _start_histograms(cal, feeds) -> None:
    """Give ``cal`` an empty histogram per tensor over the range all of ``feeds`` span (see tensor_ranges)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    names = [o.name for o in cal.infer_session.get_outputs()]
    wanted = [(i, n) for i, n in enumerate(names) if n in cal.tensors_to_calibrate]
    lo, hi, alo, ahi = {}, {}, {}, {}
    for feed in feeds:
        outs = cal.infer_session.run(None, feed)
        for i, n in wanted:
            a = outs[i]
            if a.size == 0:
                continue
            for d, v, pick in ((lo, np.nanmin(a), min), (hi, np.nanmax(a), max)):
                d[n] = pick(d[n], v) if n in d else v
            if cal.method == "percentile":
                b = np.absolute(a)
                for d, v, pick in ((alo, np.nanmin(b), min), (ahi, np.nanmax(b), max)):
                    d[n] = pick(d[n], v) if n in d else v
        del outs
    col = HistogramCollector(method=cal.method, symmetric=cal.symmetric, num_bins=cal.num_bins,
                             num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile,
                             scenario=cal.scenario)
    for _, n in wanted:
        if n not in lo:  # empty tensors: ONNX Runtime's own first-batch path handles them
            continue
        dt = lo[n].dtype
        none = np.empty(0, dtype=dt)
        top, bottom = np.array(np.inf, dtype=dt), np.array(-np.inf, dtype=dt)
        if cal.method == "percentile" and cal.symmetric:  # HistogramCollector.collect_absolute_value
            hist, edges = np.histogram(none, bins=cal.num_bins, range=(alo[n], ahi[n]))
            col.histogram_dict[n] = (hist, edges.astype(dt), top, bottom)
        else:  # HistogramCollector.collect_value
            t = np.array(max(abs(lo[n]), abs(hi[n])), dtype=dt)
            hist, edges = np.histogram(none, cal.num_bins, range=(-t, t))
            col.histogram_dict[n] = (hist, edges, top, bottom, t)
    cal.collector = col


def _write_qdq(onnx_in: Path, onnx_out: Path, ranges, soft: list[str], workdir: Path) -> None:
    """``quantize_static`` with the ranges already known: through its calibration cache where it has
    one, else through a calibrator that returns them."""
    import inspect

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    kw = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
              per_channel=True, reduce_range=WEIGHT_BITS == 7, calibrate_method=ranges.calibration_method,
              extra_options=dict(QUANT_OPTIONS),
              use_external_data_format=False, nodes_to_exclude=soft)
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        from onnxruntime.quantization.calibrate import save_tensors_data

        cache = workdir / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(str(onnx_in), str(onnx_out), None, calibration_cache_path=str(cache), **kw)
    else:
        _write_qdq_known(onnx_in, onnx_out, ranges, kw)


def _write_qdq_known(onnx_in: Path, onnx_out: Path, ranges, kw: dict) -> None:
    """ONNX Runtime before its calibration cache: its quantize_static asks create_calibrator for a
    calibrator, so it gets one that already holds the ranges."""
    import importlib

    q = importlib.import_module("onnxruntime.quantization.quantize")  # the module: the package's `quantize` is a function

    class Known:
        def collect_data(self, reader):
            pass

        def compute_data(self):
            return ranges

    made = q.create_calibrator
    q.create_calibrator = lambda *a, **k: Known()
    try:
        q.quantize_static(str(onnx_in), str(onnx_out), Samples([]), **kw)
    finally:
        q.create_calibrator = made


@contextlib.contextmanager
def _quiet_logging():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
