"""Cheaper wire formats: float16 and int8 with a scale and zero point, restored on the edge."""

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
