"""INT8 calibration: real inputs in, statically calibrated QDQ ONNX halves out.

ONNX Runtime's own `quantize_static` makes QDQ models (symmetric int8 activations, symmetric
per-channel int8 weights): the form TensorRT consumes for explicit quantization and that ONNX
Runtime and OpenVINO both run on a CPU. Head and tail are calibrated separately, each on what it
really sees: the head on model inputs, the tail on the float32 head's outputs for those same
inputs (through the DeviceTL where the half carries it). Calibration images come from the training
split, never the test split.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_COUNT = 64


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


def quantize(onnx_in: Path, onnx_out: Path, feeds: list[dict[str, np.ndarray]], method: str = "entropy") -> None:
    """Write the QDQ int8 version of ``onnx_in`` calibrated on ``feeds`` (one dict per sample)."""
    if method not in METHODS:
        raise TlcutError(f"--calib-method must be one of {', '.join(METHODS)}, got '{method}'")
    if not feeds:
        raise TlcutError("no calibration samples; give --calib a folder with images in it, or elpv")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    import onnx

    # Softmax stays float: its outputs live in [0, 1] and a symmetric int8 scale set by the largest
    # one flattens the small ones to zero (a near-uniform output loses every class).
    soft = [n.name for n in onnx.load(str(onnx_in), load_external_data=False).graph.node if n.op_type == "Softmax"]
    how = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
           "minmax": CalibrationMethod.MinMax}[method]
    try:
        # the calibrator prints its histogram settings and a pre-processing hint: not for our users
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
                quantize_static(str(onnx_in), str(onnx_out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=how, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                                                 "CalibTensorRangeSymmetric": True},
                            calibration_providers=["CPUExecutionProvider"], use_external_data_format=False,
                            nodes_to_exclude=soft)
    except Exception as e:
        raise TlcutError(f"INT8 quantization of {Path(onnx_in).name} failed: {str(e).splitlines()[0][:200]}") from None


@contextlib.contextmanager
def _quiet_logging():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
