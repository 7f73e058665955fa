"""Cheaper wire formats: float16 and int8 with a scale and zero point, restored on the edge."""

import re

import numpy as np
import pytest

from tlcut.runtime import protocol as P


def test_int8_round_trip_error_is_within_half_a_step():
    x = np.random.default_rng(0).standard_normal((1, 8, 5, 5)).astype(np.float32) * 3
    q, enc, scale, zp = P.encode(x, "int8")
    assert q.dtype == np.int8 and enc == P.ENC_INT8 and q.nbytes * 4 == x.nbytes
    frames = P.tensor_frames(P.REQUEST, q, 1, 0, encoding=enc, scale=scale, zero_point=zp)
    h, wire = P.decode([bytes(f) for f in frames])
    back = P.restore(h, wire)
    assert back.dtype == np.float32
    assert np.abs(back - x).max() <= scale / 2 + 1e-6


def test_int8_keeps_zeros_exact():
    x = np.maximum(np.random.default_rng(1).standard_normal((1, 4, 6, 6)), 0).astype(np.float32)  # like a ReLU map
    q, _, scale, zp = P.encode(x, "int8")
    h = P.Header(type=P.REQUEST, encoding=P.ENC_INT8, scale=scale, zero_point=zp)
    assert np.all(P.restore(h, q)[x == 0] == 0)


def test_float16_halves_the_bytes():
    x = np.linspace(-2, 2, 64, dtype=np.float32).reshape(1, 4, 4, 4)
    w, enc, _, _ = P.encode(x, "float16")
    assert w.dtype == np.float16 and enc == P.ENC_FLOAT16 and w.nbytes * 2 == x.nbytes
    np.testing.assert_allclose(P.restore(P.Header(type=P.REQUEST, encoding=enc), w), x, atol=2e-3)


@pytest.mark.parametrize("encoding, wire, scale", [
    (P.ENC_FLOAT16, np.zeros(4, np.float32), 0.0),
    (P.ENC_INT8, np.zeros(4, np.uint8), 1.0),
    (P.ENC_INT8, np.zeros(4, np.int8), 0.0),
    (9, np.zeros(4, np.float32), 0.0),
])
def test_mismatched_encodings_are_refused(encoding, wire, scale):
    with pytest.raises(P.ProtocolError) as e:
        P.restore(P.Header(type=P.REQUEST, encoding=encoding, scale=scale), wire)
    assert e.value.code == P.E_WRONG_TENSOR


@pytest.mark.parametrize("encoding, wire, zero_point, says", [
    (P.ENC_INT8, np.zeros(4, np.int8), 2**31 - 1, "restores to 2.14748e+47, past float32's range"),
    (P.ENC_UINT8, np.zeros((1, 2, 2, 1), np.uint8), -(2**31), "restores to 2.14748e+47, past float32's range"),
])
def test_a_finite_scale_whose_zero_point_restores_past_float32_is_refused(encoding, wire, zero_point, says):
    """Finite, > 0, and still inf once restored: the edge refuses it before computing anything."""
    h = P.Header(type=P.REQUEST, encoding=encoding, scale=float(np.float32(1e38)), zero_point=zero_point)
    with pytest.raises(P.ProtocolError, match=re.escape(says)) as e:
        P.restore(h, wire, (1, 2, 2, 1))
    assert e.value.code == P.E_WRONG_TENSOR
    # the same scale near zero's levels, and a zero point in range at a scale that reaches 1.28e38: restored, finite
    ok = P.restore(P.Header(type=P.REQUEST, encoding=P.ENC_INT8, scale=float(np.float32(1e36)), zero_point=0),
                   np.array([-128, 127, 0, 1], np.int8))
    assert np.isfinite(ok).all() and ok.min() < -1.2e38 and ok.max() > 1.2e38


# -- the registry: every encoding is one class, and everything that names encodings reads it --------

from pathlib import Path  # noqa: E402

from tlcut import encodings  # noqa: E402

SCALE = float(np.float32(1 / 255))


def test_registry_is_in_protocol_order_with_unique_names_and_codes():
    assert encodings.NAMES == ("raw", "float16", "int8", "uint8", "jpeg", "int8+zstd", "int4+zstd")
    assert [e.code for e in encodings.ALL] == [0, 1, 2, 3, 4, 5, 6]
    assert P.ENCODINGS == {e.name: e.code for e in encodings.ALL}
    assert all(encodings.by_code(e.code) is e is encodings.get(e.name) for e in encodings.ALL)
    assert encodings.by_code(9) is None
    with pytest.raises(ValueError, match="unknown encoding 'png'; use one of raw, float16, int8, uint8, jpeg, int8\\+zstd, int4\\+zstd"):
        P.encode(np.zeros(4, np.float32), "png")


def _sample(enc):
    """A tensor the encoding carries: a 16x12 RGB image (NHWC) for pixel encodings, else a feature map."""
    if enc.pixels:  # smooth, as a camera's image is (a JPEG of noise is far off)
        yy, xx = np.mgrid[0:16, 0:12]
        img = np.stack([(yy * 15 + xx * 4 + 40 * k) % 256 for k in range(3)], -1)[None].astype(np.uint8)
        return img.astype(np.float32) * np.float32(SCALE)
    return np.random.default_rng(5).standard_normal((1, 8, 5, 5)).astype(np.float32)


@pytest.mark.parametrize("enc", encodings.ALL, ids=lambda e: e.name)
def test_each_encoding_round_trips_through_the_wire(enc):
    """Encode, frame, parse, restore: a lossless encoding gives the tensor back bit for bit, a lossy
    one close to it; the payload has the bytes wire_bytes promises (the payload contract's figures)."""
    if enc.name == "jpeg":
        pytest.importorskip("simplejpeg")
    x = _sample(enc)
    kw = {"scale": SCALE} if enc.pixels else {}
    wire, code, scale, zp = P.encode(x, enc.name, **kw)
    assert code == enc.code
    frames = P.tensor_frames(P.REQUEST, wire, 1, P.INPUT_CUT, encoding=code, scale=scale, zero_point=zp)
    h, got = P.decode([bytes(f) for f in frames])
    back = P.restore(h, got, x.shape)
    assert back.dtype == np.float32 and back.shape == x.shape
    if enc.lossy:
        levels = 16 if enc.name == "int4+zstd" else 256  # a 4-bit step is 16 times int8's
        assert 0 < np.abs(back - x).mean() < 5.0 / levels * np.abs(x).max()
    else:
        np.testing.assert_array_equal(back, x)
    want = enc.wire_bytes(x.shape, "float32")
    assert want is None or want == h.payload_len


@pytest.mark.parametrize("enc", encodings.ALL, ids=lambda e: e.name)
def test_an_unfitting_payload_is_wrong_tensor_for_every_encoding(enc):
    wrong = np.zeros(4, np.float64)  # no encoding restores a float64 payload but raw, which the edge then checks
    if enc.name == "raw":
        assert P.restore(P.Header(type=P.REQUEST, encoding=enc.code), wrong) is wrong
        return
    with pytest.raises(P.ProtocolError, match=f"encoding {enc.code} does not fit a float64 payload") as e:
        P.restore(P.Header(type=P.REQUEST, encoding=enc.code, scale=1.0), wrong, (1, 2, 2, 1))
    assert e.value.code == P.E_WRONG_TENSOR


def test_placements_take_the_registrys_encodings_where_they_apply():
    from tlcut.errors import TlcutError
    from tlcut.placement import CUT_ENCODINGS, EDGE, INPUT_ENCODINGS, SPLIT, Placement

    assert CUT_ENCODINGS == tuple(e.name for e in encodings.ALL if encodings.CUT in e.applies_to)
    assert INPUT_ENCODINGS == tuple(e.name for e in encodings.ALL if encodings.INPUT in e.applies_to)
    for e in encodings.ALL:
        for where, applies in ((EDGE, encodings.INPUT), (SPLIT, encodings.CUT)):
            cut = 3 if where == SPLIT else None
            if applies in e.applies_to:
                p = Placement(where, cut, encoding=e.name)
                assert p.lossless == (not e.lossy)
                assert p.label.endswith(e.label(p.quality)) and (e.name == "raw") == ("," not in p.label)
            else:
                with pytest.raises(TlcutError, match="does not apply"):
                    Placement(where, cut, encoding=e.name)


def test_cli_choices_are_the_registrys():
    from tlcut.cli import build_parser

    def choices(verb, flag):
        sub = next(a for a in build_parser()._actions if a.dest == "verb").choices[verb]
        return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)

    assert choices("run", "--encoding") == encodings.NAMES
    assert choices("serve", "--forward-encoding") == encodings.names(encodings.CUT)


def test_the_spec_has_one_section_per_encoding():
    import re

    spec = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    sections = re.findall(r"^### (\d+) (\S+)$", spec, re.M)
    assert [(int(c), n) for c, n in sections] == [(e.code, e.name) for e in encodings.ALL]
