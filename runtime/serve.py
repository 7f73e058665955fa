"""`tlcut serve`: the edge. Answers device requests with the tail of the model.

One ROUTER socket takes requests from any number of devices. Each request names a cut and says
whether the payload went through the DeviceTL; the edge runs the matching tail (EdgeTL first where
flagged) and replies with the result and the time it spent. A bad request gets an ERROR reply
with a code (docs/protocol.md), is logged and counted, and the edge goes on serving the others.
Requests are handled one at a time: the engine uses the edge's cores for each one.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time

import numpy as np

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.runtime import backends
from tlcut.runtime import protocol as P

log = logging.getLogger("tlcut.edge")

DEFAULT_MAX_MESSAGE = 256 << 20


class Edge:
    """The tails this edge serves, keyed by (cut_id, flags), and the request handler."""

    def __init__(self, bundle: Bundle, cuts: list[str], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE):
        from tlcut.toolchain.compile import half_path, tl_modes

        if not cuts:
            raise TlcutError("name the cut(s) to serve with --cut K (or --cut input for the whole model)")
        be = backends.get(backend)
        self.bundle = bundle
        self.max_message_bytes = max_message_bytes
        self.runners: dict[tuple[int, int], object] = {}
        self.stats = collections.Counter()
        self.errors = collections.Counter()
        for spec in cuts:
            if str(spec) == "input":
                self.runners[(P.INPUT_CUT, 0)] = be.runner(bundle.model_path, threads=threads)
                continue
            cut = bundle.cut(spec)
            for with_tl in tl_modes(cut, tl):
                path = half_path(bundle, cut, "tail", with_tl, be.name)
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

    def handle(self, frames) -> list:
        """Reply frames for one request's frames (without the ROUTER identity)."""
        t0 = time.perf_counter()
        rid, cut_id, flags = 0, P.INPUT_CUT, 0
        try:
            size = sum(len(P._buffer(f)) for f in frames)
            if size > self.max_message_bytes:
                raise P.ProtocolError(P.E_TOO_LARGE, f"message of {size} bytes exceeds this edge's limit of {self.max_message_bytes}")
            if frames and len(P._buffer(frames[0])) == P.HEADER.size:
                try:
                    h0 = P.Header.unpack(P._buffer(frames[0]))
                    rid, cut_id, flags = h0.request_id, h0.cut_id, h0.flags
                except P.ProtocolError:
                    pass
            h, tensor = P.decode(frames)
            rid, cut_id, flags = h.request_id, h.cut_id, h.flags
            if h.type == P.PING:
                self.stats["ping"] += 1
                return [P.Header(type=P.PONG, request_id=rid).pack(), b""]
            if h.type != P.REQUEST:
                raise P.ProtocolError(P.E_BAD_TYPE, f"an edge takes REQUEST or PING, got {P.TYPES[h.type]}")
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
            return P.tensor_frames(P.RESULT, result, rid, cut_id, flags & P.FLAG_TL, server_us=us)
        except P.ProtocolError as e:
            self.errors[P.ERRORS[e.code]] += 1
            log.warning("request %d (%s): %s: %s", rid, _what(cut_id, flags), P.ERRORS[e.code], e)
            us = int((time.perf_counter() - t0) * 1e6)
            return P.error_frames(rid, e.code, str(e), cut_id, server_us=us)

    def serve(self, endpoint: str, stop: threading.Event | None = None, ready: threading.Event | None = None,
              max_requests: int | None = None) -> None:
        """Answer requests on ``endpoint`` until ``stop`` is set, SIGINT/SIGTERM, or ``max_requests``."""
        import zmq

        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close()
            raise TlcutError(f"cannot listen on {endpoint}: {e}; is another edge already there?") from None
        stop = stop or threading.Event()
        restore = _stop_on_signals(stop)
        log.info("serving %s on %s", self.describe(), endpoint)
        if ready:
            ready.set()
        handled = 0
        try:
            while not stop.is_set() and (max_requests is None or handled < max_requests):
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart(copy=False)
                ident, body = frames[0], frames[1:]
                reply = self.handle(body)
                sock.send_multipart([ident, *reply], copy=len(reply[1]) < 65536)
                handled += 1
        finally:
            restore()
            sock.close()
            log.info("stopped after %d messages: %d ok, errors %s", handled, self.stats["ok"], dict(self.errors) or "none")


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
