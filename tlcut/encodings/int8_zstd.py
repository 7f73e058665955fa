"""Encoding 5, int8+zstd: a cut's tensor quantized as encoding 2 (int8) and then compressed with
zstd, lossless over the int8 values; and ``ZstdFrame``, what it shares with int4+zstd
(int4_zstd.py). A ReLU map is mostly zeros, and zero is exact in int8 (one byte value), so zstd
takes most of it away; noise stays about int8's size. zstd was chosen for its speed on a device
CPU over a slower, tighter coder: level 1 took 0.02-0.4 ms a cut on ELPV maps of 2-64 KB of int8
here; level 3 gave 1% fewer bytes for 1.5x the time, level 9 3% fewer for 20x.

The size depends on the content, so ``wire_bytes`` says None and ``measured`` is set: bench
measures the bytes on real images (toolchain/wire_sizes.py) and the plan reads those, never a
ratio. The edge learns the tensor's size from the half it serves and refuses a frame that does not
declare exactly that content size before it decompresses anything, then decompresses into a
buffer of that size and no more (a frame that lies about its size fails there). zstandard is
imported lazily: only these encodings need it.
"""

from __future__ import annotations

import numpy as np

from tlcut.encodings.base import CUT, Encoding, WireError, affine, elements
from tlcut.encodings.int8 import Int8

#: zstd's level on the device: 1 is its fastest standard level; higher ones cost several times the
#: time for a few percent fewer bytes on feature maps (measured above)
LEVEL = 1


class ZstdFrame(Encoding):
    """A cut's tensor as integers in one zstd frame (uint8 dims [payload_len]), restored with the
    header's scale and zero point; subclasses say how values pack into the frame's content."""

    applies_to = frozenset({CUT})
    lossy = True  # the quantization's rounding; zstd itself loses nothing
    measured = True  # the bytes depend on the content: read the profile's measured sizes

    def content_bytes(self, n: int) -> int:
        """Bytes the frame's content must have for ``n`` values."""
        raise NotImplementedError

    def values(self, content: bytes, shape) -> np.ndarray:
        """The integer values of ``content`` (exactly ``content_bytes``), in ``shape``."""
        raise NotImplementedError

    def frame(self, content: bytes) -> np.ndarray:
        return np.frombuffer(_zstd().ZstdCompressor(level=LEVEL, write_content_size=True).compress(content), np.uint8)

    def restore(self, wire, scale, zero_point, served_shape=None):
        """Checked in this order: dtype uint8, rank 1, a finite scale > 0; the served shape is fixed; the
        frame declares exactly the content that shape takes; it decompresses to that and no more."""
        if wire.dtype != np.uint8:
            raise self.misfit(wire)
        if wire.ndim != 1:
            raise self.misfit(wire, f" with dims {list(wire.shape)}; a zstd frame is sent as dims [payload_len]")
        self.check_scale(wire, scale, zero_point)
        shape = _fixed(served_shape, self.name)
        content = decompress(wire, self.content_bytes(elements(shape)))
        return affine(self.values(content, shape), scale, zero_point)


class Int8Zstd(ZstdFrame):
    name, code = "int8+zstd", 5
    levels = (-128, 127)

    def encode(self, array, *, scale=None, zero_point=0, quality=None):
        """int8 as encoding 2 maps it, then one zstd frame that declares its content size, sent as
        uint8 dims [payload_len] (as a JPEG is)."""
        q, scale, zp = Int8().encode(np.asarray(array, np.float32))
        return self.frame(np.ascontiguousarray(q).tobytes()), scale, zp

    def content_bytes(self, n):
        return n

    def values(self, content, shape):
        return np.frombuffer(content, np.int8).reshape(shape)


def decompress(buf, size: int) -> bytes:
    """The content of one zstd frame that must decode to exactly ``size`` bytes: its header is read
    first, so a frame declaring another size (a bomb's gigabytes included) or none costs nothing;
    the output buffer is capped at ``size``, and trailing bytes are refused."""
    zstd = _zstd()
    data = memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8)) if isinstance(buf, np.ndarray) else buf
    try:
        declared = zstd.frame_content_size(data)
    except zstd.ZstdError as e:
        raise WireError(f"not a zstd frame this edge can read: {_line(e)}") from None
    if declared < 0:  # -1: the frame does not say
        raise WireError("the zstd frame does not declare its content size; the device must write it")
    if declared != size:
        raise WireError(f"the zstd frame declares {declared} bytes; the tensor served takes {size}")
    try:
        out = zstd.ZstdDecompressor().decompress(data, max_output_size=size, allow_extra_data=False)
    except zstd.ZstdError as e:
        raise WireError(f"the zstd frame does not decode: {_line(e)}") from None
    if len(out) != size:  # zstd checks the declared size itself; this is the belt to its braces
        raise WireError(f"the zstd frame decodes to {len(out)} bytes; the tensor served takes {size}")
    return out


def _fixed(served_shape, name: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in served_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise WireError(f"{name} needs the served input's fixed shape, got {list(served_shape or [])}; send int8")
    return shape


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise WireError("int8+zstd needs the zstandard package: pip install zstandard") from None
    return zstandard


def _line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]
