"""What every transfer-layer kind is: its spelling, its wire shape and bytes, whether it has
weights, and how it is built as Keras layers (to train) and as ONNX nodes (to deploy).

A kind is a small class (one file per family here). Nothing in this package imports TensorFlow or
onnx-graphsurgeon: the builders receive the ``keras`` module or the graph they add to, so the
registry is importable from core and placement code, and the heavy libraries load only where a
step trains or cuts.

Every kind works on an NCHW view of the cut tensor in ONNX (Conv, MaxPool and Resize are NCHW);
``append_device``/``prepend_edge`` transpose an NHWC cut around it, and crop an odd size back
after a 2x upsampling, so the tail sees exactly the cut tensor's shape. Its Keras twin builds the
same function in NHWC: MaxPool2D(2, padding="same") and Conv2D(..., padding="same") pad an odd last
row/column at the end, as the ONNX pads do; Cropping2D takes the upsampled extra row back off.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from tlcut import dtypes
from tlcut.errors import TlcutError

#: The name of the tensor that crosses the link when a half carries the TL (both halves agree on it).
PAYLOAD = "tlcut_payload_tl"


def spatial_axes(layout: str | None) -> tuple[int, int]:
    return (2, 3) if layout == "NCHW" else (1, 2)


def channel_axis(layout: str | None) -> int:
    return 1 if layout == "NCHW" else 3


class TransferLayer:
    """One kind. ``name`` is its spelling (what the CLI, the manifest and a label say)."""

    family: str  # the word before any ':' ("pool", "bottleneck", "pool+bottleneck")
    syntax: str  # how to spell it, for help and errors
    has_weights: bool = False
    halves: bool = False  # halves the height and width on the wire (odd sizes round up)

    @property
    def name(self) -> str:
        return self.family

    def __eq__(self, other):
        return isinstance(other, TransferLayer) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"<transfer layer {self.name}>"

    @classmethod
    def parse(cls, arg: str | None) -> "TransferLayer":
        """The kind this family spells with ``arg`` (the text after ':', None without one)."""
        raise NotImplementedError

    # -- what crosses ------------------------------------------------------------------------
    def out_channels(self, channels: int) -> int:
        return channels

    def wire_shape(self, shape, layout: str | None) -> tuple[int, ...]:
        """The payload's shape for a cut tensor of ``shape`` (rank 4, ``layout``)."""
        out = list(shape)
        if self.halves:
            for ax in spatial_axes(layout):
                out[ax] = math.ceil(out[ax] / 2)
        ca = channel_axis(layout)
        out[ca] = self.out_channels(out[ca])
        return tuple(out)

    def wire_bytes(self, shape, dtype: str, layout: str | None) -> int:
        return dtypes.nbytes(self.wire_shape(shape, layout), dtype)

    def factor(self, shape, layout: str | None) -> float:
        """Payload bytes over the cut tensor's bytes (pool: about 1/4)."""
        return self.wire_bytes(shape, "float32", layout) / dtypes.nbytes(shape, "float32")

    def check_fits(self, shape, layout: str | None) -> None:
        """TlcutError where this kind sends no fewer bytes than the cut tensor itself."""
        if self.factor(shape, layout) >= 1:
            c = shape[channel_axis(layout)]
            raise TlcutError(f"--tl {self.name} sends no fewer bytes than the {c}-channel cut tensor {list(shape)} "
                             f"itself; choose fewer channels")

    # -- weights -----------------------------------------------------------------------------
    def init_weights(self, features: np.ndarray) -> dict[str, np.ndarray] | None:
        """Starting weights from real NHWC feature maps at the cut (None: no weights)."""
        return None

    def check_weights(self, weights: dict | None, shape, layout) -> dict | None:
        if not self.has_weights:
            return None
        if not weights:
            raise TlcutError(f"the {self.name} transfer layer has no trained weights here; train it with "
                             f"`tlcut retrain MODEL --cut LAYER --tl {self.name} -o BUNDLE`")
        return {k: np.asarray(v, np.float32) for k, v in weights.items()}

    # -- Keras (training): NHWC --------------------------------------------------------------
    def keras_device(self, keras, channels: int) -> list:
        """The DeviceTL as Keras layers, applied in order; weighted ones are named ``device_tl*``."""
        raise NotImplementedError

    def keras_edge(self, keras, channels: int) -> list:
        """The EdgeTL as Keras layers up to (not including) the crop of an odd size."""
        raise NotImplementedError

    def keras_weights(self, model) -> dict[str, np.ndarray] | None:
        """The TL's weights from a TLModel built with these layers (what the bundle stores)."""
        if not self.has_weights:
            return None
        out = {}
        for side in ("device", "edge"):
            kernel, bias = model.get_layer(f"{side}_tl").get_weights()
            out[f"{side}_kernel"], out[f"{side}_bias"] = kernel, bias
        return out

    def set_keras_weights(self, model, weights: dict | None) -> None:
        if self.has_weights and weights:
            for side in ("device", "edge"):
                model.get_layer(f"{side}_tl").set_weights([weights[f"{side}_kernel"], weights[f"{side}_bias"]])

    # -- ONNX (deploying): NCHW nodes --------------------------------------------------------
    def onnx_device(self, g, x, shape_nchw, weights):
        """Nodes NCHW cut tensor ``x`` -> NCHW payload; returns the payload tensor."""
        raise NotImplementedError

    def onnx_edge(self, g, p, shape_nchw, weights):
        """Nodes NCHW payload ``p`` -> NCHW tensor of the cut's channels (2x the payload's size
        where the kind halves it: the caller crops an odd size); returns that tensor."""
        raise NotImplementedError


# -- shared ONNX pieces ------------------------------------------------------------------------
def conv(g, x, kernel_hwio: np.ndarray, bias: np.ndarray, name: str, stride: int = 1, pads=(0, 0, 0, 0)):
    """An ONNX Conv from a Keras Conv2D kernel (kh, kw, in, out) and bias; ``pads`` (top, left,
    bottom, right) as ONNX orders them."""
    w = np.ascontiguousarray(kernel_hwio.transpose(3, 2, 0, 1), np.float32)
    kh, kw = w.shape[2:]
    return g.layer(op="Conv", name=name, inputs=[x, w, np.asarray(bias, np.float32)], outputs=[name + "_out"],
                   attrs={"kernel_shape": [int(kh), int(kw)], "strides": [stride, stride], "pads": list(pads)})[0]


def maxpool(g, x, shape_nchw, name: str):
    """The paper's 2x2 max-pool, stride 2, an odd last row/column padded (padding never wins a max)."""
    pads = [0, 0, shape_nchw[2] % 2, shape_nchw[3] % 2]
    return g.layer(op="MaxPool", name=name, inputs=[x], outputs=[name + "_out"],
                   attrs={"kernel_shape": [2, 2], "strides": [2, 2], "pads": pads})[0]


def upsample(g, x, name: str, opset: int):
    """2x nearest-neighbour upsampling of an NCHW tensor."""
    import onnx_graphsurgeon as gs

    roi = gs.Variable.empty() if opset >= 13 else np.zeros(0, np.float32)  # optional from opset 13
    return g.layer(op="Resize", name=name, inputs=[x, roi, np.array([1, 1, 2, 2], np.float32)],
                   outputs=[name + "_out"],
                   attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})[0]


def pca(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, top-``k`` principal directions as columns): the least-squares rank-k linear code."""
    rows = np.asarray(rows, np.float64)
    mean = rows.mean(axis=0)
    cov = np.cov(rows - mean, rowvar=False)
    vals, vecs = np.linalg.eigh(np.atleast_2d(cov))
    return mean, vecs[:, np.argsort(vals)[::-1][:k]]


def save_weights(path, weights: dict) -> None:
    """A learned kind's weights as float32 arrays in an .npz, written aside and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    os.replace(tmp, path)


def load_weights(path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise TlcutError(f"{path} (the weights of {what}) cannot be read ({type(e).__name__}); retrain the bundle") from None
