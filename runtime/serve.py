"""`tlcut serve`: the edge. Answers device requests with the tail of the model.

One ROUTER socket takes requests from any number of devices. Each request names a cut and says
whether the payload went through the DeviceTL; the edge runs the matching tail (EdgeTL first where
flagged) and replies with the result and the time it spent. A bad request gets an ERROR reply
with a code (docs/protocol.md), is logged and counted, and the edge goes on serving the others.
Requests are handled one at a time: the engine uses the edge's cores for each one. With
``max_batch`` above 1 the edge batches instead: it takes every request waiting (up to the batch
size), waits up to ``max_queue_delay_us`` after the first for more, validates each one alone, and
runs those for the same tail as one batch, on tails that `tlcut compile --batch` wrote.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tlcut.bundle import BATCH_DYNAMIC, Bundle
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, Placement, tl_modes
from tlcut.runtime import backends
from tlcut.runtime import protocol as P

log = logging.getLogger("tlcut.edge")

DEFAULT_MAX_MESSAGE = 256 << 20


#: Connections whose last request id an edge remembers (replay refusal); past that the one used
#: least recently is forgotten (docs/protocol.md, the C edge does the same).
REPLAY_TABLE = 4096


class _Job(NamedTuple):
    """A request that passed every check: what the engine runs, and the ids its reply carries."""

    rid: int
    cut_id: int
    flags: int
    key: tuple[int, int]
    tensor: np.ndarray


class Forward(NamedTuple):
    """Where an edge of three tiers sends what its middle part computes: the next tier (a cloud
    serving cut ``to``), over the same protocol, as a device of it."""

    endpoint: str
    to: int
    to_tl: bool = False
    encoding: str = "raw"
    timeout_s: float = 10.0
    curve: object = None
    insecure: bool = False


class Edge:
    """The tails this edge serves, keyed by (cut_id, flags), and the request handler. With
    ``forward`` it serves middle parts instead and forwards their output to the next tier."""

    def __init__(self, bundle: Bundle, cuts: list[str], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE, precision: str = "float32",
                 max_batch: int = 1, forward: Forward | None = None, tiles=None, band: int | None = None):
        if not cuts:
            raise TlcutError("name the cut(s) to serve with --cut K (or --cut input for the whole model)")
        if max_batch < 1:
            raise TlcutError(f"--max-batch must be at least 1, got {max_batch}")
        be = backends.get(backend)
        self.bundle = bundle
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.runners: dict[tuple[int, int], object] = {}
        #: key -> (runner, input name, static batch or None for a symbolic one), where max_batch > 1
        self.batched: dict[tuple[int, int], tuple] = {}
        self.stats = collections.Counter()
        self.zap = None  # the CURVE allow-list's handler while serving encrypted (security.ZapHandler)
        self.errors = collections.Counter()
        self.latency_us: collections.deque = collections.deque(maxlen=10000)
        self.last_rid: collections.OrderedDict = collections.OrderedDict()  # peer -> last request id
        self.started = time.time()
        self.ready = False
        self.endpoint: str | None = None
        self.forward, self.next_tier = forward, None
        if forward is not None and (max_batch > 1 or precision != "float32"):
            raise TlcutError("an edge that forwards runs float32 middle parts one request at a time; "
                             "drop --max-batch/--precision")
        if tiles is not None or band is not None:
            self._load_tiles(bundle, cuts, tl, be, threads, tiles, band, max_batch, precision, forward)
            cuts = []
        for spec in cuts:
            p = Placement.resolve(bundle, spec)
            if p.where == DEVICE:
                raise TlcutError("an edge serves a cut or the whole model ('input'), not 'device'")
            if forward is not None:
                self._load_middle(bundle, p, tl, be, threads)
                continue
            if p.where == EDGE:
                path = bundle.runnable("model", engine=be.name, precision=precision)
                self.runners[(P.INPUT_CUT, 0)] = be.runner(path, threads=threads)
                continue
            cut = bundle.cuts[p.cut]
            for with_tl in tl_modes(cut, tl):
                if tl == "both" and with_tl and not bundle.find("tail", cut.index, True, precision=precision):
                    continue  # "both" serves the TL tail where it was compiled
                path = bundle.runnable("tail", cut.index, with_tl, be.name, precision)
                key = (cut.index, P.FLAG_TL if with_tl else 0)
                self.runners[key] = be.runner(path, threads=threads)
                a = bundle.batched_tail(cut.index, with_tl, be.name, precision) if max_batch > 1 else None
                if a is not None:
                    cap = None if a.batch == BATCH_DYNAMIC else a.batch
                    self.batched[key] = (be.runner(bundle.path / a.file, threads=threads), a.input["name"], cap)
        for key, r in self.runners.items():
            r.activate()
            # one untimed run, so the first request does not pay for lazy initialisation
            if hasattr(r, "warm"):
                r.warm()  # a tiled segment warms what it runs itself: its nodes may not be up yet
            else:
                r.infer({k: np.zeros(s, d) for k, (d, s) in r.input_metadata().items()}, check=False)
            if key in self.batched:
                br, name, cap = self.batched[key]
                br.activate()
                (dtype, shape), = r.input_metadata().values()
                # every size a batch can have: an engine's first run at a new shape plans its memory
                for n in ([cap] if cap else range(2, max_batch + 1)):
                    br.infer({name: np.zeros((n, *shape[1:]), dtype)}, check=False)
            elif max_batch > 1:
                what = _what(*key)
                how = ("" if key[0] == P.INPUT_CUT else f"; compile one with `tlcut compile {bundle.path} --cuts {key[0]} "
                       f"--tl {'on' if key[1] else 'off'} --batch dynamic`")
                log.warning("%s has no batched tail: its requests run one at a time%s", what, how)

    def _load_tiles(self, bundle: Bundle, cuts, tl, be, threads, tiles, band, max_batch, precision, forward) -> None:
        """A tiled segment: as the coordinator (``tiles``, a runtime.tiles.Tiles) the segment's bands
        and the tail after it, or as a worker (``band``, with ``tiles`` its folder) one band."""
        from tlcut.bundle import read_tiles
        from tlcut.runtime import tiles as T

        if forward is not None or max_batch > 1 or precision != "float32":
            raise TlcutError("a tiled segment runs float32 bands one request at a time; drop --forward/--max-batch/--precision")
        if len(cuts) != 1:
            raise TlcutError("an edge serving tiles serves one cut, where the tiles start; give --cut once")
        folder = tiles if band is not None else tiles.folder
        m = read_tiles(Path(folder))
        T.check_start(bundle, m, cuts[0])
        if tl == "on":
            raise TlcutError("tiles take the cut's own tensor, not the TL's; serve with --tl off")
        if band is not None:
            cut_id, flags, runner = T.band_runner(m, folder, band, be, threads)
            self.runners[(cut_id, flags)] = runner
            return
        runner = T.TiledRunner(bundle, tiles, be, threads)
        self.runners[(runner.cut_id, 0)] = runner

    def _load_middle(self, bundle: Bundle, p: Placement, tl: str, be, threads) -> None:
        """The parts from what the device sends (the input, or cut A with or without the TL) to the
        forward cut: the head of that cut for the input, else the middle part `compile --to` wrote."""
        fw = self.forward
        if p.where == EDGE:
            path = bundle.runnable("head", fw.to, fw.to_tl, be.name)
            self.runners[(P.INPUT_CUT, 0)] = be.runner(path, threads=threads)
            return
        cut = bundle.cuts[p.cut]
        for with_tl in tl_modes(cut, tl):
            a = bundle.find("middle", cut.index, with_tl, be.name, to=(fw.to, fw.to_tl))
            if a is None:
                if tl == "both" and with_tl:
                    continue
                raise TlcutError(f"bundle '{bundle.path}' has no middle part from cut {cut.index}"
                                 f"{' + TL' if with_tl else ''} to cut {fw.to}; run `tlcut compile {bundle.path} "
                                 f"--cuts {cut.index} --tl {'on' if with_tl else 'off'} --to {fw.to} "
                                 f"--to-tl {'on' if fw.to_tl else 'off'}` first")
            self.runners[(cut.index, P.FLAG_TL if with_tl else 0)] = be.runner(bundle.path / a.file, threads=threads)

    def _forwarded(self, y: np.ndarray) -> np.ndarray:
        """The next tier's answer for what the middle part computed; its errors come back with their cause."""
        from tlcut.runtime.run import EdgeClient, EdgeError, EdgeUnavailable

        fw = self.forward
        if self.next_tier is None:
            self.next_tier = EdgeClient(fw.endpoint, fw.timeout_s, curve=fw.curve, insecure=fw.insecure)
        try:
            out, _ = self.next_tier.request(y, fw.to, P.FLAG_TL if fw.to_tl else 0, fw.encoding)
            return out
        except EdgeError as e:
            raise P.ProtocolError(e.code, f"the next tier ({fw.endpoint}) answered: {e.message}") from None
        except EdgeUnavailable:
            self.next_tier.close()
            self.next_tier = None  # a fresh socket for the next request (Lazy Pirate)
            raise P.ProtocolError(P.E_UPSTREAM, f"the next tier ({fw.endpoint}) did not answer within "
                                                f"{fw.timeout_s:g} s") from None

    def describe(self) -> str:
        parts = []
        for (cut, flags), r in sorted(self.runners.items()):
            (name, (dtype, shape)), = r.input_metadata().items()
            what = _what(cut, flags).removeprefix("the ")
            tiled = getattr(r, "cfg", None)
            if tiled is not None:
                what += f" in {len(tiled.workers)} bands ({', '.join(tiled.workers)})"
            parts.append(f"{what} ({dtype.name}{list(shape)})")
        return ", ".join(parts)

    def close(self) -> None:
        for r in [*self.runners.values(), *(b[0] for b in self.batched.values())]:
            r.deactivate()
        if self.next_tier is not None:
            self.next_tier.close()

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
        size = sum(len(P._buffer(f)) for f in frames)
        if size > self.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"message of {size} bytes exceeds this edge's limit of {self.max_message_bytes}")
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
                raise P.ProtocolError(P.E_WRONG_CUT, f"this edge does not serve {_what(cut_id, flags)}; it serves {self.describe()}")
            (name, (dtype, shape)), = runner.input_metadata().items()
            tensor = P.restore(h, tensor, tuple(shape))  # a JPEG is checked against the served shape
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise P.ProtocolError(P.E_WRONG_TENSOR, f"{_what(cut_id, flags)} takes {dtype.name}{list(shape)}, "
                                                        f"got {tensor.dtype.name}{list(tensor.shape)}")
            return _Job(rid, cut_id, flags, key, tensor)
        except P.ProtocolError as e:
            e.header = e.header or h  # the header parsed: the ERROR answers with its ids
            raise

    def _run(self, key, tensors: list) -> list:
        """The result of each tensor for ``key``: what this edge computes, or, for an edge that
        forwards, the next tier's answer to it."""
        outs = self._infer(key, tensors)
        return [self._forwarded(y) for y in outs] if self.forward is not None else outs

    def _infer(self, key, tensors: list) -> list:
        """One engine run for a lone request (or a tail without a batched build), else one run per
        batch (a static batch padded with zeros)."""
        runner = self.runners[key]
        name = next(iter(runner.input_metadata()))
        batched = self.batched.get(key) if len(tensors) > 1 else None
        try:
            if batched is None:
                self.stats["batches"] += len(tensors)
                return [next(iter(runner.infer({name: t}, check=False).values())) for t in tensors]
            br, bname, cap = batched
            out = []
            step = cap or len(tensors)
            for s in range(0, len(tensors), step):
                chunk = tensors[s:s + step]
                x = np.concatenate(chunk)
                if cap and len(chunk) < cap:
                    x = np.concatenate([x, np.zeros((cap - len(chunk), *x.shape[1:]), x.dtype)])
                y = next(iter(br.infer({bname: x}, check=False).values()))
                out += [y[j:j + 1] for j in range(len(chunk))]
                self.stats["batches"] += 1
            return out
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
        log.warning("request %d (%s): %s: %s", rid, _what(cut_id, flags), P.ERRORS[e.code], e)
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
        others. Messages over 4x the size limit are cut off by ZeroMQ itself, before any memory is
        spent on them; those over the limit get an error reply. The metrics server listens on the
        host of ``endpoint`` only. A port of ``*`` binds any free port; ``self.endpoint`` says which.
        With ``max_batch`` above 1, the first request of a batch waits at most ``max_queue_delay_us``
        for others to arrive (Triton's max_queue_delay_microseconds).
        """
        import zmq

        from tlcut.runtime.security import require_policy

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
            if self.max_batch > 1:
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
                    if self.max_batch > 1:
                        room = self.max_batch if max_requests is None else min(self.max_batch, max_requests - handled)
                        batch = self._gather(sock, room, max_queue_delay_us * 1e-6)
                        try:
                            replies = self.handle_batch([(f[1:], f[0].bytes, t) for f, t in batch])
                        except Exception as e:  # a bug of ours: every request still gets one reply
                            replies = [self._failed(e, t) for _, t in batch]
                        for (f, _), reply in zip(batch, replies):
                            _send(sock, f[0], reply)
                        handled += len(batch)
                        continue
                    frames = sock.recv_multipart(copy=False)
                    ident, body = frames[0], frames[1:]
                    self.stats["messages"] += 1
                    _send(sock, ident, self.handle(body, peer=ident.bytes))
                    handled += 1
            finally:
                self.ready = False
                log.info("stopped after %d messages: %d ok in %d engine runs, errors %s", handled, self.stats["ok"],
                         self.stats["batches"], dict(self.errors) or "none")

    def _gather(self, sock, room: int, delay_s: float) -> list:
        """(frames, receipt time) of every request waiting, up to ``room``, and of those arriving
        until ``delay_s`` after the first; never waits once the batch is full."""
        import zmq

        got: list = []
        deadline = None
        while len(got) < room:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                left = (deadline - time.perf_counter()) if deadline is not None else 0.0
                if left <= 0:
                    break
                if left >= 1e-3:
                    sock.poll(int(left * 1e3))  # whole milliseconds; the rest is slept below
                else:
                    time.sleep(min(left, 1e-4))
                continue
            t = time.perf_counter()
            deadline = deadline if deadline is not None else t + delay_s
            self.stats["messages"] += 1
            got.append((frames, t))
        return got

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
