"""`tlcut run`: the device. Runs the head, sends what crosses the cut, waits for the result.

Each request's latency is split into device compute (head, with the DeviceTL where used), edge
time (what the edge reports it spent, from receipt to reply), and transfer (the rest: encoding,
the network both ways, decoding). ``--cut device`` runs the whole model on the device and
``--cut input`` sends the input to the edge, so the same command measures all four plans.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.runtime import backends
from tlcut.runtime import protocol as P

DEFAULT_TIMEOUT_S = 10.0


class EdgeError(TlcutError):
    """The edge answered with an ERROR."""

    def __init__(self, code: int, message: str):
        super().__init__(f"edge refused the request ({P.ERRORS.get(code, code)}): {message}")
        self.code = code


class EdgeClient:
    """A DEALER socket to one edge. One request in flight; replies to other ids are dropped."""

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        import zmq

        self.zmq = zmq
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self.dropped = 0
        self.last_payload_bytes = 0
        self.sock = None
        self._connect()

    def _connect(self):
        zmq = self.zmq
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            raise TlcutError(f"bad edge endpoint '{self.endpoint}': {e}; write it like tcp://HOST:PORT") from None

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, array: np.ndarray, cut_id: int, flags: int = 0, encoding: str = "raw") -> tuple[np.ndarray, P.Header]:
        rid = next(self._ids)
        wire, enc, scale, zp = P.encode(array, encoding)
        frames = P.tensor_frames(P.REQUEST, wire, rid, cut_id, flags, encoding=enc, scale=scale, zero_point=zp)
        self.last_payload_bytes = wire.nbytes + P.HEADER.size
        self.sock.send_multipart(frames, copy=wire.nbytes < 65536)
        h, body = self._wait(rid)
        if h.type == P.ERROR:
            raise EdgeError(h.status, body)
        if h.type != P.RESULT:
            raise TlcutError(f"edge answered a request with {P.TYPES[h.type]}")
        return body, h

    def ping(self) -> P.Header:
        rid = next(self._ids)
        self.sock.send_multipart([P.Header(type=P.PING, request_id=rid).pack(), b""])
        return self._wait(rid)[0]

    def _wait(self, rid: int):
        zmq = self.zmq
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise zmq.Again
                self.sock.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
                # results are small (class scores): a copying receive is cheaper than a zero-copy one there
                frames = self.sock.recv_multipart(copy=True)
            except zmq.Again:
                self._connect()  # a reply to this request may still come; a fresh socket never sees it
                raise TlcutError(f"no reply from the edge at {self.endpoint} within {self.timeout_s:g} s; "
                                 "is `tlcut serve` running there and reachable?") from None
            try:
                h, body = P.decode(frames)
            except P.ProtocolError:
                self.dropped += 1
                continue
            if h.request_id != rid:
                self.dropped += 1  # a late reply to an earlier request: never deliver it for this one
                continue
            return h, body


@dataclass
class Plan:
    """What the device runs: ``mode`` is 'device', 'edge' (input crosses) or 'cut'."""

    mode: str
    cut_index: int | None = None
    tl: bool = False

    @property
    def label(self) -> str:
        if self.mode == "device":
            return "device only"
        if self.mode == "edge":
            return "edge only"
        return f"cut {self.cut_index}{' + TL' if self.tl else ''}"


class Device:
    """The device side of one plan: the head's runner and the link to the edge."""

    def __init__(self, bundle: Bundle, cut: str, *, tl: bool = False, edge: str | None = None,
                 backend: str = backends.DEFAULT, threads: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 encoding: str = "raw"):
        from tlcut.toolchain.compile import half_path

        if encoding not in P.ENCODINGS:
            raise TlcutError(f"--encoding must be one of {', '.join(P.ENCODINGS)}, got '{encoding}'")
        self.encoding = encoding
        be = backends.get(backend)
        self.bundle = bundle
        self.input = bundle.inputs[0]
        if str(cut) == "device":
            self.plan = Plan("device")
            self.runner = be.runner(bundle.model_path, threads=threads)
        elif str(cut) == "input":
            self.plan = Plan("edge")
            self.runner = None
        else:
            c = bundle.cut(cut)
            if tl and not c.tl:
                raise TlcutError(f"the TL cannot apply at cut {c.index} ({c.why_no_tl}); run it with --tl off")
            self.plan = Plan("cut", c.index, tl)
            self.runner = be.runner(half_path(bundle, c, "head", tl, be.name), threads=threads)
        if self.plan.mode != "device" and not edge:
            raise TlcutError(f"{self.plan.label} needs an edge: pass --edge tcp://HOST:PORT")
        self.client = EdgeClient(edge, timeout_s) if self.plan.mode != "device" else None
        if self.runner:
            self.runner.activate()

    def close(self):
        if self.runner:
            self.runner.deactivate()
        if self.client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        """The model's output for ``x`` and where the time went (ms)."""
        t0 = time.perf_counter()
        if self.plan.mode == "device":
            y = next(iter(self.runner.infer({self.input["name"]: x}).values()))
            dev = (time.perf_counter() - t0) * 1e3
            return y, {"device_ms": dev, "transfer_ms": 0.0, "edge_ms": 0.0, "total_ms": dev, "payload_bytes": 0}
        if self.plan.mode == "edge":
            payload, cut_id, flags = x, P.INPUT_CUT, 0
        else:
            payload = next(iter(self.runner.infer({self.input["name"]: x}).values()))
            cut_id, flags = self.plan.cut_index, (P.FLAG_TL if self.plan.tl else 0)
        t1 = time.perf_counter()
        y, h = self.client.request(payload, cut_id, flags, self.encoding)
        t2 = time.perf_counter()
        dev, total, edge = (t1 - t0) * 1e3, (t2 - t0) * 1e3, h.server_us / 1e3
        return y, {"device_ms": dev, "transfer_ms": total - dev - edge, "edge_ms": edge, "total_ms": total,
                   "payload_bytes": self.client.last_payload_bytes}


def summarize(records: list[dict], wall_s: float) -> dict:
    """Median, p90 and p99 of each component and the end-to-end throughput."""
    out = {"requests": len(records), "throughput_rps": len(records) / wall_s if wall_s > 0 else None}
    for k in ("total_ms", "device_ms", "transfer_ms", "edge_ms"):
        a = np.array([r[k] for r in records])
        out[k] = {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
                  "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    out["payload_bytes"] = records[0]["payload_bytes"] if records else 0
    return out


def inputs(bundle: Bundle, images: str | None, count: int, seed: int = 0):
    """``count`` inputs: images from a folder (cycled), else random tensors of the input's shape."""
    inp = bundle.inputs[0]
    if images:
        from tlcut.models.images import load_folder

        arrays = load_folder(images, inp["shape"], inp.get("layout") or "NHWC", inp["dtype"])
        return [arrays[i % len(arrays)] for i in range(count)]
    rng = np.random.default_rng(seed)
    return [rng.random(inp["shape"]).astype(inp["dtype"]) for _ in range(count)]


def run(device: Device, xs: list[np.ndarray], warmup: int = 3, on_record=None) -> tuple[list[dict], dict]:
    """Run ``xs`` through the plan after ``warmup`` untimed requests; per-request records and a summary."""
    for x in xs[:warmup]:
        device.infer(x)
    records = []
    t0 = time.perf_counter()
    for i, x in enumerate(xs[warmup:]):
        _, rec = device.infer(x)
        rec["i"] = i
        records.append(rec)
        if on_record:
            on_record(rec)
    wall = time.perf_counter() - t0
    if not records:
        raise TlcutError("no request was timed; ask for more --requests than --warmup")
    return records, summarize(records, wall)


def format_summary(label: str, s: dict) -> str:
    rows = [f"{label}: {s['requests']} requests, {s['throughput_rps']:.2f} req/s, payload {s['payload_bytes']} B",
            "             median      p90      p99   (ms)"]
    for k, name in (("total_ms", "end-to-end"), ("device_ms", "device"), ("transfer_ms", "transfer"), ("edge_ms", "edge")):
        rows.append(f"  {name:<10} {s[k]['median']:8.2f} {s[k]['p90']:8.2f} {s[k]['p99']:8.2f}")
    return "\n".join(rows)
