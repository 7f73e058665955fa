"""The model input as pixels: uint8 affine (encoding 3) and JPEG (encoding 4), docs/protocol.md.
A camera's image must cross as cheaply as the spec allows and come back as the tensor the float
path would have sent; a hostile JPEG must cost the edge nothing."""

import numpy as np
import pytest

from tlcut.encodings import WireError, image_layout
from tlcut.encodings import jpeg as codec
from tlcut.runtime import protocol as P

pytest.importorskip("simplejpeg")

SCALE = float(np.float32(1 / 255))


def _image(h=16, w=12, c=3, seed=0):
    """A smooth image (JPEG keeps it within a few levels), uint8 HWC."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 255 // max(h - 1, 1) + xx * 4).astype(np.int64)
    img = np.stack([(base + 40 * k) % 256 for k in range(c)], -1)
    return np.clip(img + np.random.default_rng(seed).integers(-3, 4, img.shape), 0, 255).astype(np.uint8)


def _wire(array, encoding, **kw):
    wire, code, scale, zp = P.encode(array, encoding, **kw)
    frames = P.tensor_frames(P.REQUEST, wire, 1, P.INPUT_CUT, encoding=code, scale=scale, zero_point=zp)
    return P.decode([bytes(f) for f in frames])


def _sof(buf: bytes, h: int, w: int) -> bytes:
    """``buf`` with its frame header declaring h x w (a hostile header)."""
    b = bytearray(buf)
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(b)


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_round_trip_is_close_and_header_is_cheap(c):
    img = _image(c=c)
    data = codec.encode_jpeg(img, 95)
    assert codec.jpeg_header(data) == (16, 12, c)
    back = codec.decode_jpeg(data, expect=(16, 12, c))
    assert back.shape == img.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img).mean() < 3


def test_jpeg_quality_is_checked():
    with pytest.raises(ValueError, match="quality"):
        codec.encode_jpeg(_image(), 0)


def test_hostile_header_is_refused_without_decoding(monkeypatch):
    import simplejpeg

    data = _sof(codec.encode_jpeg(_image(), 90), 65500, 65500)  # libjpeg's largest: 65500 a side
    assert codec.jpeg_header(data) == (65500, 65500, 3)  # read from the header alone

    def never(*a, **k):
        raise AssertionError("decoded a JPEG whose header does not fit")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", never)
    with pytest.raises(WireError) as e:
        codec.decode_jpeg(data, expect=(16, 12, 3))
    assert "65500x65500" in str(e.value) and "16x12" in str(e.value)
    with pytest.raises(P.ProtocolError) as e:  # as an edge answers it: wrong tensor, the same message
        P.restore(P.Header(type=P.REQUEST, encoding=P.ENC_JPEG, scale=SCALE), np.frombuffer(data, np.uint8), (1, 16, 12, 3))
    assert e.value.code == P.E_WRONG_TENSOR and "65500x65500" in str(e.value) and "16x12" in str(e.value)
    with pytest.raises(WireError, match="not a JPEG header"):  # over libjpeg's limit: the header itself is refused
        codec.decode_jpeg(_sof(data, 65535, 65535), expect=(16, 12, 3))


@pytest.mark.parametrize("bad", [b"", b"\xff\xd8 not a jpeg" * 4, "truncated"])
def test_broken_jpegs_are_wrong_tensor(bad):
    data = codec.encode_jpeg(_image(), 90)
    buf = data[:-60] if bad == "truncated" else bad
    with pytest.raises(WireError) as e:
        codec.decode_jpeg(buf, expect=(16, 12, 3))
    assert str(e.value) and "\n" not in str(e.value)


def test_too_many_scans_are_refused():
    data = codec.encode_jpeg(_image(), 90)
    i = data.index(b"\xff\xda")
    many = data[:i] + b"\xff\xfe\x00\x04\xff\xda" * (codec.MAX_SCANS + 1) + data[i:]  # SOS inside comments: an upper bound
    with pytest.raises(WireError, match="scans"):
        codec.decode_jpeg(many, expect=(16, 12, 3))


@pytest.mark.parametrize("shape, layout", [
    ((1, 7, 7, 3), "NHWC"), ((1, 7, 7, 1), "NHWC"), ((1, 3, 7, 7), "NCHW"), ((1, 1, 5, 6), "NCHW"),
    ((1, 3, 7, 3), "NHWC"),  # last dim first
    ((1, 4, 7, 7), None), ((2, 3, 7, 7), None), ((3, 7, 7), None), ((1, 3, 7, 7, 1), None),
])
def test_image_layout_rule(shape, layout):
    assert image_layout(shape) == layout


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_jpeg_request_restores_in_the_served_layout(layout):
    img = _image(c=3)
    x = img[None] if layout == "NHWC" else img.transpose(2, 0, 1)[None]
    x = x.astype(np.float32) * np.float32(SCALE)
    h, wire = _wire(x, "jpeg", scale=SCALE, quality=95)
    assert h.encoding == P.ENC_JPEG and wire.dtype == np.uint8 and wire.shape == (h.payload_len,)
    back = P.restore(h, wire, x.shape)
    assert back.shape == x.shape and back.dtype == np.float32
    assert np.abs(back - x).mean() < 3 * SCALE


def test_jpeg_is_refused_where_the_input_is_not_an_image_or_not_its_size():
    h, wire = _wire(_image()[None], "jpeg", scale=SCALE)
    for served in [(1, 4, 16, 12), (1, 3, 12, 16), (1, 16, 12, 1), None]:  # not an image; 12x16; grayscale; none
        with pytest.raises(P.ProtocolError) as e:
            P.restore(h, wire, served)
        assert e.value.code == P.E_WRONG_TENSOR
    assert P.restore(h, wire, (1, 16, 12, 3)).shape == (1, 16, 12, 3)
    assert P.restore(h, wire, (1, 3, 16, 12)).shape == (1, 3, 16, 12)


def test_uint8_request_equals_the_float32_request_it_came_from():
    """An input that came from uint8 / 255 crosses as its pixels and is restored bit for bit."""
    img = np.random.default_rng(3).integers(0, 256, (1, 3, 7, 7), dtype=np.uint8)
    x = img.astype(np.float32) * np.float32(SCALE)
    for sent in (img, x):  # the camera's pixels as they are, or the float input mapped back
        h, wire = _wire(sent, "uint8", scale=SCALE)
        assert h.encoding == P.ENC_UINT8 and wire.dtype == np.uint8 and wire.nbytes * 4 == x.nbytes
        np.testing.assert_array_equal(wire, img)
        np.testing.assert_array_equal(P.restore(h, wire), x)


def test_uint8_zero_point_and_clipping():
    x = np.array([-1.0, 0.0, 0.5, 10.0], np.float32)
    q, code, scale, zp = P.encode(x, "uint8", scale=0.01, zero_point=100)
    assert code == P.ENC_UINT8 and list(q) == [0, 100, 150, 255]
    back = P.restore(P.Header(type=P.REQUEST, encoding=code, scale=scale, zero_point=zp), q)
    np.testing.assert_allclose(back[1:3], x[1:3], atol=1e-6)


@pytest.mark.parametrize("encoding", ["uint8", "jpeg"])
def test_pixel_encodings_need_a_scale(encoding):
    with pytest.raises(ValueError, match="scale"):
        P.encode(np.zeros((1, 3, 7, 7), np.float32), encoding)
    with pytest.raises(ValueError, match="scale"):
        P.encode(np.zeros((1, 3, 7, 7), np.float32), encoding, scale=0.0)


def test_jpeg_encode_needs_an_image_tensor():
    with pytest.raises(ValueError, match="image"):
        P.encode(np.zeros((1, 4, 7, 7), np.float32), "jpeg", scale=SCALE)


@pytest.mark.parametrize("encoding, wire, scale, why", [
    (P.ENC_UINT8, np.zeros(4, np.uint8), 0.0, "scale <= 0"),
    (P.ENC_UINT8, np.zeros(4, np.float32), 1.0, "float32"),
    (P.ENC_UINT8, np.zeros(4, np.int8), 1.0, "int8"),
    (P.ENC_JPEG, np.zeros(4, np.uint8), 0.0, "scale <= 0"),
    (P.ENC_JPEG, np.zeros((1, 4), np.uint8), 1.0, "dims [1, 4]"),
    (P.ENC_JPEG, np.zeros(4, np.float32), 1.0, "float32"),
])
def test_mismatched_pixel_encodings_are_refused(encoding, wire, scale, why):
    with pytest.raises(P.ProtocolError, match=__import__("re").escape(why)) as e:
        P.restore(P.Header(type=P.REQUEST, encoding=encoding, scale=scale), wire, (1, 3, 2, 2))
    assert e.value.code == P.E_WRONG_TENSOR


def test_encoding_names_follow_the_protocol_order():
    assert [P.ENCODINGS[n] for n in ("raw", "float16", "int8", "uint8", "jpeg")] == [0, 1, 2, 3, 4]


def test_edge_client_sends_pixels_to_the_python_edge():
    """EdgeClient passes scale/zero_point/quality to encode; the edge answers as on the float path."""
    from pathlib import Path

    from tlcut.bundle import Bundle
    from tlcut.runtime.client import EdgeClient
    from tlcut.runtime.serve import local_edge

    b = Bundle.open(Path(__file__).resolve().parents[1] / "runtime" / "c" / "tests" / "data" / "bundle")
    img = _image(7, 7, 3)
    x = np.ascontiguousarray(img.transpose(2, 0, 1)[None]).astype(np.float32) * np.float32(SCALE)
    with local_edge(b, ["input"]) as ep, EdgeClient(ep) as c:
        want, _ = c.request(x, P.INPUT_CUT)
        got, _ = c.request(x, P.INPUT_CUT, encoding="uint8", scale=SCALE)
        np.testing.assert_array_equal(got, want)  # pixels of a uint8 image: lossless
        rid = c.send(x, P.INPUT_CUT, encoding="jpeg", scale=SCALE, quality=95)
        jpeg, h = c.receive(rid)
        assert h.type == P.RESULT and jpeg.shape == want.shape  # (a 7x7 JPEG is larger than its floats)
