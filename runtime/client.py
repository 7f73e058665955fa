"""The client side of the wire protocol, for every role that sends requests: the device to its
edge, an edge to the next tier, a tiles coordinator to its band nodes.

``EdgeClient`` is one DEALER socket to one edge; ``lazy_pirate`` is ZeroMQ's Lazy Pirate retry
(no reply in time: a fresh socket, the request again), written once for every client here and for
runtime/triton.py's; ``Upstream`` is an edge's link to a node it hands work to, made when first
needed and dropped on failure.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, TypeVar

import numpy as np

from tlcut.errors import TlcutError
from tlcut.runtime import protocol as P
from tlcut.runtime.security import require_policy

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0


class EdgeError(TlcutError):
    """The edge answered with an ERROR."""

    def __init__(self, code: int, message: str):
        super().__init__(f"edge refused the request ({P.ERRORS.get(code, code)}): {message}")
        self.code, self.message = code, message


class EdgeUnavailable(TlcutError):
    """No reply from the edge within the retry budget."""


def lazy_pirate(attempt: Callable[[], T], retries: int, reconnect: Callable[[], None] | None = None,
                on_retry: Callable[[], None] | None = None) -> T:
    """``attempt()``; where it gets no reply (EdgeUnavailable), ``reconnect()`` (a fresh socket or
    client, so a late reply never meets a later request) and try again, up to ``retries`` more
    times; the last EdgeUnavailable goes to the caller. ZeroMQ's Lazy Pirate pattern."""
    for n in range(retries + 1):
        try:
            return attempt()
        except EdgeUnavailable:
            if reconnect is not None:
                reconnect()
            if n == retries:
                raise
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")


class EdgeClient:
    """A DEALER socket to one edge, with ZeroMQ's Lazy Pirate retries.

    ``request``: one request in flight; one that gets no reply within ``timeout_s`` is sent again
    on a fresh socket, up to ``retries`` times, each attempt with a new request id; only the reply
    to the latest attempt is taken, and replies to anything else are dropped and counted.
    ``send``/``receive``: several in flight (pipelining), each reply kept for its own request.
    """

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = 0, curve=None,
                 insecure: bool = False):
        import zmq

        require_policy(endpoint, curve, insecure, "device")
        self.zmq = zmq
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.curve = curve
        self._ids = itertools.count(1)
        self.dropped = 0
        self.retried = 0
        self.last_payload_bytes = 0
        self.sock = None
        self._pending: set[int] = set()  # ids sent with send() and not yet received
        self._early: dict[int, tuple] = {}  # their replies, when they came while waiting for another
        self._connect()

    def _connect(self):
        zmq = self.zmq
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a DEALER with no live peer, or a full queue, blocks on send: never longer than the timeout
        self.sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
        if self.curve is not None:
            self.curve.apply(self.sock)
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

    def request(self, array: np.ndarray, cut_id: int, flags: int = 0, encoding: str = "raw",
                **encode_kw) -> tuple[np.ndarray, P.Header]:
        """One request, waiting for its reply; ``encode_kw`` (scale, zero_point, quality) go to P.encode."""
        wire, enc, scale, zp = P.encode(array, encoding, **encode_kw)
        self.last_payload_bytes = wire.nbytes + P.HEADER.size

        def attempt():  # a new request id each time: a late reply to an earlier attempt is dropped
            rid = next(self._ids)
            self._send(P.tensor_frames(P.REQUEST, wire, rid, cut_id, flags, encoding=enc, scale=scale, zero_point=zp),
                       wire.nbytes)
            return self._wait(rid)

        # _send and _wait replace the socket themselves before they raise EdgeUnavailable
        h, body = lazy_pirate(attempt, self.retries, on_retry=self._count_retry)
        if h.type == P.ERROR:
            raise EdgeError(h.status, body)
        if h.type != P.RESULT:
            raise TlcutError(f"edge answered a request with {P.TYPES[h.type]}")
        return body, h

    def _count_retry(self) -> None:
        self.retried += 1

    def send(self, array: np.ndarray, cut_id: int, flags: int = 0, encoding: str = "raw", **encode_kw) -> int:
        """Send without waiting; returns the request id to ``receive``. ``encode_kw`` as in ``request``."""
        wire, enc, scale, zp = P.encode(array, encoding, **encode_kw)
        self.last_payload_bytes = wire.nbytes + P.HEADER.size
        rid = next(self._ids)
        self._send(P.tensor_frames(P.REQUEST, wire, rid, cut_id, flags, encoding=enc, scale=scale, zero_point=zp),
                   wire.nbytes)
        self._pending.add(rid)
        return rid

    def receive(self, rid: int, timeout_s: float | None = None) -> tuple[np.ndarray, P.Header]:
        """The reply to a request of ``send``; EdgeUnavailable after ``timeout_s`` (all pending ones
        are then lost with the socket)."""
        try:
            h, body = self._early.pop(rid) if rid in self._early else self._wait(rid, timeout_s)
        except EdgeUnavailable:
            self._pending.clear()
            self._early.clear()
            raise
        self._pending.discard(rid)
        if h.type == P.ERROR:
            raise EdgeError(h.status, body)
        if h.type != P.RESULT:
            raise TlcutError(f"edge answered a request with {P.TYPES[h.type]}")
        return body, h

    def ping(self, timeout_s: float | None = None) -> P.Header:
        rid = next(self._ids)
        self._send([P.Header(type=P.PING, request_id=rid).pack(), b""], 0)
        return self._wait(rid, timeout_s)[0]

    def _send(self, frames, nbytes: int) -> None:
        try:
            self.sock.send_multipart(frames, copy=nbytes < 65536)
        except self.zmq.Again:
            self._connect()
            raise EdgeUnavailable(f"could not send to the edge at {self.endpoint} within {self.timeout_s:g} s; "
                                  f"is `tlcut serve` running there and reachable?") from None

    def poll_reply(self, rid: int, timeout_s: float) -> tuple[np.ndarray, P.Header] | None:
        """The reply to a request of ``send`` if it comes within ``timeout_s``, else None, the request
        still pending on the same socket: a hedged request waits in slices while its local run goes."""
        if rid not in self._early:
            got = self._wait(rid, timeout_s, keep=True)
            if got is None:
                return None
            self._early[rid] = got
        return self.receive(rid)  # its checks

    def abandon(self) -> None:
        """Give up every pending request: a fresh socket, so no late reply meets a later request,
        and what of their payloads is still queued here is not sent."""
        self._pending.clear()
        self._early.clear()
        self._connect()

    def _wait(self, rid: int, timeout_s: float | None = None, keep: bool = False):
        """``rid``'s reply; on no reply in time, EdgeUnavailable on a fresh socket (``keep``: None,
        on the same socket)."""
        zmq = self.zmq
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise zmq.Again
                self.sock.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
                # results are small (class scores): a copying receive is cheaper than a zero-copy one there
                frames = self.sock.recv_multipart(copy=True)
            except zmq.Again:
                if keep:
                    return None
                self._connect()  # a reply to this request may still come; a fresh socket never sees it
                raise EdgeUnavailable(f"no reply from the edge at {self.endpoint} within {timeout_s:g} s"
                                      + (f" after {self.retries + 1} attempts" if self.retries else "")
                                      + "; is `tlcut serve` running there and reachable?") from None
            try:
                h, body = P.decode(frames)
            except P.ProtocolError:
                self.dropped += 1
                continue
            if h.request_id != rid:
                if h.request_id in self._pending:  # pipelined: another request's reply, kept for it
                    self._early[h.request_id] = (h, body)
                else:
                    self.dropped += 1  # a late reply to an earlier request: never deliver it for this one
                continue
            return h, body


def wait_for_edge(endpoint: str, timeout_s: float = 30.0, curve=None, insecure: bool = False, process=None) -> None:
    """Ping ``endpoint`` until it answers; a clear error after ``timeout_s`` (an edge loading its halves).
    ``process``: the edge's own (a Popen), where the caller started it: its exit ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise EdgeUnavailable(f"the edge at {endpoint} exited with status {process.returncode} before answering")
        try:
            with EdgeClient(endpoint, timeout_s=0.5, curve=curve, insecure=insecure) as c:
                c.ping()
            return
        except EdgeUnavailable:
            if time.monotonic() > deadline:
                raise EdgeUnavailable(f"the edge at {endpoint} did not answer within {timeout_s:g} s") from None


class Upstream:
    """An edge's link to a node it hands work to (the next tier, a tiled band's node): the client is
    made when first needed, and dropped when a request on it fails, so the next request starts on a
    fresh socket and a late reply is never taken for it."""

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, curve=None, insecure: bool = False):
        self.endpoint, self.timeout_s, self.curve, self.insecure = endpoint, timeout_s, curve, insecure
        self._client: EdgeClient | None = None

    @property
    def client(self) -> EdgeClient:
        if self._client is None:
            self._client = EdgeClient(self.endpoint, self.timeout_s, curve=self.curve, insecure=self.insecure)
        return self._client

    def request(self, array: np.ndarray, cut_id: int, flags: int = 0,
                encoding: str = "raw") -> tuple[np.ndarray, P.Header]:
        """One request, no retry (the device above has its own budget); dropped on no reply."""
        return lazy_pirate(lambda: self.client.request(array, cut_id, flags, encoding), 0, reconnect=self.drop)

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    close = drop
