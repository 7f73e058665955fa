"""Fuzz the Python edge's request path (Edge.handle) with mutated protocol messages.

    python benchmarks/fuzz_edge.py [--seconds 60]

The C edge has libFuzzer (benchmarks/fuzz.sh); this is the Python edge's counterpart, a mutation
fuzzer without coverage feedback. Seeds: every message of the behaviour table
(tests/vectors/behaviour.json). Each input is a seed mutated a few times (bit flips, random bytes,
header fields set to edge values, truncation, frames added or dropped) and handed to three edges
on the committed test bundle: the behaviour table's edge (cuts 0, 1, 3 and the whole model, both
TL modes, 1 MiB limit), a coordinator of input -> cut 1 in two local bands, and the worker of one
band (seeded with one of its band's requests too). Every reply must be two frames whose header parses, a RESULT, ERROR or PONG whose payload
length matches, carrying the request's id where its header parsed; an internal error (a bug of
ours rather than of the message) is a finding. Writes benchmarks/results/fuzz-python.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import platform
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

EDGE_VALUES = [0, 1, 2, 3, 7, 8, 9, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**63, 2**64 - 1]
# header fields (offset, struct format) a mutation may set to an edge value
FIELDS = [(4, "B"), (5, "B"), (6, "B"), (7, "B"), (8, "<Q"), (16, "<I"), (20, "<H"), (22, "B"), (23, "B"),
          (24, "<Q"), (32, "<f"), (36, "<i"), *((48 + 4 * k, "<I") for k in range(8))]


def mutate(frames: list[bytes], rng: random.Random) -> list[bytes]:
    frames = [bytearray(f) for f in frames]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(7)
        f = frames[rng.randrange(len(frames))] if frames else None
        if op == 0 and f:
            i = rng.randrange(len(f))
            f[i] ^= 1 << rng.randrange(8)
        elif op == 1 and f:
            f[rng.randrange(len(f))] = rng.randrange(256)
        elif op == 2 and frames and len(frames[0]) == 80:
            off, fmt = rng.choice(FIELDS)
            v = rng.choice(EDGE_VALUES)
            if fmt == "<f":
                v = rng.choice([0.0, -1.0, 1e-45, float("inf"), float("nan"), 1 / 255])
            size = struct.calcsize(fmt)
            v = v if fmt == "<f" else (v % (1 << (8 * size)) if fmt != "<i" else (v % (1 << 32)) - (1 << 31))
            frames[0][off:off + size] = struct.pack(fmt, v)
        elif op == 3 and f:
            del f[rng.randrange(len(f) + 1):]
        elif op == 4:
            frames.append(bytearray(rng.randbytes(rng.randrange(16))))
        elif op == 5 and frames:
            frames.pop(rng.randrange(len(frames)))
        elif op == 6 and len(frames) > 1:
            frames[1] = bytearray(rng.randbytes(rng.randrange(300)))
    return [bytes(f) for f in frames]


def check(reply, request: list[bytes]) -> str | None:
    """Why ``reply`` breaks the protocol's rules for an answer to ``request``; None if it does not."""
    from tlcut.runtime import protocol as P

    if not isinstance(reply, list) or len(reply) != 2:
        return f"reply is {type(reply).__name__} of {len(reply) if isinstance(reply, list) else '?'} frames, not 2"
    try:
        h, body = P.decode([bytes(P._buffer(f)) for f in reply])
    except P.ProtocolError as e:
        return f"reply does not parse: {e}"
    if h.type not in (P.RESULT, P.ERROR, P.PONG):
        return f"reply type {h.type}"
    if h.type == P.ERROR and h.status == P.E_INTERNAL and str(body).startswith("internal error:"):
        return f"internal error: {body}"
    try:
        req, _ = P.decode(request)
    except P.ProtocolError:
        return None
    if h.request_id != req.request_id:
        return f"reply id {h.request_id} for request {req.request_id}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz-python.md"))
    a = ap.parse_args()

    import logging
    import shutil

    import numpy as np
    import onnxruntime

    logging.disable(logging.CRITICAL)  # every bad message is logged; the counts below say it all
    from behaviour import VECTORS, frames_of

    from tlcut.bundle import Bundle
    from tlcut.tiles_folder import read_tiles
    from tlcut.runtime import protocol as P
    from tlcut.runtime.serve import Edge
    from tlcut.runtime.tiles import Tiles
    from tlcut.toolchain.tiles import write_tiles

    b = Bundle.open(ROOT / VECTORS["bundle"])
    tmp = Path(tempfile.mkdtemp(prefix="tlcut-fuzz-"))
    write_tiles(b, "input", "1", [1, 1], tmp / "tiles")
    edges = {"edge": Edge(b, VECTORS["serve"]["cuts"], tl="both", max_message_bytes=VECTORS["serve"]["max_message_mb"] << 20),
             "coordinator": Edge(b, ["input"], tl="off", tiles=Tiles(str(tmp / "tiles"), ("local", "local"))),
             "band worker": Edge(b, ["input"], tl="off", tiles=str(tmp / "tiles"), band=1)}
    seeds = [frames_of(r) for r in VECTORS["rows"] if sum(len(f) for f in frames_of(r)) < (1 << 20)]
    x = np.random.default_rng(a.seed).standard_normal(b.inputs[0]["shape"]).astype(np.float32)
    lo, hi = read_tiles(tmp / "tiles")["bands"][1]["in_rows"]
    seeds.append(P.tensor_frames(P.REQUEST, np.ascontiguousarray(x[:, :, lo:hi]), 1, P.INPUT_CUT, P.band_flags(1)))
    seeds = [[bytes(P._buffer(f)) for f in s] for s in seeds]
    rng = random.Random(a.seed)
    counts = {n: collections.Counter() for n in edges}
    findings: list[str] = []
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.seconds:
        msg = mutate(rng.choice(seeds), rng)
        peer = rng.choice([None, b"p", rng.randbytes(4)])
        for name, edge in edges.items():
            reply = edge.handle(msg, peer=peer)
            why = check(reply, msg)
            if why:
                findings.append(f"{name}: {why} (input {b''.join(msg)[:120].hex()})")
                continue
            h, _ = P.decode([bytes(P._buffer(f)) for f in reply])
            counts[name][P.TYPES[h.type] if h.type != P.ERROR else P.ERRORS.get(h.status, h.status)] += 1
        n += 1
    for e in edges.values():
        e.close()
    secs = time.monotonic() - t0
    shutil.rmtree(tmp, ignore_errors=True)

    lines = ["# Fuzzing the Python edge", "",
             f"Command: `python benchmarks/fuzz_edge.py --seconds {a.seconds:g} --seed {a.seed}`  ",
             f"Date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}; {platform.platform()}, "
             f"{platform.processor() or platform.machine()}; python {platform.python_version()}, numpy {np.__version__}, "
             f"onnxruntime {onnxruntime.__version__}", "",
             f"{n} mutated messages in {secs:.0f} s ({n / secs:.0f}/s), each to all three edges, from {len(seeds)} seeds "
             "(the behaviour table's messages). No coverage feedback: a random mutation fuzzer, so depth is shown by "
             "how the replies spread over the checks below.", "",
             f"**Findings: {len(findings)}**" + (":" if findings else " (every reply well formed, no internal error)."), ""]
    lines += [f"- {f}" for f in findings[:20]]
    keys = sorted({k for c in counts.values() for k in c})
    lines += ["", "| edge | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, c in counts.items():
        lines.append(f"| {name} | " + " | ".join(str(c[k]) for k in keys) + " |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
