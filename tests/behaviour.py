"""Runs tests/vectors/behaviour.json against a live edge (Python or C), over ZeroMQ.

Each row's frames go out on the DEALER socket named by its ``peer`` (one connection per name, so
replay refusal is per connection, as on a real link); the reply is checked against the row's
``expect``, and a PING on a fresh connection must still be answered after every row: an edge
answers every message and keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zmq

from tlcut.runtime import protocol as P

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "behaviour.json").read_text())
TYPES = {v: k for k, v in P.TYPES.items()}


def frames_of(row) -> list[bytes]:
    out = []
    for f in row["frames"]:
        out.append(bytes.fromhex(f["hex"]) if "hex" in f else bytes.fromhex(f["fill"]) * f["count"])
    return out


def mismatch(row, reply) -> str | None:
    """Why ``reply`` (frames) is not what ``row`` expects; None if it is."""
    want = row["expect"]
    try:
        h, body = P.decode(reply)
    except P.ProtocolError as e:
        return f"reply does not parse: {e}"
    got = {"type": P.TYPES[h.type], "status": h.status, "request_id": h.request_id, "cut_id": h.cut_id, "flags": h.flags}
    for k in ("type", "status", "request_id", "cut_id", "flags"):
        if k in want and got[k] != want[k]:
            return f"{k} is {got[k]}, expected {want[k]} (reply {got}, message {body if isinstance(body, str) else ''!r})"
    if want["type"] == "ERROR" and not (isinstance(body, str) and body):
        return "an ERROR must carry a message"
    if want["type"] == "RESULT":
        if h.dtype != want["dtype"] or list(h.shape) != want["shape"]:
            return f"result is {h.dtype}{list(h.shape)}, expected {want['dtype']}{want['shape']}"
        diff = float(np.abs(np.asarray(body, np.float64).ravel() - np.asarray(want["values"])).max())
        if diff > want["atol"]:
            return f"result differs from the expected values by {diff:.3g} (> {want['atol']:g})"
    return None


def run_rows(endpoint: str, timeout_ms: int = 5000, skip: tuple = ()) -> list[tuple[str, str | None]]:
    """(row name, failure or None) for every row, in order, against the edge at ``endpoint``.
    Rows that need a feature named in ``skip`` (their ``needs``: "jpeg", for an edge built without
    a JPEG decoder) are not sent and come back as passed; the caller says they were skipped."""
    ctx = zmq.Context.instance()
    socks: dict[str, zmq.Socket] = {}
    out = []
    try:
        for row in VECTORS["rows"]:
            if row.get("needs") in skip:
                out.append((row["name"], None))
                continue
            s = socks.get(row["peer"])
            if s is None:
                s = socks[row["peer"]] = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(endpoint)
            s.send_multipart(frames_of(row))
            if not s.poll(timeout_ms):
                out.append((row["name"], "no reply"))
                continue
            why = mismatch(row, s.recv_multipart())
            out.append((row["name"], why or still_serving(ctx, endpoint, timeout_ms)))
    finally:
        for s in socks.values():
            s.close(linger=0)
    return out


def still_serving(ctx, endpoint, timeout_ms) -> str | None:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send_multipart([P.Header(type=P.PING, request_id=1).pack(), b""])
        if not s.poll(timeout_ms):
            return "the edge stopped answering after this row"
        h, _ = P.decode(s.recv_multipart())
        return None if h.type == P.PONG else f"a PING after this row got {P.TYPES[h.type]}"
    finally:
        s.close(linger=0)
