"""The edge's core: one ROUTER socket, every check of a request, and the replies.

It answers each request with the tail its (cut, flags) key names, from ``runners``, which the
edge's assembly fills (runtime/serve.py, from a bundle). A bad request gets an ERROR reply with a
code (docs/protocol.md), is logged and counted, and the edge goes on serving the others. Requests
are handled one at a time, the engine using the edge's cores for each; the pieces beside this one
change that without touching the core: a ``batcher`` (runtime/batching.py) gathers requests and
runs those for one tail as a batch, a ``forwarder`` (runtime/forward.py) hands each result to a
next tier, and a tiled runner (runtime/tiles.py) is one more runner. Metrics and health are
served over HTTP as Triton serves them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import numpy as np

from tlcut.errors import TlcutError
from tlcut.runtime import protocol as P
from tlcut.runtime.security import require_policy

log = logging.getLogger("tlcut.edge")

DEFAULT_MAX_MESSAGE = 256 << 20


#: Connections whose last request id an edge remembers (replay refusal); past that the one used
#: least recently is forgotten (docs/protocol.md, the C edge does the same).
REPLAY_TABLE = 4096


#: Frames of every message of the protocol, after the ROUTER's identity: header and payload.
FRAMES = 2


class Frames(list):
    """The frames of one message as the edge keeps them: at most ``FRAMES``, those past them
    released as they were read. ``count`` and ``nbytes`` are the whole message's, for the size
    limit and the frame-count rule."""

    def __init__(self, frames=(), count: int | None = None, nbytes: int | None = None):
        super().__init__(frames)
        self.count = len(self) if count is None else count
        self.nbytes = sum(len(P._buffer(f)) for f in self) if nbytes is None else nbytes


def receive(sock, flags: int = 0):
    """(identity, Frames) of the next message on a ROUTER socket, read one frame at a time so that
    a message of many frames is never held whole here: libzmq has assembled it (a ROUTER delivers
    a message once all of it has arrived; ZMQ_MAXMSGSIZE caps each frame, ZMQ_RCVHWM the messages
    queued per peer), and each frame past the protocol's two is counted and dropped as it is read.
    Raises zmq.Again with ``flags`` zmq.NOBLOCK when nothing waits."""
    ident = sock.recv(flags, copy=False)
    kept, count, nbytes, more = [], 0, 0, ident.more
    while more:
        f = sock.recv(copy=False)
        more = f.more
        count += 1
        nbytes += len(f.buffer)
        if len(kept) < FRAMES:
            kept.append(f)
        # else: dropped here, its memory released before the next frame is read
    return ident, Frames(kept, count, nbytes)


class _Job(NamedTuple):
    """A request that passed every check: what the engine runs, and the ids its reply carries."""

    rid: int
    cut_id: int
    flags: int
    key: tuple[int, int]
    tensor: np.ndarray


class EdgeCore:
    """The tails an edge serves, keyed by (cut_id, flags), and everything between the socket and
    them. ``batcher`` and ``forwarder`` are the optional pieces (None: one request at a time, the
    result returned to the device)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE):
        self.max_message_bytes = max_message_bytes
        self.runners: dict[tuple[int, int], object] = {}
        self.batcher = None  # a batching.Batcher where requests are batched
        self.forwarder = None  # a forward.Forwarder where results go on to a next tier
        self.stats = collections.Counter()
        self.zap = None  # the CURVE allow-list's handler while serving encrypted (security.ZapHandler)
        self.errors = collections.Counter()
        self.latency_us: collections.deque = collections.deque(maxlen=10000)
        self.last_rid: collections.OrderedDict = collections.OrderedDict()  # peer -> last request id
        self.started = time.time()
        self.ready = False
        self.endpoint: str | None = None

    @property
    def batched(self) -> dict:
        """key -> (runner, input name, static batch or None for a symbolic one) of the batched tails."""
        return self.batcher.tails if self.batcher is not None else {}

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch if self.batcher is not None else 1

    def warm(self) -> None:
        """Activate every runner and run it once untimed, so the first request does not pay for
        lazy initialisation; the batcher warms its batched tail of each beside it."""
        for key, r in self.runners.items():
            r.activate()
            if hasattr(r, "warm"):
                r.warm()  # a tiled segment warms what it runs itself: its nodes may not be up yet
            else:
                r.infer({k: np.zeros(s, d) for k, (d, s) in r.input_metadata().items()}, check=False)
            if self.batcher is not None:
                self.batcher.warm(key, r)

    def describe(self) -> str:
        parts = []
        for (cut, flags), r in sorted(self.runners.items()):
            (name, (dtype, shape)), = r.input_metadata().items()
            what = describe_key(cut, flags).removeprefix("the ")
            tiled = getattr(r, "cfg", None)
            if tiled is not None:
                what += f" in {len(tiled.workers)} bands ({', '.join(tiled.workers)})"
            parts.append(f"{what} ({dtype.name}{list(shape)})")
        return ", ".join(parts)

    def close(self) -> None:
        for r in [*self.runners.values(), *(b[0] for b in self.batched.values())]:
            r.deactivate()
        if self.forwarder is not None:
            self.forwarder.close()

    def _check_replay(self, peer, rid: int) -> None:
        if peer is None:
            return
        last = self.last_rid.get(peer)
        if last is not None and rid <= last:
            raise P.ProtocolError(P.E_REPLAY, f"request id {rid} is not above {last}, the last one on this connection")
        self.last_rid[peer] = rid
        self.last_rid.move_to_end(peer)
        while len(self.last_rid) > REPLAY_TABLE:
            self.last_rid.popitem(last=False)

    def handle(self, frames, peer=None) -> list:
        """Reply frames for one request's frames (without the ROUTER identity); ``peer`` is the
        connection's identity, for replay checks. Never raises: whatever goes wrong with one
        request is that request's ERROR reply, and the edge goes on serving."""
        t0 = time.perf_counter()
        try:
            return self._handle(frames, peer, t0)
        except Exception as e:  # a bug of ours, not the device's: still one reply, logged with its traceback
            log.exception("request failed inside the edge")
            self.errors[P.ERRORS[P.E_INTERNAL]] += 1
            return P.error_frames(0, P.E_INTERNAL, f"internal error: {type(e).__name__}",
                                  server_us=int((time.perf_counter() - t0) * 1e6))

    def _handle(self, frames, peer, t0) -> list:
        return self.handle_batch([(frames, peer, t0)])[0]

    def handle_batch(self, requests) -> list:
        """Reply frames for each (frames, peer, receipt time) of ``requests``, in order. Each request
        is validated alone, so a bad one gets its own ERROR and the others are unaffected; the good
        ones for the same tail (cut, TL flag) run as one batch. Never raises."""
        replies: list = [None] * len(requests)
        groups: dict[tuple[int, int], list] = {}
        for i, (frames, peer, t0) in enumerate(requests):
            try:
                job = self._validate(frames, peer)
            except Exception as e:
                replies[i] = self._failed(e, t0)
                continue
            if isinstance(job, _Job):
                groups.setdefault(job.key, []).append((i, job, t0))
            else:
                replies[i] = job  # a PONG
        for key, members in groups.items():
            try:
                results = self._run(key, [job.tensor for _, job, _ in members])
            except Exception as e:
                for i, job, t0 in members:
                    replies[i] = self._failed(e, t0, job)
                continue
            for (i, job, t0), result in zip(members, results):
                self.stats["ok"] += 1
                us = int((time.perf_counter() - t0) * 1e6)
                self.latency_us.append(us)
                replies[i] = P.tensor_frames(P.RESULT, result, job.rid, job.cut_id, job.flags & P.FLAG_TL, server_us=us)
        return replies

    def _validate(self, frames, peer) -> "_Job | list":
        """Every check of one request, in one place for both paths: the job to run, or the reply
        frames of a PING. A bad request raises ProtocolError, carrying its header once parsed."""
        frames = frames if isinstance(frames, Frames) else Frames(frames)
        if frames.nbytes > self.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"message of {frames.nbytes} bytes exceeds this edge's limit of "
                                                 f"{self.max_message_bytes}")
        if frames.count != len(frames):  # frames past the protocol's were dropped as they were read
            raise P.ProtocolError(P.E_BAD_FRAME, f"message has {frames.count} frames, expected {FRAMES} (header, payload)")
        h, tensor = P.decode(frames)
        try:
            rid, cut_id, flags = h.request_id, h.cut_id, h.flags
            if h.type == P.PING:
                self.stats["ping"] += 1
                return [P.Header(type=P.PONG, request_id=rid).pack(), b""]
            if h.type != P.REQUEST:
                raise P.ProtocolError(P.E_BAD_TYPE, f"an edge takes REQUEST or PING, got {P.TYPES[h.type]}", h)
            if tensor is None:
                raise P.ProtocolError(P.E_WRONG_TENSOR, "a REQUEST must carry a tensor; dtype 0 (none) is not one", h)
            self._check_replay(peer, rid)
            key = (cut_id, flags & P.KEY_FLAGS)
            runner = self.runners.get(key)
            if runner is None:
                raise P.ProtocolError(P.E_WRONG_CUT, f"this edge does not serve {describe_key(cut_id, flags)}; it serves {self.describe()}")
            (name, (dtype, shape)), = runner.input_metadata().items()
            tensor = P.restore(h, tensor, tuple(shape))  # a JPEG is checked against the served shape
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise P.ProtocolError(P.E_WRONG_TENSOR, f"{describe_key(cut_id, flags)} takes {dtype.name}{list(shape)}, "
                                                        f"got {tensor.dtype.name}{list(tensor.shape)}")
            return _Job(rid, cut_id, flags, key, tensor)
        except P.ProtocolError as e:
            e.header = e.header or h  # the header parsed: the ERROR answers with its ids
            raise

    def _run(self, key, tensors: list) -> list:
        """The result of each tensor for ``key``: what this edge computes, or, for an edge that
        forwards, the next tier's answer to it."""
        outs = self._infer(key, tensors)
        return [self.forwarder(y) for y in outs] if self.forwarder is not None else outs

    def _infer(self, key, tensors: list) -> list:
        """One engine run per request, or, for a tail the batcher holds a batched build of, per batch."""
        runner = self.runners[key]
        name = next(iter(runner.input_metadata()))
        batched = self.batched.get(key) if len(tensors) > 1 else None
        try:
            if batched is None:
                self.stats["batches"] += len(tensors)
                return [next(iter(runner.infer({name: t}, check=False).values())) for t in tensors]
            return self.batcher.infer(batched, tensors, self.stats)
        except P.ProtocolError:
            raise  # a tiled segment's node failed: its own cause
        except Exception as e:  # the engine itself failed on well-formed requests
            raise P.ProtocolError(P.E_INTERNAL, f"inference failed: {str(e).splitlines()[0][:300]}") from None

    def _failed(self, e: Exception, t0: float, job: "_Job | None" = None) -> list:
        """The ERROR reply for ``e``, logged and counted; anything but a ProtocolError is a bug of ours."""
        rid, cut_id, flags = (job.rid, job.cut_id, job.flags) if job else (0, P.INPUT_CUT, 0)
        if not isinstance(e, P.ProtocolError):
            log.error("request failed inside the edge", exc_info=e)
            e = P.ProtocolError(P.E_INTERNAL, f"internal error: {type(e).__name__}")
        elif e.header is not None:  # the header parsed; answer with its ids
            rid, cut_id, flags = e.header.request_id, e.header.cut_id, e.header.flags
        self.errors[P.ERRORS[e.code]] += 1
        log.warning("request %d (%s): %s: %s", rid, describe_key(cut_id, flags), P.ERRORS[e.code], e)
        us = int((time.perf_counter() - t0) * 1e6)
        return P.error_frames(rid, e.code, str(e), cut_id, server_us=us, flags=flags)

    def serve(self, endpoint: str, stop: threading.Event | None = None, ready: threading.Event | None = None,
              max_requests: int | None = None, curve=None, insecure: bool = False, max_queue: int = 64,
              metrics_port: int | None = None, max_queue_delay_us: int = 500) -> None:
        """Answer requests on ``endpoint`` until ``stop`` is set, SIGINT/SIGTERM, or ``max_requests``.

        ``curve`` (a security.ServerCurve) encrypts the link and admits only listed devices; without
        it, a non-loopback endpoint needs ``insecure``. Each connection may queue ``max_queue``
        messages (ZeroMQ's receive high-water mark, so a flooding device is held back by TCP, not
        buffered here); ZeroMQ fair-queues between connections, so one device cannot starve the
        others. Frames over 4x the size limit are cut off by ZeroMQ itself, before any memory is
        spent on them; messages over the limit get an error reply, and so do messages of more
        frames than the protocol's, whose extra frames are dropped as they are read (``receive``). The metrics server listens on the
        host of ``endpoint`` only. A port of ``*`` binds any free port; ``self.endpoint`` says which.
        With ``max_batch`` above 1, the first request of a batch waits at most ``max_queue_delay_us``
        for others to arrive (Triton's max_queue_delay_microseconds).
        """
        import zmq

        require_policy(endpoint, curve, insecure, "edge")
        if max_queue_delay_us < 0:
            raise TlcutError(f"--max-queue-delay-us cannot be negative, got {max_queue_delay_us}")
        with contextlib.ExitStack() as undo:
            http = _start_http(self, _host_of(endpoint), metrics_port) if metrics_port is not None else None
            if http:
                undo.callback(http.server_close)
                undo.callback(http.shutdown)
            ctx = zmq.Context.instance()
            sock = ctx.socket(zmq.ROUTER)
            undo.callback(sock.close)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
            sock.setsockopt(zmq.RCVHWM, max_queue)
            # as many replies as requests may wait for one device, or ROUTER drops the excess silently
            sock.setsockopt(zmq.SNDHWM, max(max_queue, 1000))
            sock.setsockopt(zmq.MAXMSGSIZE, min(4 * self.max_message_bytes + 4096, 2**62))
            if curve:
                self.zap = curve.apply(ctx, sock)
                undo.callback(self.zap.stop)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as e:
                raise TlcutError(f"cannot listen on {endpoint}: {e}; is another edge already there?") from None
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            stop = stop or threading.Event()
            undo.callback(_stop_on_signals(stop))
            log.info("serving %s on %s (%s)", self.describe(), self.endpoint, "CURVE" if curve else "plain TCP")
            if self.batcher is not None:
                log.info("batching up to %d requests per run, the first waiting at most %d us for company",
                         self.max_batch, max_queue_delay_us)
            self.ready = True
            if ready:
                ready.set()
            handled = 0
            try:
                while not stop.is_set() and (max_requests is None or handled < max_requests):
                    if not sock.poll(100):
                        continue
                    if self.batcher is not None:
                        room = self.max_batch if max_requests is None else min(self.max_batch, max_requests - handled)
                        batch = self.batcher.gather(sock, room, max_queue_delay_us * 1e-6, self.stats)
                        try:
                            replies = self.handle_batch([(f, ident.bytes, t) for ident, f, t in batch])
                        except Exception as e:  # a bug of ours: every request still gets one reply
                            replies = [self._failed(e, t) for _, _, t in batch]
                        for (ident, _, _), reply in zip(batch, replies):
                            _send(sock, ident, reply)
                        handled += len(batch)
                        continue
                    ident, body = receive(sock)
                    self.stats["messages"] += 1
                    _send(sock, ident, self.handle(body, peer=ident.bytes))
                    handled += 1
            finally:
                self.ready = False
                log.info("stopped after %d messages: %d ok in %d engine runs, errors %s", handled, self.stats["ok"],
                         self.stats["batches"], dict(self.errors) or "none")

    def metrics(self) -> str:
        """Prometheus text format, after Triton's metrics endpoint."""
        lines = ["# HELP tlcut_edge_requests_total Requests answered with a result.",
                 "# TYPE tlcut_edge_requests_total counter", f"tlcut_edge_requests_total {self.stats['ok']}",
                 "# HELP tlcut_edge_pings_total Health pings answered.", "# TYPE tlcut_edge_pings_total counter",
                 f"tlcut_edge_pings_total {self.stats['ping']}",
                 "# HELP tlcut_edge_errors_total Requests answered with an error, by kind.",
                 "# TYPE tlcut_edge_errors_total counter"]
        errors_at = len(lines)
        for code, name in P.ERRORS.items():
            lines.append(f'tlcut_edge_errors_total{{kind="{name.replace(" ", "_")}"}} {self.errors[name]}')
        lines[errors_at:errors_at] = [
            "# HELP tlcut_edge_batches_total Engine runs that answered requests; requests_total / batches_total "
            "is the mean batch size (Triton's nv_inference_count / nv_inference_exec_count).",
            "# TYPE tlcut_edge_batches_total counter", f"tlcut_edge_batches_total {self.stats['batches']}"]
        lines += ["# HELP tlcut_edge_request_duration_us Time from receipt to reply of the last 10000 results.",
                  "# TYPE tlcut_edge_request_duration_us summary"]
        lat = np.array(self.latency_us) if self.latency_us else None
        for q in (0.5, 0.9, 0.99):
            v = float(np.quantile(lat, q)) if lat is not None else float("nan")
            lines.append(f'tlcut_edge_request_duration_us{{quantile="{q}"}} {v:.0f}')
        lines.append(f"tlcut_edge_request_duration_us_count {len(self.latency_us)}")
        lines += ["# HELP tlcut_edge_connections_refused_total Connections whose CURVE key is not in the allow-list.",
                  "# TYPE tlcut_edge_connections_refused_total counter",
                  f"tlcut_edge_connections_refused_total {self.zap.denied if self.zap else 0}"]
        lines += ["# TYPE tlcut_edge_uptime_seconds gauge", f"tlcut_edge_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def _send(sock, ident, reply) -> None:
    import zmq

    try:
        sock.send_multipart([ident, *reply], copy=len(reply[1]) < 65536)
    except zmq.ZMQError as e:  # the device went away; the next one is still served
        log.warning("reply not sent: %s", e)


def _host_of(endpoint: str) -> str:
    """The address part of tcp://HOST:PORT, as an HTTP server binds it ('*' is every address)."""
    host = endpoint.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return "0.0.0.0" if host in ("*", "") else ("127.0.0.1" if host == "localhost" else host)


def _start_http(edge: EdgeCore, host: str, port: int) -> ThreadingHTTPServer:
    """/metrics (Prometheus text), /health/live and /health/ready, as Triton serves them."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body, code = edge.metrics().encode(), 200
            elif self.path == "/health/live":
                body, code = b"live\n", 200
            elif self.path == "/health/ready":
                body, code = (b"ready\n", 200) if edge.ready else (b"not ready\n", 503)
            else:
                body, code = b"not found\n", 404
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        srv = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise TlcutError(f"cannot serve metrics on {host}:{port}: {e.strerror}; choose another --metrics-port") from None
    threading.Thread(target=srv.serve_forever, daemon=True, name="tlcut-metrics").start()
    return srv


@contextlib.contextmanager
def serving(edge: EdgeCore, endpoint: str = "tcp://127.0.0.1:*", **serve_kw):
    """Run ``edge`` on ``endpoint`` in a thread of this process until the block ends; yields the
    endpoint it bound (a port of ``*`` is any free one). For eval, tests and lab scenarios: a
    device talks to it exactly as to a remote edge."""
    stop, ready = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def serve():
        try:
            edge.serve(endpoint, stop=stop, ready=ready, **serve_kw)
        except BaseException as e:  # surfaced to the caller below
            failed.append(e)
            ready.set()

    th = threading.Thread(target=serve, daemon=True, name="tlcut-local-edge")
    th.start()
    try:
        if not ready.wait(60) or failed:
            raise failed[0] if failed else TlcutError("the local edge did not start within 60 s")
        yield edge.endpoint
    finally:
        stop.set()
        th.join(10)


def describe_key(cut_id: int, flags: int) -> str:
    """What a (cut id, flags) key serves, for messages: 'the whole model', 'cut 3 + TL', 'band 1 of cut 3'."""
    what = "the whole model" if cut_id == P.INPUT_CUT else f"cut {cut_id}{' + TL' if flags & P.FLAG_TL else ''}"
    band = P.band_of(flags)
    return what if band is None else f"band {band} of {'the input' if cut_id == P.INPUT_CUT else what}"


def _stop_on_signals(stop: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda *_: stop.set())

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore
