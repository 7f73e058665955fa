"""`tlcut run`: the device. Runs the head, sends what crosses the cut, waits for the result.

Each request's latency is split into device compute (head, with the DeviceTL where used), edge
time (what the edge reports it spent, from receipt to reply), and transfer (the rest: encoding,
the network both ways, decoding). ``--cut device`` runs the whole model on the device and
``--cut input`` sends the input to the edge, so the same command measures every placement.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import numpy as np

from tlcut.bundle import Bundle
from tlcut import encodings
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, SPLIT, Placement
from tlcut.runtime import backends
from tlcut.runtime import protocol as P
from tlcut.runtime.client import DEFAULT_TIMEOUT_S, EdgeClient, EdgeError, EdgeUnavailable
from tlcut.stats import summary


def connect(endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 0, curve=None,
            insecure: bool = False):
    """The client for ``endpoint``'s scheme: tlcut's ZeroMQ edge (tcp://, ipc://) or a Triton server
    (triton+grpc://, triton+http://; runtime/triton.py). Both have EdgeClient's surface. It lives
    here, with the device that picks it, so that runtime/triton.py can build on runtime/client.py
    without a cycle."""
    if endpoint.split("://", 1)[0].startswith("triton+"):
        from tlcut.runtime.triton import TritonClient

        if curve is not None:
            raise TlcutError(f"CURVE keys are for tlcut's ZeroMQ edge; {endpoint} is Triton: drop --key/--edge-key "
                             f"(secure Triton with TLS at its load balancer, docs/triton.md)")
        return TritonClient(endpoint, timeout_s, retries=retries)
    return EdgeClient(endpoint, timeout_s, retries=retries, curve=curve, insecure=insecure)


class Device:
    """The device side of one placement: the head's runner, the link to the edge, and the fallback.

    With ``fallback`` (on by default: every bundle holds the full model) a request the edge does
    not answer within the retry budget runs the whole model here instead, and says so in its
    record; while the edge is away a cheap PING is tried every ``probe_s`` seconds, and offloading
    resumes as soon as the edge answers.
    """

    def __init__(self, bundle: Bundle, placement: Placement | str, *, tl: bool = False, encoding: str = "raw",
                 edge: str | None = None, backend: str = backends.DEFAULT, threads: int | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 0, fallback: bool = False,
                 probe_s: float = 2.0, curve=None, insecure: bool = False, slowdown: float = 1.0,
                 precision: str = "float32"):
        if slowdown < 1.0:
            raise TlcutError(f"--slowdown stretches the device's compute and must be at least 1, got {slowdown:g}")
        self.slowdown = slowdown
        if not isinstance(placement, Placement):
            placement = Placement.resolve(bundle, placement, tl, encoding)
        self.placement = placement
        self._be, self._threads, self.precision = backends.get(backend), threads, precision
        self.bundle = bundle
        self.input = bundle.inputs[0]
        self.fallback, self.probe_s = fallback, probe_s
        # fell_back: requests the edge did not answer; ran_here_instead: every request meant for the
        # edge that ran here (those too that ran while it was away, untried)
        self.counts = {"requests": 0, "offloaded": 0, "local": 0, "fell_back": 0, "ran_here_instead": 0,
                       "failed": 0, "edge_switches": 0}
        self._away_since: float | None = None
        self._last_probe = 0.0
        self._local = None
        self.runner = None
        if placement.where == DEVICE:
            self.runner = self._be.runner(bundle.runnable("model", engine=self._be.name, precision=precision),
                                          threads=threads)
        elif placement.where == SPLIT:
            path = bundle.runnable("head", placement.cut, placement.tl, self._be.name, precision)
            self.runner = self._be.runner(path, threads=threads)
        if placement.offloads and not edge:
            raise TlcutError(f"{placement.label} needs an edge: pass --edge tcp://HOST:PORT")
        # The uint8 and JPEG encodings send pixels; the header carries how they map to the input.
        self._enc_kw = {}
        if encodings.get(placement.encoding).pixels:
            scale, zp = bundle.pixels
            self._enc_kw = {"scale": scale, "zero_point": zp}
        if placement.quality is not None:
            self._enc_kw["quality"] = placement.quality
        # Several edges (EP1,EP2,...): one in use; where it stops answering, the next is tried before the fallback.
        self.edges = [e.strip() for e in str(edge).split(",") if e.strip()] if edge else []
        self._edge_i = 0
        self._connect_kw = dict(timeout_s=timeout_s, retries=retries, curve=curve, insecure=insecure)
        self.client = connect(self.edges[0], **self._connect_kw) if placement.offloads else None
        if self.runner:
            self.runner.slowdown = slowdown
            self.runner.activate()

    def close(self):
        for r in (self.runner, self._local):
            if r:
                r.deactivate()
        if self.client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def edge_away(self) -> bool:
        return self._away_since is not None

    def retry_edge(self) -> None:
        """Send the next request to the edge, not here untried: for a caller that knows the last
        timeout meant a slow link, not a dead edge (an adaptive run, which bounds every wait)."""
        self._away_since = None

    @property
    def engine_key(self) -> tuple:
        return self._be.name, self.precision, self._threads

    def local_runner(self, share=None):
        """The whole model here, which device only runs and every placement falls back to: loaded on
        first use, or now (an adaptive run loads it up front, so no fallback pays a cold start);
        ``share``: a runner of the same engine already loaded, used instead of another copy."""
        if self._local is None:
            if share is not None:
                self._local = share
            elif self.placement.where == DEVICE:
                self._local = self.runner
            else:
                local = self.bundle.find("model", engine=self._be.name, precision=self.precision)  # else float32
                self._local = self._be.runner(
                    self.bundle.path / local.file if local else self.bundle.runnable("model", engine=self._be.name),
                    threads=self._threads)
            self._local.slowdown = self.slowdown
            self._local.activate()
        return self._local

    def _run_local(self, x, t0, fell_back: bool, stop=None):
        y = next(iter(self.local_runner().infer({self.input["name"]: x}, stop=stop).values()))
        return y, self._local_record(t0, fell_back)

    def _local_record(self, t0: float, fell_back: bool) -> dict:
        dev = (time.perf_counter() - t0) * 1e3
        self.counts["local"] += 1
        self.counts["ran_here_instead"] += int(fell_back)
        return {"device_ms": dev, "transfer_ms": 0.0, "edge_ms": 0.0, "total_ms": dev, "payload_bytes": 0,
                "fallback": fell_back}

    def infer(self, x: np.ndarray, fallback: bool | None = None, hedge_ms: float | None = None,
              idle=None, stop: threading.Event | None = None) -> tuple[np.ndarray, dict]:
        """The model's output for ``x`` and where the time went (ms). ``fallback``: this request's
        (default: the device's); a probe that must not run here says False. ``hedge_ms``: with the
        fallback, hedge the request (``_hedged``) after that long without the edge's answer.
        ``idle``: called once a hedged request is sent, while the edge works: the caller's own work
        then costs no head its CPU (on a quota'd device, CPU spent just before a head delays it by
        several times as much). ``stop``: device only's run, set (with the runner's ``cancel``) by a
        caller that got the answer elsewhere first; the run then raises."""
        fallback = self.fallback if fallback is None else fallback
        t0 = time.perf_counter()
        self.counts["requests"] += 1
        p = self.placement
        if p.where == DEVICE:
            return self._run_local(x, t0, False, stop)
        if self.edge_away and not self._edge_back():
            return self._run_local(x, t0, True)
        payload, cut_id, flags = self._payload(x)
        t1 = time.perf_counter()
        if hedge_ms is not None and fallback and self.can_hedge:
            return self._hedged(x, payload, cut_id, flags, t0, t1, hedge_ms, idle)
        try:
            y, h = self._request(payload, cut_id, flags)
        except EdgeUnavailable:
            if not fallback:
                self.counts["failed"] += 1
                raise
            self._away_since = self._last_probe = time.monotonic()
            self.counts["fell_back"] += 1
            return self._run_local(x, t0, True)
        except EdgeError:
            self.counts["failed"] += 1
            raise
        return y, self._record(t0, t1, h, self.client.last_payload_bytes)

    def _hedged(self, x, payload, cut_id: int, flags: int, t0: float, t1: float, hedge_ms: float, idle=None):
        """Send; where no answer has come ``hedge_ms`` after, run the whole model here beside the wait
        and take the first answer: the local run is cancelled, or the edge's request dropped with
        its socket. A request then waits at most that plus the local run, and one the edge answers
        late but before the local run ends loses nothing (a timeout would have thrown it away).
        The record says ``hedged``, and where the local run won, how long the edge had (``waited_ms``)."""
        c = self.client
        try:
            rid = c.send(payload, cut_id, flags, self.placement.encoding, **self._enc_kw)
            nbytes = c.last_payload_bytes
            if idle is not None:
                idle()
            got = c.poll_reply(rid, max(0.0, hedge_ms / 1e3 - (time.perf_counter() - t1)))
        except EdgeUnavailable:  # could not even send: as a timeout would
            c.abandon()
            self.counts["fell_back"] += 1
            return self._run_local(x, t0, True)
        except EdgeError:
            self.counts["failed"] += 1
            raise
        if got is not None:
            return got[0], self._record(t0, t1, got[1], nbytes)
        runner, box, done, stop = self.local_runner(), {}, threading.Event(), threading.Event()

        def cancel():  # the event too: the thread may not have started its run yet
            stop.set()
            runner.cancel()

        def local():
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread: the reply's goes first
            except (AttributeError, OSError):
                pass
            try:
                box["y"] = next(iter(runner.infer({self.input["name"]: x}, stop=stop).values()))
            except Exception as e:  # noqa: BLE001 - a cancelled run raises too; judged below
                box["error"] = e
            finally:
                done.set()

        th = threading.Thread(target=local, name="tlcut-hedge", daemon=True)
        th.start()
        try:
            while got is None and not done.is_set():
                got = c.poll_reply(rid, 0.005)
            if got is None and "error" in box:  # the local run failed: the edge has what is left of the timeout
                got = c.poll_reply(rid, max(0.0, t1 + c.timeout_s - time.perf_counter()))
                if got is None:
                    raise box["error"]
        except BaseException as e:
            cancel()
            th.join()
            if isinstance(e, EdgeError):
                self.counts["failed"] += 1
            c.abandon()
            raise
        if got is None:  # the local run answered first
            c.abandon()
            self.counts["fell_back"] += 1
            y, rec = box["y"], self._local_record(t0, True)
            rec.update(hedged=True, waited_ms=(time.perf_counter() - t1) * 1e3)
            return y, rec
        rec = self._record(t0, t1, got[1], nbytes)
        rec["hedged"] = True
        cancel()
        th.join()
        rec["cancel_ms"] = (time.perf_counter() - t0) * 1e3 - rec["total_ms"]
        return got[0], rec

    def _request(self, payload, cut_id: int, flags: int):
        """The request on the edge in use; where it does not answer, on each other edge in turn."""
        for tried in range(len(self.edges)):
            try:
                return self.client.request(payload, cut_id, flags, self.placement.encoding, **self._enc_kw)
            except EdgeUnavailable:
                if tried == len(self.edges) - 1:
                    raise
                self.client.close()
                self._edge_i = (self._edge_i + 1) % len(self.edges)
                self.client = connect(self.edges[self._edge_i], **self._connect_kw)
                self.counts["edge_switches"] += 1
        raise AssertionError("unreachable")

    @property
    def can_hedge(self) -> bool:
        """Whether ``infer`` can hedge: a ZeroMQ edge, which waits in slices (Triton's client cannot),
        and only one (with several, the plain path tries each in turn before the fallback)."""
        return isinstance(self.client, EdgeClient) and len(self.edges) == 1

    @property
    def edge(self) -> str | None:
        """The edge endpoint in use."""
        return self.edges[self._edge_i] if self.edges else None

    def _payload(self, x):
        """What crosses for ``x``: the input itself (edge only) or the head's output, and its ids."""
        p = self.placement
        if p.where == EDGE:
            return x, P.INPUT_CUT, 0
        return next(iter(self.runner.infer({self.input["name"]: x}).values())), p.cut, (P.FLAG_TL if p.tl else 0)

    def _record(self, t0: float, t1: float, h: P.Header, nbytes: int) -> dict:
        """Where an offloaded request's time went: head (t0..t1), the edge's own time, the rest on the link."""
        self.counts["offloaded"] += 1
        dev, total, edge = (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3, h.server_us / 1e3
        return {"device_ms": dev, "transfer_ms": total - dev - edge, "edge_ms": edge, "total_ms": total,
                "payload_bytes": nbytes, "fallback": False}

    def pipeline(self, xs, inflight: int):
        """Yield (output, record) for each of ``xs`` in order, with up to ``inflight`` requests in
        flight: the head of frame i+1 runs while frame i crosses the link and the edge serves it.
        A frame's time runs from its head's start to its reply, so it includes waiting behind the
        frames ahead of it. If the edge stops answering, the frames in flight run here (fallback)."""
        p = self.placement
        if p.where == DEVICE or inflight <= 1:
            for x in xs:
                yield self.infer(x)
            return
        queue = collections.deque()
        for x in xs:
            if self.edge_away and not self._edge_back():
                while queue:
                    yield self._collect(*queue.popleft())
                t0 = time.perf_counter()
                self.counts["requests"] += 1
                yield self._run_local(x, t0, True)
                continue
            t0 = time.perf_counter()
            self.counts["requests"] += 1
            payload, cut_id, flags = self._payload(x)
            t1 = time.perf_counter()
            rid = self.client.send(payload, cut_id, flags, p.encoding, **self._enc_kw)
            queue.append((x, t0, t1, rid, self.client.last_payload_bytes))
            if len(queue) >= inflight:
                yield self._collect(*queue.popleft())
        while queue:
            yield self._collect(*queue.popleft())

    def _collect(self, x, t0, t1, rid, nbytes):
        try:
            if self.edge_away:  # the socket went away with this request: run it here
                raise EdgeUnavailable("the edge stopped answering")
            y, h = self.client.receive(rid)
        except EdgeUnavailable:
            if not self.fallback:
                self.counts["failed"] += 1
                raise
            if not self.edge_away:
                self._away_since = self._last_probe = time.monotonic()
            self.counts["fell_back"] += 1
            return self._run_local(x, time.perf_counter(), True)
        except EdgeError:
            self.counts["failed"] += 1
            raise
        return y, self._record(t0, t1, h, nbytes)

    def _edge_back(self) -> bool:
        """While the edge is away, ping it at most every ``probe_s`` seconds."""
        now = time.monotonic()
        if now - self._last_probe < self.probe_s:
            return False
        self._last_probe = now
        try:
            self.client.ping(timeout_s=min(1.0, self.client.timeout_s))
        except EdgeUnavailable:
            return False
        self._away_since = None
        return True

    def report(self) -> dict:
        c = dict(self.counts)
        if self.client:
            c.update(retried=self.client.retried, dropped_replies=self.client.dropped)
        return c


#: `tlcut run`'s exit status where no request reached the edge: every one meant for it ran on the
#: device by the fallback. Not 0, so a script or CI never takes a dead edge for a measurement.
EXIT_EDGE_UNREACHED = 3


def edge_outcome(counts: dict) -> tuple[int, int]:
    """(requests the edge answered, requests meant for it that ran on the device instead) of a
    run's counts: one Device's report, or an adaptive run's, summed over its placements."""
    parts = list(counts["per_placement"].values()) if "per_placement" in counts else [counts]
    return sum(c.get("offloaded", 0) for c in parts), sum(c.get("ran_here_instead", 0) for c in parts)


def edge_verdict(counts: dict, edge: str | None) -> tuple[int, str | None]:
    """(exit status, what to say on stderr) of a run against ``edge``: an error where no request
    reached it, a warning where some fell back, nothing where every one was answered."""
    answered, instead = edge_outcome(counts)
    if not instead:
        return 0, None
    if not answered:
        return EXIT_EDGE_UNREACHED, (
            f"tlcut: error: no request reached the edge at {edge}: all {instead} ran on this device instead "
            f"(--fallback on), so these timings are the device's alone; is `tlcut serve` running there and "
            f"reachable? (exit {EXIT_EDGE_UNREACHED})")
    return 0, (f"tlcut: warning: {instead} of {answered + instead} requests fell back to this device: the edge at "
               f"{edge} did not answer them")


def summarize(records: list[dict], wall_s: float) -> dict:
    """Median, p90 and p99 of each component and the end-to-end throughput."""
    out = {"requests": len(records), "throughput_rps": len(records) / wall_s if wall_s > 0 else None}
    for k in ("total_ms", "device_ms", "transfer_ms", "edge_ms"):
        out[k] = summary([r[k] for r in records])
    # the median over the requests that crossed, as bench and the plan count a JPEG's bytes: the
    # first request's payload is one image's, and a fallback sends nothing
    sent = [r["payload_bytes"] for r in records if r["payload_bytes"] and not r.get("fallback")]
    out["payload_bytes"] = int(round(float(np.median(sent)))) if sent else 0
    return out


def inputs(bundle: Bundle, images: str | None, count: int, seed: int = 0):
    """``count`` inputs: images from a folder, or 'elpv' for the embedded solar-cell images at the
    input's size (cycled; what a JPEG's size and cost depend on), else random tensors of the input's shape."""
    inp = bundle.inputs[0]
    if images == "elpv":
        return [image_input(bundle, im) for im in elpv_images(bundle, count, seed)]
    if images:
        from tlcut.models.images import load_folder

        arrays = load_folder(images, inp["shape"], inp.get("layout") or "NHWC", inp["dtype"])
        return [arrays[i % len(arrays)] for i in range(count)]
    rng = np.random.default_rng(seed)
    return [rng.random(inp["shape"]).astype(inp["dtype"]) for _ in range(count)]


def default_images(bundle: Bundle) -> str | None:
    """'elpv' where elpv-dataset is installed and the input is an image, else None (random tensors).
    Real pictures matter wherever a JPEG is sent: a JPEG of noise is about ten times larger."""
    import importlib.util

    if importlib.util.find_spec("elpv_dataset") is None:
        return None
    try:
        bundle.image_shape()
    except TlcutError:
        return None
    return "elpv"


def elpv_images(bundle: Bundle, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` uint8 (H, W, C) solar-cell images at the bundle's input size, test split first."""
    from tlcut.models import datasets

    h, w, c, _ = bundle.image_shape()
    if h != w:
        raise TlcutError(f"the embedded ELPV images are square; the input is {h}x{w}: pass --images DIR")
    d = datasets.load("elpv", size=h, channels=c, seed=seed, limit=max(count * 2, 64))  # small limits leave a split empty
    pool = np.concatenate([d.test.x, d.val.x, d.train.x])
    return [pool[i % len(pool)] for i in range(count)]


def image_input(bundle: Bundle, image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, C) image as the model's input tensor: the bundle's pixel mapping and layout."""
    _, _, _, layout = bundle.image_shape()
    scale, zp = bundle.pixels
    x = (image.astype(np.float32) - np.float32(zp)) * np.float32(scale)
    x = x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x, dtype=bundle.inputs[0]["dtype"])


def run(device: Device, xs: list[np.ndarray], warmup: int = 3, on_record=None,
        inflight: int = 1) -> tuple[list[dict], dict]:
    """Run ``xs`` through the device's placement after ``warmup`` untimed requests; per-request records and a summary."""
    for x in xs[:warmup]:
        device.infer(x)
    records = []
    t0 = time.perf_counter()
    stream = device.pipeline(xs[warmup:], inflight) if inflight > 1 else (device.infer(x) for x in xs[warmup:])
    for i, (_, rec) in enumerate(stream):
        rec["i"] = i
        rec.setdefault("t_s", time.perf_counter() - t0)
        records.append(rec)
        if on_record:
            on_record(rec)
    wall = time.perf_counter() - t0
    if not records:
        raise TlcutError("no request was timed; ask for more --requests than --warmup")
    return records, summarize(records, wall)


def format_summary(label: str, s: dict) -> str:
    rows = [f"{label}: {s['requests']} requests, {s['throughput_rps']:.2f} req/s, median payload {s['payload_bytes']} B",
            "             median      p90      p99   (ms)"]
    for k, name in (("total_ms", "end-to-end"), ("device_ms", "device"), ("transfer_ms", "transfer"), ("edge_ms", "edge")):
        rows.append(f"  {name:<10} {s[k]['median']:8.2f} {s[k]['p90']:8.2f} {s[k]['p99']:8.2f}")
    c = s.get("counts")
    if c and (c.get("retried") or c.get("fell_back") or c.get("failed") or c.get("dropped_replies")):
        rows.append(f"  offloaded {c['offloaded']}, ran locally {c['local']} (fell back {c['fell_back']}), "
                    f"retried {c.get('retried', 0)}, failed {c['failed']}, late replies dropped {c.get('dropped_replies', 0)}")
    return "\n".join(rows)
