"""Encodings 5 and 6, int8+zstd and int4+zstd: exact over the quantized values, refused whole when
the frame does not fit the served tensor (before anything the size of a bomb is allocated), and far
smaller than int8 where the tensor is a sparse ReLU map; their bytes are measured per cut on real
inputs (toolchain/wire_sizes.py)."""

import numpy as np
import pytest

zstandard = pytest.importorskip("zstandard")

from tlcut import encodings  # noqa: E402
from tlcut.encodings.int8_zstd import decompress  # noqa: E402
from tlcut.runtime import protocol as P  # noqa: E402

ENC = encodings.get("int8+zstd")


def _relu_map(seed=0, shape=(1, 64, 28, 28), zeros=0.8):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    x[rng.random(shape) < zeros] = 0
    return x


def _trip(x, served=None):
    return _trip_in("int8+zstd", x, served)


def _trip_in(name, x, served=None):
    wire, code, scale, zp = P.encode(x, name)
    frames = P.tensor_frames(P.REQUEST, wire, 1, 3, encoding=code, scale=scale, zero_point=zp)
    h, got = P.decode([bytes(f) for f in frames])
    return h, got, P.restore(h, got, served or x.shape)


def test_round_trip_is_exact_over_the_int8_values():
    x = np.random.default_rng(3).standard_normal((1, 16, 9, 9)).astype(np.float32) * 4
    h, wire, back = _trip(x)
    q, _, scale, zp = P.encode(x, "int8")
    assert h.encoding == ENC.code == 5 and wire.dtype == np.uint8 and wire.ndim == 1 and wire.size == h.payload_len
    assert (h.scale, h.zero_point) == (scale, zp)
    np.testing.assert_array_equal(back, P.restore(P.Header(type=P.REQUEST, encoding=P.ENC_INT8, scale=scale,
                                                           zero_point=zp), q))
    assert back.dtype == np.float32 and back.shape == x.shape


def test_sparse_relu_map_is_far_below_int8_and_noise_about_the_same():
    relu = _relu_map()
    h, _, back = _trip(relu)
    assert h.payload_len < relu.size / 3  # int8 sends relu.size bytes
    assert np.all(back[relu == 0] == 0)
    noise = np.random.default_rng(1).standard_normal((1, 64, 28, 28)).astype(np.float32)
    h, _, _ = _trip(noise)
    assert 0.8 * noise.size < h.payload_len < 1.05 * noise.size


def test_int4_is_within_half_a_step_keeps_zeros_and_packs_two_a_byte():
    x = _relu_map(shape=(1, 5, 3, 3))  # 45 values: an odd count pads the last byte
    x[0, 0, 0, 0] = -1.0
    h, wire, back = _trip_in("int4+zstd", x)
    assert h.encoding == 6 and 0 <= h.zero_point <= 15
    assert np.abs(back - x).max() <= h.scale / 2 + 1e-6 and np.all(back[x == 0] == 0)
    assert zstandard.frame_content_size(wire.tobytes()) == 23
    assert len(np.unique(back)) <= 16


def test_int4_sends_fewer_bytes_than_int8_on_a_relu_map():
    relu = _relu_map(seed=4)
    assert _trip_in("int4+zstd", relu)[0].payload_len < 0.7 * _trip_in("int8+zstd", relu)[0].payload_len


def test_int8s_frame_is_not_int4s():
    x = _relu_map(shape=(1, 4, 7, 7))
    wire, _, scale, zp = P.encode(x, "int8+zstd")
    with pytest.raises(P.ProtocolError, match="declares 196 bytes; the tensor served takes 98"):
        P.restore(P.Header(type=P.REQUEST, encoding=6, scale=scale, zero_point=zp), wire, x.shape)


def test_content_decides_the_size():
    assert ENC.measured and ENC.wire_bytes((1, 8, 4, 4), "float32") is None
    assert encodings.get("int4+zstd").measured
    assert not any(e.measured for e in encodings.ALL if e.name in ("raw", "float16", "int8", "uint8"))


def _frame(data: bytes, **kw) -> np.ndarray:
    return np.frombuffer(zstandard.ZstdCompressor(level=1, **kw).compress(data), np.uint8)


@pytest.mark.parametrize("what, payload, says", [
    ("one byte fewer", _frame(bytes(195)), "declares 195 bytes; the tensor served takes 196"),
    ("one byte more", _frame(bytes(197)), "declares 197 bytes"),
    ("no content size", _frame(bytes(196), write_content_size=False), "does not declare its content size"),
    ("not zstd", np.frombuffer(b"definitely not zstd", np.uint8), "not a zstd frame"),
    ("truncated", _frame(np.arange(196, dtype=np.uint8).tobytes())[:-3], "does not decode"),
    ("trailing bytes", np.concatenate([_frame(bytes(196)), np.zeros(2, np.uint8)]), "does not decode"),
])
def test_frames_that_do_not_fit_are_wrong_tensor(what, payload, says):
    h = P.Header(type=P.REQUEST, encoding=ENC.code, scale=0.5, zero_point=3)
    with pytest.raises(P.ProtocolError, match=says) as e:
        P.restore(h, payload, (1, 4, 7, 7))
    assert e.value.code == P.E_WRONG_TENSOR


def test_a_bomb_is_refused_from_its_header():
    """256 MiB of zeros in a few KB: its header declares the size, so nothing is decompressed."""
    bomb = _frame(bytes(256 << 20))
    assert bomb.size < 64 << 10
    with pytest.raises(encodings.WireError, match=f"declares {256 << 20} bytes"):
        decompress(bomb, 196)


def test_a_frame_that_lies_about_its_size_fails_in_a_bounded_decompress():
    """The header says 196 bytes, the blocks hold 216: decompression stops at the buffer's end."""
    f = bytearray(_frame(np.arange(216, dtype=np.uint8).tobytes()).tobytes())
    assert f[4] & 0xE0 == 0x20 and f[5] == 216  # single segment, a one-byte content size
    f[5] = 196
    with pytest.raises(encodings.WireError, match="does not decode"):
        decompress(np.frombuffer(bytes(f), np.uint8), 196)


@pytest.mark.parametrize("wire, scale, served, says", [
    (np.zeros(8, np.int8), 1.0, (1, 2), "does not fit a int8 payload"),
    (np.zeros((1, 8), np.uint8), 1.0, (1, 2), "dims \\[1, 8\\]"),
    (np.zeros(8, np.uint8), 0.0, (1, 2), "scale <= 0"),
    (np.zeros(8, np.uint8), float("nan"), (1, 2), "scale nan \\(not finite\\)"),
    (np.zeros(8, np.uint8), float("inf"), (1, 2), "scale inf \\(not finite\\)"),
    (np.zeros(8, np.uint8), 1.0, (-1, 2), "fixed shape"),
])
def test_the_header_is_checked_before_the_frame(wire, scale, served, says):
    with pytest.raises(P.ProtocolError, match=says):
        P.restore(P.Header(type=P.REQUEST, encoding=ENC.code, scale=scale), wire, served)


def test_a_placement_and_the_cli_offer_it_for_a_cut_only():
    from tlcut.cli import build_parser
    from tlcut.errors import TlcutError
    from tlcut.placement import EDGE, SPLIT, Placement

    p = Placement(SPLIT, 5, True, "int8+zstd")
    assert p.label == "cut 5 + TL, int8+zstd" and p.slug == "cut-5-TL-int8-zstd" and not p.lossless
    run = next(a for a in build_parser()._actions if a.dest == "verb").choices["run"]
    for name in ("int8+zstd", "int4+zstd"):
        with pytest.raises(TlcutError, match="does not apply"):
            Placement(EDGE, encoding=name)
        assert name in next(a for a in run._actions if "--encoding" in a.option_strings).choices


def test_wire_sizes_records_measured_bytes_per_cut():
    """bench's hook replaces the noise-timed entry with one measured on inputs, said in ``measured``."""
    from tlcut.bundle import Bundle
    from tlcut.toolchain import wire_sizes

    import behaviour

    b = Bundle.open(behaviour.ROOT / "runtime/c/tests/data/bundle")
    same = {"int8+zstd": {"bytes": -1}, "int8": {"bytes": 7}}  # bench shares one dict between cuts of a shape
    rows = [{"index": c.index, "encodings": same, **({"encodings_tl": same} if c.tl else {})} for c in b.cuts]
    shared = {}
    wire_sizes.record(b, rows, images="", count=3, progress=lambda *_: None, shared=shared)
    assert same == {"int8+zstd": {"bytes": -1}, "int8": {"bytes": 7}} and "wire_sizes" in shared
    assert wire_sizes.measured_encodings() == ["int8+zstd", "int4+zstd"]
    for r, c in zip(rows, b.cuts):
        for name in wire_sizes.measured_encodings():
            got = r["encodings"][name]
            assert got["measured"]["count"] == 3 and "random" in got["measured"]["images"]
            assert got["bytes_min"] <= got["bytes"] <= got["bytes_max"] and got["bytes"] > 0
            assert got["serialize"]["n"] == got["deserialize"]["n"] == 3
            assert (name in r.get("encodings_tl", {})) == bool(c.tl)
        assert r["encodings"]["int8"] == {"bytes": 7}  # a fixed-size encoding is bench's own
    again = [{"index": r["index"], "encodings": {}} for r in rows]
    wire_sizes.record(b, again, shared=shared, progress=lambda *_: 1 / 0)  # measured once: nothing runs
    assert all(a["encodings"] is r["encodings"] for a, r in zip(again, rows))  # one dict per cut, as bench shares them


def _with_zstd(p, nbytes, measured):
    from profiles import st

    for c in p["cuts"]:
        entry = {"serialize": st(0.02), "deserialize": st(0.02), "bytes": nbytes}
        if measured:
            entry["measured"] = {"images": "elpv", "count": 8}
        c["encodings"] = {"int8+zstd": entry}
    return p


def test_the_plan_prices_an_entropy_coded_wire_only_by_sizes_measured_on_images():
    from profiles import profile
    from tlcut.toolchain import plan as planmod

    net = planmod.Network(up_mbps=10, rtt_ms=20, down_mbps=100)
    args = ([1.0, 2.0], [2.0, 1.0], [40_000, 40_000], [False, False], 3.0)

    def zstd_rows(dev_measured, edge_measured):
        dev = _with_zstd(profile("device", *args), 39_000, dev_measured)  # bench's random tensor: no gain
        edge = _with_zstd(profile("edge", *args), 3_000 if edge_measured else 39_000, edge_measured)
        r = planmod.plan(dev, edge, net)
        return [c for c in r.ranking if c.placement.encoding == "int8+zstd"]

    assert zstd_rows(False, False) == []  # sizes of noise are never taken for an image's
    got = zstd_rows(False, True)
    assert got and all(c.upload_bytes < 4_000 for c in got)  # the edge's measured bytes, header included
