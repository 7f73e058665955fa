"""Writes tests/vectors/behaviour.json: what an edge must answer to each message, as data.

Every row is one message (its frames, as hex or as a fill pattern for large ones) sent on a named
connection, and the reply the spec (docs/protocol.md) demands: its type, status code and echoed
ids, and for a RESULT the values (computed here with ONNX Runtime from the committed test bundle,
on the input the row sends). The codes are written here by hand from the spec, never read back from
an edge. tests/behaviour.py runs the rows in order against a live edge, Python or C, and checks
that a PING is still answered after each. Re-run after changing a rule or the test bundle:

    python scripts/make_behaviour_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tlcut import encodings
from tlcut.bundle import Bundle
from tlcut.encodings.jpeg import decode_jpeg, encode_jpeg
from tlcut.runtime import protocol as P

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "runtime/c/tests/data/bundle"
OUT = ROOT / "tests" / "vectors" / "behaviour.json"
MAX_MESSAGE_MB = 1


def hexf(b) -> dict:
    return {"hex": bytes(b).hex()}


def header(**kw) -> bytes:
    return P.Header(**kw).pack()


def _sof_size(jpg: np.ndarray, h: int, w: int) -> np.ndarray:
    """The JPEG with its frame header (SOF0) declaring ``h`` x ``w``: a hostile header."""
    b = bytearray(jpg.tobytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return np.frombuffer(bytes(b), np.uint8)


def _zstd_refusals(q: bytes) -> list[tuple[str, bytes]]:
    """(what, payload) for int8+zstd payloads an edge must refuse; ``q`` is the served tensor's int8
    bytes. Each costs the edge at most the served tensor's size to find out."""
    import zstandard

    def z(data: bytes, **kw) -> bytes:
        return zstandard.ZstdCompressor(level=1, **kw).compress(data)

    def declaring(frame: bytes, size: int) -> bytes:
        """``frame`` (single segment, 1-byte content size field) with its header declaring ``size`` bytes."""
        assert frame[4] & 0xE0 == 0x20 and size < 256 and zstandard.frame_content_size(frame) < 256
        return frame[:5] + bytes([size]) + frame[6:]

    good = z(q)
    n = len(q)
    body = bytearray(good)
    body[6:] = bytes(b ^ 0x5A for b in body[6:])
    longer = (q * 2)[:n + 20]
    return [
        ("corrupt (its header right, its blocks scrambled)", bytes(body)),
        ("truncated (last 4 bytes cut)", good[:-4]),
        ("not a zstd frame", b"not a zstd frame at all " * 4),
        ("whose header declares one byte fewer than the tensor served", z(q[:-1])),
        ("whose header declares one byte more than the tensor served", z(q + b"\0")),
        ("that declares the served size but holds 20 bytes more (decompression bounded)", declaring(z(longer), n)),
        ("that declares the served size but holds 20 bytes fewer", declaring(z(q[:-20]), n)),
        ("bomb: 64 MiB of zeros in a few KB (refused from its header)", z(bytes(64 << 20))),
        ("bomb: 64 MiB of zeros, content size not declared", z(bytes(64 << 20), write_content_size=False)),
        ("with bytes after the frame", good + b"\0\0"),
    ]


def main():
    b = Bundle.open(ROOT / BUNDLE)

    def run(kind, cut, tl, x):
        s = ort.InferenceSession(str(b.runnable(kind, cut, tl)), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 3, 7, 7)).astype(np.float32)
    mid = run("head", 1, False, x)
    mid_tl = run("head", 1, True, x)
    rows = []

    def row(name, frames, expect, peer="a", needs=None):
        rows.append({"name": name, "peer": peer, "frames": frames, "expect": expect, **({"needs": needs} if needs else {})})

    def request(a, rid, cut, flags=0, **kw):
        return [hexf(f) for f in P.tensor_frames(P.REQUEST, a, rid, cut, flags, **kw)]

    def result(rid, cut, y, flags=0, atol=1e-5):
        return {"type": "RESULT", "request_id": rid, "cut_id": cut, "flags": flags, "dtype": "float32",
                "shape": list(y.shape), "values": [float(v) for v in y.ravel()], "atol": atol}

    def error(code, rid=0, cut=P.INPUT_CUT, flags=0):
        return {"type": "ERROR", "status": code, "request_id": rid, "cut_id": cut, "flags": flags}

    # -- answered with a result ------------------------------------------------------------------
    row("ping", [hexf(header(type=P.PING, request_id=3)), hexf(b"")], {"type": "PONG", "request_id": 3})
    row("cut 1, raw float32", request(mid, 10, 1), result(10, 1, run("tail", 1, False, mid)))
    row("cut 1 + TL, raw float32", request(mid_tl, 11, 1, P.FLAG_TL), result(11, 1, run("tail", 1, True, mid_tl), P.FLAG_TL))
    row("whole model (cut_id 0xFFFFFFFF)", request(x, 12, P.INPUT_CUT), result(12, P.INPUT_CUT, run("model", None, False, x)))
    wire16 = mid.astype(np.float16)
    row("cut 1, float16 encoding", request(wire16, 13, 1, encoding=P.ENC_FLOAT16),
        result(13, 1, run("tail", 1, False, wire16.astype(np.float32))))
    q, enc, scale, zp = P.encode(mid, "int8")
    restored = (q.astype(np.float32) - np.float32(zp)) * np.float32(scale)
    row("cut 1, int8 affine encoding", request(q, 14, 1, encoding=enc, scale=scale, zero_point=zp),
        result(14, 1, run("tail", 1, False, restored), atol=1e-4))
    row("other flag bits are ignored", request(mid, 15, 1, 0x0080), result(15, 1, run("tail", 1, False, mid)))
    # the model input as pixels: a 7x7 RGB image the input [1, 3, 7, 7] (NCHW) stands for, x = q / 255
    pix = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
    q8 = np.ascontiguousarray(pix.transpose(2, 0, 1)[None])
    s255 = float(np.float32(1 / 255))
    row("whole model, uint8 encoding (the float path on q x scale)",
        request(q8, 16, P.INPUT_CUT, encoding=P.ENC_UINT8, scale=s255),
        result(16, P.INPUT_CUT, run("model", None, False, q8.astype(np.float32) * np.float32(s255))))
    jpg = np.frombuffer(encode_jpeg(pix, 90), np.uint8)
    # the edge decodes it (libjpeg-turbo, default settings: both edges give the same pixels) and restores
    # x = (q - zero_point) x scale in NCHW; the expected values come from the same decode
    dec = decode_jpeg(jpg)
    xj = (dec.astype(np.float32) - np.float32(2)) * np.float32(s255)
    row("whole model, jpeg encoding (7x7 RGB, quality 90)",
        request(jpg, 17, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=s255, zero_point=2),
        result(17, P.INPUT_CUT, run("model", None, False, np.ascontiguousarray(xj.transpose(2, 0, 1)[None]))), needs="jpeg")

    # int8+zstd: int8 as above, then one zstd frame that declares its content size (the edge checks it first)
    enc_z = P.ENCODINGS["int8+zstd"]
    zq, _, zscale, zzp = P.encode(mid, "int8+zstd")
    row("cut 1, int8+zstd encoding", request(zq, 18, 1, encoding=enc_z, scale=zscale, zero_point=zzp),
        result(18, 1, run("tail", 1, False, restored), atol=1e-4), needs="zstd")
    # int4+zstd: 16 levels, two a byte, in one zstd frame; the values as the edge restores them
    enc_4 = P.ENCODINGS["int4+zstd"]
    q4, _, s4, zp4 = P.encode(mid, "int4+zstd")
    row("cut 1, int4+zstd encoding", request(q4, 19, 1, encoding=enc_4, scale=s4, zero_point=zp4),
        result(19, 1, run("tail", 1, False, encodings.get("int4+zstd").restore(q4, s4, zp4, mid.shape)), atol=1e-4),
        needs="zstd")

    # -- framing: answered with an error, ids echoed where the header parsed ----------------------
    good = P.tensor_frames(P.REQUEST, mid, 20, 1)
    hb = bytes(good[0])
    row("one frame", [hexf(hb)], error(P.E_BAD_FRAME))
    row("three frames", [hexf(hb), hexf(bytes(good[1])), hexf(b"x")], error(P.E_BAD_FRAME))
    row("48 frames (those past the second dropped as they arrive)", [hexf(hb), hexf(bytes(good[1]))] + [hexf(b"x")] * 46,
        error(P.E_BAD_FRAME))
    row("empty header frame", [hexf(b""), hexf(b"")], error(P.E_BAD_FRAME))
    row("truncated header (40 bytes)", [hexf(hb[:40]), hexf(bytes(good[1]))], error(P.E_BAD_FRAME))
    row("header of 81 bytes", [hexf(hb + b"\0"), hexf(bytes(good[1]))], error(P.E_BAD_FRAME))
    row("bad magic", [hexf(b"XLCT" + hb[4:]), hexf(bytes(good[1]))], error(P.E_BAD_FRAME))
    row("version 2", [hexf(hb[:4] + b"\x02" + hb[5:]), hexf(bytes(good[1]))], error(P.E_VERSION))
    row("unknown message type 9", [hexf(hb[:5] + b"\x09" + hb[6:]), hexf(bytes(good[1]))], error(P.E_BAD_TYPE))
    row("rank 9", [hexf(hb[:7] + b"\x09" + hb[8:]), hexf(bytes(good[1]))], error(P.E_BAD_FRAME))
    row("unknown dtype code 12", [hexf(hb[:6] + b"\x0c" + hb[7:]), hexf(bytes(good[1]))], error(P.E_WRONG_TENSOR))
    row("payload frame shorter than payload_len",
        [hexf(hb), hexf(bytes(good[1])[:-4])], error(P.E_BAD_FRAME, 20, 1))
    row("dims disagree with payload_len",
        [hexf(header(type=P.REQUEST, request_id=21, cut_id=1, dtype="float32", shape=(1, 4, 7, 7), payload_len=8)),
         hexf(b"\0" * 8)], error(P.E_WRONG_TENSOR, 21, 1))
    big = 0xFFFFFFFF
    row("dims whose product overflows 64 bits",
        [hexf(header(type=P.REQUEST, request_id=22, cut_id=1, dtype="float32", shape=(big,) * 8, payload_len=4)),
         hexf(b"\0" * 4)], error(P.E_WRONG_TENSOR, 22, 1))
    row("REQUEST with dtype 0 (none), rank 0, empty payload",
        [hexf(header(type=P.REQUEST, request_id=23, cut_id=1, flags=0)), hexf(b"")], error(P.E_WRONG_TENSOR, 23, 1))
    row("REQUEST with dtype 0 to the whole model",
        [hexf(header(type=P.REQUEST, request_id=24)), hexf(b"")], error(P.E_WRONG_TENSOR, 24))
    row("RESULT sent to the edge", [hexf(f) for f in P.tensor_frames(P.RESULT, mid, 25, 1)], error(P.E_BAD_TYPE, 25, 1))
    row("ERROR sent to the edge", [hexf(f) for f in P.error_frames(26, 5, "no")], error(P.E_BAD_TYPE, 26))
    row("PONG sent to the edge", [hexf(header(type=P.PONG, request_id=27)), hexf(b"")], error(P.E_BAD_TYPE, 27))
    over = (MAX_MESSAGE_MB << 20) + 4096
    row(f"message over the {MAX_MESSAGE_MB} MiB limit",
        [hexf(header(type=P.REQUEST, request_id=28, cut_id=1, dtype="uint8", shape=(over,), payload_len=over)),
         {"fill": "00", "count": over}], error(P.E_TOO_LARGE))

    # -- well-formed, but not what is served --------------------------------------------------------
    row("cut not served (42)", request(mid, 30, 42), error(P.E_WRONG_CUT, 30, 42))
    row("TL at a cut served without it (cut 3)", request(np.zeros((1, 4, 1, 1), np.float32), 31, 3, P.FLAG_TL),
        error(P.E_WRONG_CUT, 31, 3, P.FLAG_TL))
    row("TL flag on a plain-size payload", request(mid, 32, 1, P.FLAG_TL), error(P.E_WRONG_TENSOR, 32, 1, P.FLAG_TL))
    row("wrong dtype (float64)", request(mid.astype(np.float64), 33, 1), error(P.E_WRONG_TENSOR, 33, 1))
    row("wrong shape", request(mid[:, :, :, :6].copy(), 34, 1), error(P.E_WRONG_TENSOR, 34, 1))
    row("uint8 payload to a float32 tail", request(np.zeros((1, 4, 7, 7), np.uint8), 35, 1), error(P.E_WRONG_TENSOR, 35, 1))
    row("rank-0 scalar", request(np.float32(1.0).reshape(()), 36, 1), error(P.E_WRONG_TENSOR, 36, 1))
    row("float16 encoding on a float32 payload", request(mid, 37, 1, encoding=P.ENC_FLOAT16),
        error(P.E_WRONG_TENSOR, 37, 1))
    row("int8 encoding with scale 0", request(q, 38, 1, encoding=P.ENC_INT8, scale=0.0, zero_point=0),
        error(P.E_WRONG_TENSOR, 38, 1))
    row("unknown encoding 7", request(mid, 39, 1, encoding=7), error(P.E_WRONG_TENSOR, 39, 1))
    row("uint8 encoding with scale 0", request(q8, 40, P.INPUT_CUT, encoding=P.ENC_UINT8, scale=0.0),
        error(P.E_WRONG_TENSOR, 40))
    row("uint8 encoding on a float32 payload", request(q8.astype(np.float32), 41, P.INPUT_CUT, encoding=P.ENC_UINT8,
                                                       scale=s255), error(P.E_WRONG_TENSOR, 41))
    row("uint8 encoding, wrong shape", request(q8[:, :, :, :6].copy(), 42, P.INPUT_CUT, encoding=P.ENC_UINT8, scale=s255),
        error(P.E_WRONG_TENSOR, 42))
    row("jpeg whose header declares another size (7x8)",
        request(np.frombuffer(encode_jpeg(np.zeros((7, 8, 3), np.uint8), 90), np.uint8), 43, P.INPUT_CUT,
                encoding=P.ENC_JPEG, scale=s255), error(P.E_WRONG_TENSOR, 43), needs="jpeg")
    row("jpeg in grayscale to an RGB input",
        request(np.frombuffer(encode_jpeg(pix[:, :, :1], 90), np.uint8), 44, P.INPUT_CUT, encoding=P.ENC_JPEG,
                scale=s255), error(P.E_WRONG_TENSOR, 44), needs="jpeg")
    row("jpeg whose header declares 65500x65500 (refused before decoding)",
        request(_sof_size(jpg, 65500, 65500), 45, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=s255), error(P.E_WRONG_TENSOR, 45), needs="jpeg")
    row("jpeg truncated (last 100 bytes cut)", request(jpg[:-100].copy(), 46, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=s255),
        error(P.E_WRONG_TENSOR, 46), needs="jpeg")
    row("jpeg corrupt (not a JPEG)", request(np.frombuffer(b"\xff\xd8 not a jpeg " * 8, np.uint8), 47, P.INPUT_CUT,
                                             encoding=P.ENC_JPEG, scale=s255), error(P.E_WRONG_TENSOR, 47), needs="jpeg")
    row("jpeg with rank-2 dims [1, len]", request(jpg.reshape(1, -1), 48, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=s255),
        error(P.E_WRONG_TENSOR, 48), needs="jpeg")
    row("jpeg with scale 0", request(jpg, 49, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=0.0), error(P.E_WRONG_TENSOR, 49), needs="jpeg")
    row("jpeg to a cut whose input is not an image (cut 1, [1, 4, 7, 7])",
        request(jpg, 50, 1, encoding=P.ENC_JPEG, scale=s255), error(P.E_WRONG_TENSOR, 50, 1), needs="jpeg")
    row("a tiles band to an edge that serves no bands (band 0 of cut 1)", request(mid, 51, 1, P.band_flags(0)),
        error(P.E_WRONG_CUT, 51, 1))
    # a scale that is not finite would restore to inf or NaN: refused like scale 0 (docs/protocol.md)
    for i, bad in enumerate((float("inf"), float("nan"), float("-inf"))):
        row(f"int8 encoding with scale {bad}", request(q, 52 + i, 1, encoding=P.ENC_INT8, scale=bad, zero_point=zp),
            error(P.E_WRONG_TENSOR, 52 + i, 1))
    for i, bad in enumerate((float("inf"), float("nan"))):
        row(f"uint8 encoding with scale {bad}", request(q8, 55 + i, P.INPUT_CUT, encoding=P.ENC_UINT8, scale=bad),
            error(P.E_WRONG_TENSOR, 55 + i))
    for i, bad in enumerate((float("inf"), float("nan"))):
        row(f"jpeg with scale {bad}", request(jpg, 57 + i, P.INPUT_CUT, encoding=P.ENC_JPEG, scale=bad),
            error(P.E_WRONG_TENSOR, 57 + i), needs="jpeg")
    zbad = _zstd_refusals(q.tobytes())  # refused by an edge built without zstd too, so run on every edge
    for i, (what, frame) in enumerate(zbad):
        row(f"int8+zstd {what}", request(np.frombuffer(frame, np.uint8), 60 + i, 1, encoding=enc_z, scale=zscale,
                                         zero_point=zzp), error(P.E_WRONG_TENSOR, 60 + i, 1))
    row("int8+zstd with rank-2 dims [1, len]", request(zq.reshape(1, -1), 60 + len(zbad), 1, encoding=enc_z, scale=zscale),
        error(P.E_WRONG_TENSOR, 60 + len(zbad), 1))
    row("int8+zstd with scale 0", request(zq, 61 + len(zbad), 1, encoding=enc_z, scale=0.0),
        error(P.E_WRONG_TENSOR, 61 + len(zbad), 1))
    row("int4+zstd whose frame holds int8's byte count (one value a byte)",
        request(zq, 62 + len(zbad), 1, encoding=enc_4, scale=zscale, zero_point=zzp), error(P.E_WRONG_TENSOR, 62 + len(zbad), 1))
    row("int8+zstd with scale inf", request(zq, 63 + len(zbad), 1, encoding=enc_z, scale=float("inf"), zero_point=zzp),
        error(P.E_WRONG_TENSOR, 63 + len(zbad), 1))
    # a finite scale whose zero point takes the restore past float32's range: inf would come out
    row("int8 whose zero point restores past float32's range", request(q, 64 + len(zbad), 1, encoding=P.ENC_INT8,
        scale=1e38, zero_point=2**31 - 1), error(P.E_WRONG_TENSOR, 64 + len(zbad), 1))
    row("int4+zstd whose zero point restores past float32's range", request(q4, 65 + len(zbad), 1, encoding=enc_4,
        scale=1e37, zero_point=100), error(P.E_WRONG_TENSOR, 65 + len(zbad), 1))

    # -- replay refusal: per connection, ids must grow ----------------------------------------------
    row("replay: first id on a connection", request(mid, 100, 1), result(100, 1, run("tail", 1, False, mid)), peer="r")
    row("replay: the same id again", request(mid, 100, 1), error(P.E_REPLAY, 100, 1), peer="r")
    row("replay: a lower id", request(mid, 50, 1), error(P.E_REPLAY, 50, 1), peer="r")
    row("replay: a higher id is served", request(mid, 101, 1), result(101, 1, run("tail", 1, False, mid)), peer="r")
    row("replay: another connection keeps its own count", request(mid, 1, 1), result(1, 1, run("tail", 1, False, mid)),
        peer="s")
    row("replay: ids keep growing after refusals", request(mid, 102, 1),
        result(102, 1, run("tail", 1, False, mid)), peer="r")

    data = {"comment": "Edge behaviour: request -> expected reply, in order, per named connection. "
                       "Written by scripts/make_behaviour_vectors.py from docs/protocol.md; run by tests/behaviour.py "
                       "against the Python and the C edge.",
            "bundle": BUNDLE, "serve": {"cuts": ["0", "1", "3", "input"], "tl": "both", "max_message_mb": MAX_MESSAGE_MB},
            "rows": rows}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
