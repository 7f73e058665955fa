"""Encryption and authentication of the device-edge link: ZeroMQ CURVE with a ZAP allow-list.

Intermediate features can leak the product image, so outside loopback the link is encrypted by
default. `tlcut keys` makes CURVE key pairs (ZeroMQ's own certificate files: NAME.key holds the
public key, NAME.key_secret both). The edge serves with its secret key and admits only devices
whose public key files are in its allow-list folder; a device pins the edge's public key. Plain
TCP outside loopback needs an explicit --insecure and logs a warning.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tlcut.errors import TlcutError

log = logging.getLogger("tlcut.security")

_LOCAL = re.compile(r"^(inproc|ipc)://|^(tcp|triton\+grpc|triton\+http)://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:|$)")


def is_loopback(endpoint: str) -> bool:
    return bool(_LOCAL.match(endpoint))


def make_keys(folder, names: list[str], force: bool = False) -> list[tuple[Path, Path]]:
    import zmq.auth

    if not names:
        raise TlcutError("name the key pairs to make, e.g. `tlcut keys -o keys edge device1 device2`")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", n):
            raise TlcutError(f"key name '{n}' may use only letters, digits, '.', '_' and '-'")
        pub, sec = folder / f"{n}.key", folder / f"{n}.key_secret"
        if (pub.exists() or sec.exists()) and not force:
            raise TlcutError(f"keys for '{n}' already exist in {folder}; pass --force to replace them")
        pub_path, sec_path = zmq.auth.create_certificates(str(folder), n)
        Path(sec_path).chmod(0o600)
        out.append((Path(pub_path), Path(sec_path)))
    return out


def _load_certificate(path, missing: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise TlcutError(f"key file '{path}' does not exist; {missing}")
    try:
        return zmq.auth.load_certificate(str(p))
    except Exception as e:
        raise TlcutError(f"'{path}' is not a CURVE key file ({e})") from None


def load_secret(path) -> tuple[bytes, bytes]:
    """(public, secret) from a NAME.key_secret file."""
    public, secret = _load_certificate(path, "make one with `tlcut keys`")
    if not secret:
        raise TlcutError(f"'{path}' holds no secret key; give the NAME.key_secret file, not NAME.key")
    return public, secret


def load_public(path) -> bytes:
    return _load_certificate(path, "copy the edge's NAME.key here")[0]


@dataclass
class ServerCurve:
    """The edge's side: its key pair and the folder of admitted devices' public keys."""

    public: bytes
    secret: bytes
    allow: Path

    @classmethod
    def from_files(cls, secret_file, allow_dir) -> "ServerCurve":
        public, secret = load_secret(secret_file)
        allow = Path(allow_dir) if allow_dir else None
        if allow is None or not allow.is_dir():
            raise TlcutError("an encrypted edge needs --allow DIR, a folder of the public keys (NAME.key) of admitted devices")
        if not any(allow.glob("*.key")):
            raise TlcutError(f"--allow folder '{allow}' holds no public keys (*.key); no device could connect")
        return cls(public, secret, allow)

    def apply(self, ctx, sock) -> "ZapHandler":
        """Start the ZAP handler on ``ctx`` and make ``sock`` a CURVE server; returns the handler."""
        allowed = {load_public(k) for k in sorted(self.allow.glob("*.key"))}
        zap = ZapHandler(ctx, allowed)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        return zap


def zap_decide(frames: list[bytes], allowed: set[bytes]) -> list[bytes]:
    """The reply to one ZAP request (RFC 27): 200 for a CURVE key in ``allowed`` (Z85), 400 for any
    other, 500 for a malformed request. The C edge decides the same way (tlc::zap_decide)."""
    from zmq.utils import z85

    rid = frames[1] if len(frames) > 1 else b""
    if len(frames) < 6 or frames[0] != b"1.0":
        return [b"1.0", rid, b"500", b"malformed ZAP request", b"", b""]
    ok = frames[5] == b"CURVE" and len(frames) >= 7 and len(frames[6]) == 32 and z85.encode(frames[6]) in allowed
    return [b"1.0", rid, b"200" if ok else b"400", b"OK" if ok else b"key not allowed", b"", b""]


class ZapHandler:
    """Answers libzmq's ZAP requests for one context from a plain thread that polls with a timeout,
    so stopping it is bounded (pyzmq's ThreadAuthenticator joins its asyncio thread without a limit).
    Bound before any CURVE socket exists, so no handshake misses it."""

    ENDPOINT = "inproc://zeromq.zap.01"

    def __init__(self, ctx, allowed: set[bytes]):
        import threading

        import zmq

        self.allowed, self.denied = allowed, 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        try:
            self._sock.bind(self.ENDPOINT)
        except zmq.ZMQError as e:
            self._sock.close()
            raise TlcutError(f"cannot start the ZAP handler ({e}): one encrypted edge per process") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tlcut-zap")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(100):
                    continue
                reply = zap_decide(self._sock.recv_multipart(), self.allowed)
                if reply[2] != b"200":
                    self.denied += 1
                    log.warning("connection refused: its CURVE key is not in the allow-list (%s)", reply[3].decode())
                self._sock.send_multipart(reply)
        finally:
            self._sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._thread.is_alive():
            log.error("the ZAP handler did not stop within 5 s")


@dataclass
class ClientCurve:
    """The device's side: its key pair and the edge's pinned public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_files(cls, secret_file, edge_public_file) -> "ClientCurve":
        public, secret = load_secret(secret_file)
        return cls(public, secret, load_public(edge_public_file))

    def apply(self, sock) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server


def loopback_of(endpoint: str) -> str:
    """``endpoint`` on this machine only: tcp://*:5555 -> tcp://127.0.0.1:5555."""
    port = endpoint.split("://", 1)[-1].rpartition(":")[2]
    return f"tcp://127.0.0.1:{port}" if port.isdigit() else "tcp://127.0.0.1:5555"


def check_scheme(endpoint: str) -> None:
    """An endpoint names its transport: '127.0.0.1:5555' is a missing tcp://, not a plain-TCP risk."""
    if "://" not in endpoint:
        fix = f"tcp://127.0.0.1:{endpoint}" if endpoint.isdigit() else f"tcp://{endpoint}"
        raise TlcutError(f"'{endpoint}' names no transport: write {fix} (or ipc://PATH)")


def require_policy(endpoint: str, curve, insecure: bool, role: str) -> None:
    """Encryption on by default outside loopback; plain TCP there only when asked for, with a warning.
    The edge's refusal names the loopback endpoint too: what a first try on one machine wants."""
    check_scheme(endpoint)
    if curve is not None or is_loopback(endpoint):
        return
    if not insecure:
        if role == "edge":
            raise TlcutError(f"refusing plain TCP on {endpoint}: features of product images would cross unencrypted; "
                             f"to try it on this machine, listen on loopback: --bind {loopback_of(endpoint)}; for a "
                             "real link give --key edge.key_secret --allow DIR (make keys with `tlcut keys`), "
                             "or --insecure for a lab link")
        raise TlcutError(f"refusing plain TCP on {endpoint}: features of product images would cross unencrypted; "
                         "give --key device.key_secret --edge-key edge.key (make keys with `tlcut keys`), "
                         "or --insecure for a lab link")
    print(f"tlcut: warning: plain TCP on {endpoint}: the link is neither encrypted nor authenticated (--insecure)",
          file=sys.stderr, flush=True)
