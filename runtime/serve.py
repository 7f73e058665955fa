"""`tlcut serve`: the edge. Answers device requests with the tail of the model.

One ROUTER socket takes requests from any number of devices. Each request names a cut and says
whether the payload went through the DeviceTL; the edge runs the matching tail (EdgeTL first where
flagged) and replies with the result and the time it spent. A bad request gets an ERROR reply
with a code (docs/protocol.md), is logged and counted, and the edge goes on serving the others.
Requests are handled one at a time: the engine uses the edge's cores for each one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, Placement, tl_modes
from tlcut.runtime import backends
from tlcut.runtime import protocol as P

log = logging.getLogger("tlcut.edge")

DEFAULT_MAX_MESSAGE = 256 << 20


#: Connections whose last request id an edge remembers (replay refusal); past that the one used
#: least recently is forgotten (docs/protocol.md, the C edge does the same).
REPLAY_TABLE = 4096


class Edge:
    """The tails this edge serves, keyed by (cut_id, flags), and the request handler."""

    def __init__(self, bundle: Bundle, cuts: list[str], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE, precision: str = "float32"):
        if not cuts:
            raise TlcutError("name the cut(s) to serve with --cut K (or --cut input for the whole model)")
        be = backends.get(backend)
        self.bundle = bundle
        self.max_message_bytes = max_message_bytes
        self.runners: dict[tuple[int, int], object] = {}
        self.stats = collections.Counter()
        self.errors = collections.Counter()
        self.latency_us: collections.deque = collections.deque(maxlen=10000)
        self.last_rid: collections.OrderedDict = collections.OrderedDict()  # peer -> last request id
        self.started = time.time()
        self.ready = False
        self.endpoint: str | None = None
        for spec in cuts:
            p = Placement.resolve(bundle, spec)
            if p.where == DEVICE:
                raise TlcutError("an edge serves a cut or the whole model ('input'), not 'device'")
            if p.where == EDGE:
                path = bundle.runnable("model", engine=be.name, precision=precision)
                self.runners[(P.INPUT_CUT, 0)] = be.runner(path, threads=threads)
                continue
            cut = bundle.cuts[p.cut]
            for with_tl in tl_modes(cut, tl):
                if tl == "both" and with_tl and not bundle.find("tail", cut.index, True, precision=precision):
                    continue  # "both" serves the TL tail where it was compiled
                path = bundle.runnable("tail", cut.index, with_tl, be.name, precision)
                self.runners[(cut.index, P.FLAG_TL if with_tl else 0)] = be.runner(path, threads=threads)
        for r in self.runners.values():
            r.activate()
            # one untimed run, so the first request does not pay for lazy initialisation
            feed = {k: np.zeros(s, d) for k, (d, s) in r.input_metadata().items()}
            r.infer(feed, check=False)

    def describe(self) -> str:
        parts = []
        for (cut, flags), r in sorted(self.runners.items()):
            (name, (dtype, shape)), = r.input_metadata().items()
            what = "whole model" if cut == P.INPUT_CUT else f"cut {cut}{' + TL' if flags & P.FLAG_TL else ''}"
            parts.append(f"{what} ({dtype.name}{list(shape)})")
        return ", ".join(parts)

    def close(self) -> None:
        for r in self.runners.values():
            r.deactivate()

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
        rid, cut_id, flags = 0, P.INPUT_CUT, 0
        try:
            size = sum(len(P._buffer(f)) for f in frames)
            if size > self.max_message_bytes:
                raise P.ProtocolError(P.E_TOO_LARGE, f"message of {size} bytes exceeds this edge's limit of {self.max_message_bytes}")
            h, tensor = P.decode(frames)
            rid, cut_id, flags = h.request_id, h.cut_id, h.flags
            if h.type == P.PING:
                self.stats["ping"] += 1
                return [P.Header(type=P.PONG, request_id=rid).pack(), b""]
            if h.type != P.REQUEST:
                raise P.ProtocolError(P.E_BAD_TYPE, f"an edge takes REQUEST or PING, got {P.TYPES[h.type]}", h)
            if tensor is None:
                raise P.ProtocolError(P.E_WRONG_TENSOR, "a REQUEST must carry a tensor; dtype 0 (none) is not one", h)
            self._check_replay(peer, rid)
            runner = self.runners.get((cut_id, flags & P.FLAG_TL))
            if runner is None:
                raise P.ProtocolError(P.E_WRONG_CUT, f"this edge does not serve {_what(cut_id, flags)}; it serves {self.describe()}")
            (name, (dtype, shape)), = runner.input_metadata().items()
            tensor = P.restore(h, tensor)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise P.ProtocolError(P.E_WRONG_TENSOR, f"{_what(cut_id, flags)} takes {dtype.name}{list(shape)}, "
                                                        f"got {tensor.dtype.name}{list(tensor.shape)}")
            try:
                out = runner.infer({name: tensor}, check=False)
            except Exception as e:  # the engine itself failed on a well-formed request
                raise P.ProtocolError(P.E_INTERNAL, f"inference failed: {str(e).splitlines()[0][:300]}") from None
            result = next(iter(out.values()))
            self.stats["ok"] += 1
            us = int((time.perf_counter() - t0) * 1e6)
            self.latency_us.append(us)
            return P.tensor_frames(P.RESULT, result, rid, cut_id, flags & P.FLAG_TL, server_us=us)
        except P.ProtocolError as e:
            if e.header is not None:  # the header parsed; answer with its ids
                rid, cut_id, flags = e.header.request_id, e.header.cut_id, e.header.flags
            self.errors[P.ERRORS[e.code]] += 1
            log.warning("request %d (%s): %s: %s", rid, _what(cut_id, flags), P.ERRORS[e.code], e)
            us = int((time.perf_counter() - t0) * 1e6)
            return P.error_frames(rid, e.code, str(e), cut_id, server_us=us, flags=flags)

    def serve(self, endpoint: str, stop: threading.Event | None = None, ready: threading.Event | None = None,
              max_requests: int | None = None, curve=None, insecure: bool = False, max_queue: int = 64,
              metrics_port: int | None = None) -> None:
        """Answer requests on ``endpoint`` until ``stop`` is set, SIGINT/SIGTERM, or ``max_requests``.

        ``curve`` (a security.ServerCurve) encrypts the link and admits only listed devices; without
        it, a non-loopback endpoint needs ``insecure``. Each connection may queue ``max_queue``
        messages (ZeroMQ's receive high-water mark, so a flooding device is held back by TCP, not
        buffered here); ZeroMQ fair-queues between connections, so one device cannot starve the
        others. Messages over 4x the size limit are cut off by ZeroMQ itself, before any memory is
        spent on them; those over the limit get an error reply. The metrics server listens on the
        host of ``endpoint`` only. A port of ``*`` binds any free port; ``self.endpoint`` says which.
        """
        import zmq

        from tlcut.runtime.security import require_policy

        require_policy(endpoint, curve, insecure, "edge")
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
            sock.setsockopt(zmq.MAXMSGSIZE, min(4 * self.max_message_bytes + 4096, 2**62))
            if curve:
                undo.callback(curve.apply(ctx, sock).stop)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as e:
                raise TlcutError(f"cannot listen on {endpoint}: {e}; is another edge already there?") from None
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            stop = stop or threading.Event()
            undo.callback(_stop_on_signals(stop))
            log.info("serving %s on %s (%s)", self.describe(), self.endpoint, "CURVE" if curve else "plain TCP")
            self.ready = True
            if ready:
                ready.set()
            handled = 0
            try:
                while not stop.is_set() and (max_requests is None or handled < max_requests):
                    if not sock.poll(100):
                        continue
                    frames = sock.recv_multipart(copy=False)
                    ident, body = frames[0], frames[1:]
                    self.stats["messages"] += 1
                    reply = self.handle(body, peer=ident.bytes)
                    try:
                        sock.send_multipart([ident, *reply], copy=len(reply[1]) < 65536)
                    except zmq.ZMQError as e:  # the device went away; the next one is still served
                        log.warning("reply not sent: %s", e)
                    handled += 1
            finally:
                self.ready = False
                log.info("stopped after %d messages: %d ok, errors %s", handled, self.stats["ok"],
                         dict(self.errors) or "none")

    def metrics(self) -> str:
        """Prometheus text format, after Triton's metrics endpoint."""
        lines = ["# HELP tlcut_edge_requests_total Requests answered with a result.",
                 "# TYPE tlcut_edge_requests_total counter", f"tlcut_edge_requests_total {self.stats['ok']}",
                 "# HELP tlcut_edge_pings_total Health pings answered.", "# TYPE tlcut_edge_pings_total counter",
                 f"tlcut_edge_pings_total {self.stats['ping']}",
                 "# HELP tlcut_edge_errors_total Requests answered with an error, by kind.",
                 "# TYPE tlcut_edge_errors_total counter"]
        for code, name in P.ERRORS.items():
            lines.append(f'tlcut_edge_errors_total{{kind="{name.replace(" ", "_")}"}} {self.errors[name]}')
        lines += ["# HELP tlcut_edge_request_duration_us Time from receipt to reply of the last 10000 results.",
                  "# TYPE tlcut_edge_request_duration_us summary"]
        lat = np.array(self.latency_us) if self.latency_us else None
        for q in (0.5, 0.9, 0.99):
            v = float(np.quantile(lat, q)) if lat is not None else float("nan")
            lines.append(f'tlcut_edge_request_duration_us{{quantile="{q}"}} {v:.0f}')
        lines.append(f"tlcut_edge_request_duration_us_count {len(self.latency_us)}")
        lines += ["# TYPE tlcut_edge_uptime_seconds gauge", f"tlcut_edge_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def _host_of(endpoint: str) -> str:
    """The address part of tcp://HOST:PORT, as an HTTP server binds it ('*' is every address)."""
    host = endpoint.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return "0.0.0.0" if host in ("*", "") else ("127.0.0.1" if host == "localhost" else host)


def _start_http(edge: Edge, host: str, port: int) -> ThreadingHTTPServer:
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
def serving(edge: Edge, endpoint: str = "tcp://127.0.0.1:*", **serve_kw):
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


@contextlib.contextmanager
def local_edge(bundle: Bundle, cuts: list[str], **kw):
    """An edge serving ``cuts`` of ``bundle`` on a free loopback port (``serving``); yields its endpoint."""
    edge = Edge(bundle, cuts, **kw)
    try:
        with serving(edge) as ep:
            yield ep
    finally:
        edge.close()


def _what(cut_id: int, flags: int) -> str:
    return "the whole model" if cut_id == P.INPUT_CUT else f"cut {cut_id}{' + TL' if flags & P.FLAG_TL else ''}"


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
