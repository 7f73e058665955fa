"""The wire protocol against fixed byte vectors (tests/vectors/protocol.json, shared with the C
runtime), plus alignment and zero-copy behaviour of decoding."""

import json
from pathlib import Path

import numpy as np
import pytest

from tlcut.runtime import protocol as P

VECTORS = json.loads((Path(__file__).parent / "vectors" / "protocol.json").read_text())


@pytest.mark.parametrize("v", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vectors_decode_to_their_fields(v):
    h, body = P.decode([bytes.fromhex(v["header"]), bytes.fromhex(v["payload"])])
    for k, want in v["fields"].items():
        got = getattr(h, k)
        assert (list(got) if k == "shape" else got) == want, k
    if h.type == P.ERROR:
        assert body == v["message"]
    elif h.dtype:
        assert body.dtype == np.dtype(h.dtype) and body.tobytes() == bytes.fromhex(v["payload"])


@pytest.mark.parametrize("v", VECTORS["valid"], ids=lambda v: v["name"])
def test_packing_reproduces_the_vector_bytes(v):
    f = v["fields"]
    h = P.Header(type=f["type"], request_id=f["request_id"], cut_id=f["cut_id"], dtype=f["dtype"],
                 shape=tuple(f["shape"]), payload_len=f["payload_len"], flags=f["flags"], encoding=f["encoding"],
                 status=f["status"], server_us=f["server_us"])
    assert h.pack().hex() == v["header"]


def test_tensor_frames_match_the_request_vector():
    v = VECTORS["valid"][0]
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    hdr, payload = P.tensor_frames(P.REQUEST, a, request_id=1, cut_id=5, flags=P.FLAG_TL)
    assert hdr.hex() == v["header"] and bytes(payload).hex() == v["payload"]


@pytest.mark.parametrize("v", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors_are_rejected_with_their_code(v):
    with pytest.raises(P.ProtocolError) as e:
        P.decode([bytes.fromhex(v["header"]), bytes.fromhex(v["payload"])])
    assert e.value.code == v["error"]


def test_wrong_frame_count():
    with pytest.raises(P.ProtocolError) as e:
        P.decode([bytes.fromhex(VECTORS["valid"][0]["header"])])
    assert e.value.code == P.E_BAD_FRAME


def test_decoding_is_zero_copy_when_aligned_and_copies_when_not():
    a = np.arange(6, dtype=np.float64)
    hdr, payload = P.tensor_frames(P.RESULT, a, 1)
    buf = bytearray(16 + a.nbytes)
    o = -np.frombuffer(buf, np.uint8).ctypes.data % 8
    aligned = memoryview(buf)[o:o + a.nbytes]
    aligned[:] = bytes(payload)
    _, view = P.decode([hdr, aligned])
    assert np.shares_memory(view, np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(view, a)
    off = memoryview(buf)[o + 1:o + 1 + a.nbytes]
    off[:] = bytes(payload)
    _, copy = P.decode([hdr, off])
    np.testing.assert_array_equal(copy, a)
    assert not np.shares_memory(copy, np.frombuffer(buf, np.uint8))


def test_tensor_frames_do_not_copy_a_contiguous_array():
    a = np.ones((1, 64, 56, 56), np.float32)
    _, payload = P.tensor_frames(P.REQUEST, a, 1)
    assert np.shares_memory(np.frombuffer(payload, np.uint8), a)
