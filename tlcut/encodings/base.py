"""What every wire encoding is (docs/protocol.md, the header's ``encoding`` byte), and the pixel
rules the two that send the model input as pixels share.

An encoding is a small stateless class: its name (what the CLI, the plan and a placement's label
say), its protocol code, what it may carry (the model input, a cut's tensor), whether it loses
anything, how the device encodes a tensor and how an edge restores it to the float32 tensor the half
takes. ``tlcut bench`` times exactly ``encode`` (plus framing) on the device and ``restore`` (plus
parsing) on the edge, once per quality for an encoding that takes one.

Nothing here imports the runtime: an encoding that cannot restore a payload raises WireError, and
runtime/protocol.py answers it as ERROR wrong tensor with the same message.
"""

from __future__ import annotations

import math

import numpy as np

#: What an encoding may carry: the model input (the edge runs everything), or a cut's tensor.
INPUT, CUT = "input", "cut"


#: the largest |(q - zero_point) x scale| an edge restores: float32's range (3.4e38), less a margin
#: for float32's rounding of the zero point and the product
RESTORE_LIMIT = 3e38


class WireError(ValueError):
    """A payload its encoding cannot restore; an edge answers ERROR wrong tensor with this message."""


class Encoding:
    """One wire encoding. Subclasses set the attributes and implement ``encode`` and ``restore``."""

    name: str
    code: int  # the header's encoding byte
    applies_to: frozenset = frozenset({INPUT, CUT})
    lossy: bool = False
    pixels: bool = False  # sends the input as pixels: encode needs the bundle's pixel mapping (scale, zero_point)
    default_quality: int | None = None  # None: takes no quality
    measured: bool = False  # its bytes depend on the content: bench measures them on real images, the plan reads those
    levels: tuple[int, int] = (0, 255)  # an affine encoding's q range, which check_scale bounds the restore by

    def encode(self, array: np.ndarray, *, scale: float | None = None, zero_point: int = 0,
               quality: int | None = None) -> tuple[np.ndarray, float, int]:
        """(wire array, scale, zero_point) for the header; ValueError for what the caller got wrong."""
        raise NotImplementedError

    def restore(self, wire: np.ndarray, scale: float, zero_point: int, served_shape=None) -> np.ndarray:
        """The tensor ``wire`` stands for, from the header's scale and zero point; ``served_shape`` is
        the input shape of the half that takes it. WireError where the payload does not fit."""
        raise NotImplementedError

    def wire_bytes(self, shape, dtype: str) -> int | None:
        """Payload bytes for a tensor of ``shape`` and ``dtype``; None where the content decides."""
        return None

    def label(self, quality: int | None) -> str:
        """How a placement's label names it ("" for none: the default)."""
        return self.name

    def check_quality(self, quality) -> None:
        """ValueError unless ``quality`` is one this encoding takes."""

    def misfit(self, wire: np.ndarray, why: str = "") -> WireError:
        return WireError(f"encoding {self.code} does not fit a {wire.dtype} payload{why}")

    def check_scale(self, wire: np.ndarray, scale: float, zero_point: int) -> None:
        """An affine scale must be finite and > 0, and with the zero point keep every q's value
        within RESTORE_LIMIT: inf or NaN would come out otherwise (the C edge checks alike)."""
        if not math.isfinite(scale):
            raise self.misfit(wire, f" with scale {scale} (not finite)")
        if not scale > 0:
            raise self.misfit(wire, " with scale <= 0")
        top = max(abs(self.levels[0] - zero_point), abs(self.levels[1] - zero_point)) * scale
        if top > RESTORE_LIMIT:
            raise self.misfit(wire, f" with scale {scale:g} and zero point {zero_point}: it restores to {top:g}, "
                                    f"past float32's range")


def elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def affine(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 x = (q - zero_point) * scale, in float32 throughout as the C edge computes it."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def image_layout(shape) -> str | None:
    """"NHWC" or "NCHW" for an input a JPEG can stand for (docs/protocol.md: rank 4, batch 1, NHWC
    if the last dim is 1 or 3, else NCHW if dim 1 is), None for any other shape."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or shape[0] != 1:
        return None
    if shape[3] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    return None


class Affine(Encoding):
    """q of ``wire_dtype``, dims the tensor's, with a finite scale > 0 and the zero point in the header:
    x = (q - zero_point) * scale."""

    wire_dtype: type

    def restore(self, wire, scale, zero_point, served_shape=None):
        if wire.dtype != self.wire_dtype:
            raise self.misfit(wire)
        self.check_scale(wire, scale, zero_point)
        return affine(wire, scale, zero_point)

    def wire_bytes(self, shape, dtype):
        return elements(shape) * np.dtype(self.wire_dtype).itemsize


class Pixels(Affine):
    """The model input as a camera has it: uint8 pixels carried with the input's own pixel mapping."""

    applies_to = frozenset({INPUT})
    pixels = True
    wire_dtype = np.uint8

    def to_pixels(self, array: np.ndarray, scale: float | None, zero_point: int) -> tuple[np.ndarray, float, int]:
        """(uint8 pixels, scale, zero_point): a uint8 input as is, a float one as
        q = clip(rint(x / scale) + zero_point)."""
        if scale is None or not float(scale) > 0:
            raise ValueError(f"encoding '{self.name}' needs the input's pixel mapping: pass scale > 0 "
                             f"(and zero_point), e.g. scale=1/255 for inputs in [0, 1]; got scale={scale}")
        scale, zero_point = float(np.float32(scale)), int(zero_point)
        a = np.asarray(array)
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a), scale, zero_point
        if a.dtype.kind != "f":
            raise ValueError(f"uint8 and jpeg encodings take a uint8 or float input, got {a.dtype}")
        x = a.astype(np.float32, copy=False)
        return np.clip(np.rint(x / np.float32(scale)) + zero_point, 0, 255).astype(np.uint8), scale, zero_point
