"""Encoding 4, jpeg: the model input as a JPEG of the camera's pixels. The device encodes the
image; the edge reads the JPEG's header first and decodes only an image of the size it serves.

simplejpeg wraps libjpeg-turbo, as the C edge's TurboJPEG does, so both edges decode a JPEG to the
same pixels (default settings: accurate DCT, fancy upsampling); it was also the fastest decoder
measured here (benchmarks/codecs.py). Imported lazily: only this encoding needs it.
"""

from __future__ import annotations

import numpy as np

from tlcut.encodings.base import Pixels, WireError, affine, image_layout

#: scans a JPEG may have: libjpeg-turbo's limit under TJFLAG_LIMITSCANS, which the C edge sets
MAX_SCANS = 500
#: simplejpeg's colorspace of a JPEG header -> components it decodes to
_COMPONENTS = {"Gray": 1, "YCbCr": 3, "RGB": 3, "CMYK": 4, "YCCK": 4}


class Jpeg(Pixels):
    name, code = "jpeg", 4
    lossy = True
    default_quality = 90

    def encode(self, array, *, scale=None, zero_point=0, quality=None):
        """A rank-4 batch-1 image tensor (NHWC or NCHW) as a JPEG at ``quality``, sent as dims [payload_len]."""
        q, scale, zero_point = self.to_pixels(array, scale, zero_point)
        layout = image_layout(q.shape)
        if layout is None:
            raise ValueError(f"encoding 'jpeg' takes a rank-4 batch-1 image tensor with 1 or 3 channels "
                             f"(NHWC or NCHW), got shape {list(q.shape)}; send it raw or uint8")
        img = q[0] if layout == "NHWC" else q[0].transpose(1, 2, 0)
        data = encode_jpeg(img, self.default_quality if quality is None else quality)
        return np.frombuffer(data, np.uint8), scale, zero_point

    def restore(self, wire, scale, zero_point, served_shape=None):
        """Checked against ``served_shape`` from the JPEG's header, before anything is decoded, and
        laid out as it says."""
        if wire.dtype != np.uint8:
            raise self.misfit(wire)
        if wire.ndim != 1:
            raise self.misfit(wire, f" with dims {list(wire.shape)}; a JPEG is sent as dims [payload_len]")
        self.check_scale(wire, scale, zero_point)
        layout = image_layout(served_shape) if served_shape is not None else None
        if layout is None:
            raise WireError(f"jpeg does not fit this input {list(served_shape or [])}: it takes a "
                            "rank-4 batch-1 image with 1 or 3 channels (NHWC or NCHW); send it raw")
        s = tuple(int(d) for d in served_shape)
        hwc = (s[1], s[2], s[3]) if layout == "NHWC" else (s[2], s[3], s[1])
        x = affine(decode_jpeg(wire, expect=hwc), scale, zero_point)
        x = x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x)

    def wire_bytes(self, shape, dtype):
        return None  # the picture decides

    def label(self, quality):
        return f"JPEG q{quality}"

    def check_quality(self, quality):
        _check_quality(quality)


def _check_quality(quality) -> None:
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        raise WireError("JPEG needs the simplejpeg package: pip install simplejpeg") from None
    return simplejpeg


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """A JPEG of an (H, W, C) uint8 image, C 1 (grayscale) or 3 (RGB), at ``quality`` 1..100 (4:4:4)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"a JPEG is made from an (H, W, 1 or 3) uint8 image, got {img.dtype}{list(img.shape)}")
    _check_quality(quality)
    return _simplejpeg().encode_jpeg(np.ascontiguousarray(img), int(quality),
                                     colorspace="GRAY" if img.shape[2] == 1 else "RGB")


def jpeg_header(buf) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's header alone: nothing is decoded or allocated,
    so a hostile header declaring 65535x65535 costs nothing."""
    try:
        h, w, colorspace, _ = _simplejpeg().decode_jpeg_header(_bytes(buf))
    except ValueError as e:
        raise WireError(f"not a JPEG header this edge can read: {_line(e)}") from None
    if h < 1 or w < 1:
        raise WireError("not a JPEG header this edge can read: it declares no image (no frame header)")
    return int(h), int(w), _COMPONENTS.get(colorspace, 0)


def decode_jpeg(buf, expect: tuple[int, int, int] | None = None) -> np.ndarray:
    """The (H, W, C) uint8 image of a JPEG. With ``expect`` (h, w, c) the header is checked first and
    a JPEG of another size or component count is refused before anything is decoded."""
    data = _bytes(buf)
    h, w, c = jpeg_header(data)
    if expect is not None and (h, w, c) != tuple(int(v) for v in expect):
        eh, ew, ec = expect
        raise WireError(f"the JPEG decodes to {h}x{w} with {c} component(s); the input served "
                        f"takes {eh}x{ew} with {ec}: resize the image before encoding it")
    if c not in (1, 3):
        raise WireError(f"the JPEG has {c} components; send grayscale or RGB")
    b = np.frombuffer(data, np.uint8)
    scans = int(np.count_nonzero((b[:-1] == 0xFF) & (b[1:] == 0xDA)))  # SOS markers (0xFF is stuffed in scan data)
    if scans > MAX_SCANS:  # thousands of tiny progressive scans would take minutes (as TurboJPEG's TJFLAG_LIMITSCANS)
        raise WireError(f"the JPEG has {scans} scans, more than {MAX_SCANS}; re-encode it")
    out = np.empty((h, w, c), np.uint8)
    try:
        _simplejpeg().decode_jpeg(data, colorspace="GRAY" if c == 1 else "RGB", buffer=out)
    except ValueError as e:
        raise WireError(f"the JPEG does not decode: {_line(e)}") from None
    return out


def _bytes(buf):
    """simplejpeg takes a bytes-like object; a numpy payload view is passed without a copy."""
    if isinstance(buf, np.ndarray):
        return memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8))
    return buf


def _line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]
