"""JPEG for the wire's encoding 4 (docs/protocol.md): the device encodes the camera's image, the
edge reads the header first and decodes only an image of the size it serves.

simplejpeg wraps libjpeg-turbo, as the C edge's TurboJPEG does, so both edges decode a JPEG to the
same pixels (default settings: accurate DCT, fancy upsampling); it was also the fastest decoder
measured here (benchmarks/codecs.py). Imported lazily: only the jpeg encoding needs it.
"""

from __future__ import annotations

import numpy as np

from tlcut.runtime.protocol import E_WRONG_TENSOR, ProtocolError

#: scans a JPEG may have: libjpeg-turbo's limit under TJFLAG_LIMITSCANS, which the C edge sets
MAX_SCANS = 500
#: simplejpeg's colorspace of a JPEG header -> components it decodes to
_COMPONENTS = {"Gray": 1, "YCbCr": 3, "RGB": 3, "CMYK": 4, "YCCK": 4}


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        raise ProtocolError(E_WRONG_TENSOR, "JPEG needs the simplejpeg package: pip install simplejpeg") from None
    return simplejpeg


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """A JPEG of an (H, W, C) uint8 image, C 1 (grayscale) or 3 (RGB), at ``quality`` 1..100 (4:4:4)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"a JPEG is made from an (H, W, 1 or 3) uint8 image, got {img.dtype}{list(img.shape)}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    return _simplejpeg().encode_jpeg(np.ascontiguousarray(img), int(quality),
                                     colorspace="GRAY" if img.shape[2] == 1 else "RGB")


def jpeg_header(buf) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's header alone: nothing is decoded or allocated,
    so a hostile header declaring 65535x65535 costs nothing."""
    try:
        h, w, colorspace, _ = _simplejpeg().decode_jpeg_header(_bytes(buf))
    except ValueError as e:
        raise ProtocolError(E_WRONG_TENSOR, f"not a JPEG header this edge can read: {_line(e)}") from None
    if h < 1 or w < 1:
        raise ProtocolError(E_WRONG_TENSOR, "not a JPEG header this edge can read: it declares no image (no frame header)")
    return int(h), int(w), _COMPONENTS.get(colorspace, 0)


def decode_jpeg(buf, expect: tuple[int, int, int] | None = None) -> np.ndarray:
    """The (H, W, C) uint8 image of a JPEG. With ``expect`` (h, w, c) the header is checked first and
    a JPEG of another size or component count is refused before anything is decoded."""
    data = _bytes(buf)
    h, w, c = jpeg_header(data)
    if expect is not None and (h, w, c) != tuple(int(v) for v in expect):
        eh, ew, ec = expect
        raise ProtocolError(E_WRONG_TENSOR, f"the JPEG decodes to {h}x{w} with {c} component(s); the input served "
                                            f"takes {eh}x{ew} with {ec}: resize the image before encoding it")
    if c not in (1, 3):
        raise ProtocolError(E_WRONG_TENSOR, f"the JPEG has {c} components; send grayscale or RGB")
    b = np.frombuffer(data, np.uint8)
    scans = int(np.count_nonzero((b[:-1] == 0xFF) & (b[1:] == 0xDA)))  # SOS markers (0xFF is stuffed in scan data)
    if scans > MAX_SCANS:  # thousands of tiny progressive scans would take minutes (as TurboJPEG's TJFLAG_LIMITSCANS)
        raise ProtocolError(E_WRONG_TENSOR, f"the JPEG has {scans} scans, more than {MAX_SCANS}; re-encode it")
    out = np.empty((h, w, c), np.uint8)
    try:
        _simplejpeg().decode_jpeg(data, colorspace="GRAY" if c == 1 else "RGB", buffer=out)
    except ValueError as e:
        raise ProtocolError(E_WRONG_TENSOR, f"the JPEG does not decode: {_line(e)}") from None
    return out


def _bytes(buf):
    """simplejpeg takes a bytes-like object; a numpy payload view is passed without a copy."""
    if isinstance(buf, np.ndarray):
        return memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8))
    return buf


def _line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]
