"""A Triton edge: the device's client for tails served by NVIDIA Triton (KServe v2 over gRPC or HTTP),
and a PyTriton edge that serves a bundle's tails with tlcut's own runners.

Why: a fleet that already runs Triton (behind a load balancer or KServe) can take tlcut's tails
as ordinary models (`tlcut compile BUNDLE --target triton -o REPO`, docs/triton.md), and a device
reaches it with ``tlcut run --edge triton+grpc://HOST:8001`` (or ``triton+http://HOST:8000``):
the same payloads, per-request split, retries and fallback as with tlcut's ZeroMQ edge.

Model names are fixed by ``model_name``: ``model`` (the whole model), ``cut-K`` and ``cut-K-tl``
(the tail of cut K without / with the EdgeTL), plus ``-trt`` for a TensorRT plan of the same tail.

Edge time, and where it comes from: the KServe v2 response carries no server timing, so the
client reads Triton's own per-model statistics before and after each request and takes the delta
of the success count and of queue + compute_input + compute_infer nanoseconds (arrival until the
outputs exist). Not ``success.ns`` nor ``compute_output``: they run until the request is released,
after the response has been handed to the frontend, so they overlap the reply's trip and can
exceed the device's own round trip. With this client's one request in flight and nobody else
on the model, the delta is exactly that request (count delta 1). When other clients share the
model, or with ``send``/``receive`` pipelining, the window holds several requests and the client
reports their mean (``TritonReply.edge_source`` says "stats-mean"); if the statistics endpoint is
refused (PyTriton restricts it unless told not to), edge time is 0 and ``edge_source`` is "none".
The "after" read happens when ``server_us`` is first read, after ``Device`` has stopped the
request's clock, so the extra RPC does not count as transfer; it becomes the next "before".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import numpy as np

from tlcut.bundle import ONNX
from tlcut.errors import TlcutError
from tlcut.runtime import protocol as P
from tlcut.runtime.backends import DEFAULT, TENSORRT
from tlcut.runtime.client import EdgeError, EdgeUnavailable, lazy_pirate

log = logging.getLogger("tlcut.triton")

SCHEMES = {"triton+grpc": ("grpc", 8001), "triton+http": ("http", 8000)}
WHOLE_MODEL = "model"
#: numpy dtype name <-> KServe v2 / Triton datatype
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int8": "INT8", "uint8": "UINT8",
             "int16": "INT16", "int32": "INT32", "int64": "INT64", "bool": "BOOL"}


def model_name(cut_id: int | None, tl: bool = False, engine: str = "onnx") -> str:
    """The Triton model that serves ``cut_id`` (None or P.INPUT_CUT: the whole model): the one rule
    the repository writer and the device share."""
    name = WHOLE_MODEL if cut_id is None or cut_id == P.INPUT_CUT else f"cut-{int(cut_id)}" + ("-tl" if tl else "")
    return name + ("-trt" if engine == TENSORRT else "")


def is_triton(endpoint: str | None) -> bool:
    return bool(endpoint) and endpoint.split("://", 1)[0] in SCHEMES


def parse_endpoint(endpoint: str) -> tuple[str, str, str]:
    """``triton+grpc://HOST:PORT[?engine=tensorrt]`` -> (protocol, "HOST:PORT", engine)."""
    u = urlsplit(endpoint)
    if u.scheme not in SCHEMES or not u.hostname:
        raise TlcutError(f"bad Triton endpoint '{endpoint}'; write it like triton+grpc://HOST:8001 or "
                         f"triton+http://HOST:8000")
    proto, port = SCHEMES[u.scheme]
    engine = parse_qs(u.query).get("engine", ["onnx"])[0]
    if engine not in (ONNX, TENSORRT):
        raise TlcutError(f"'{endpoint}': engine={engine} is not onnx or tensorrt")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return proto, f"{host}:{u.port or port}", engine


@dataclass
class TritonReply:
    """What ``EdgeClient.request`` returns as a header, for a Triton reply: ids, the result's shape
    and dtype, and ``server_us`` (see the module docstring; read lazily)."""

    request_id: int
    cut_id: int
    flags: int
    shape: tuple
    dtype: str
    type: int = P.RESULT
    status: int = 0
    edge_source: str = "pending"
    _resolve: object = field(default=None, repr=False)
    _server_us: int | None = field(default=None, repr=False)

    @property
    def server_us(self) -> int:
        if self._server_us is None:
            self._server_us, self.edge_source = self._resolve() if self._resolve else (0, "none")
        return self._server_us


class TritonClient:
    """The device's link to a Triton server; the surface of ``client.EdgeClient``.

    A request that fails to connect or gets no answer within ``timeout_s`` is sent again on a fresh
    client, up to ``retries`` times, then raises EdgeUnavailable (the Device then runs locally).
    Triton tails take the cut tensor as it is: only the raw encoding (float32) is accepted.
    """

    def __init__(self, endpoint: str, timeout_s: float = 10.0, retries: int = 0, headers: dict | None = None,
                 inflight: int = 4):
        self.protocol, self.url, self.engine = parse_endpoint(endpoint)
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError:
            raise TlcutError(f"--edge {endpoint} needs tritonclient: pip install 'tlcut[triton]'") from None
        self.tc = tc
        self.endpoint, self.timeout_s, self.retries = endpoint, timeout_s, retries
        self.headers = headers
        self.dropped = self.retried = 0
        self.last_payload_bytes = 0
        self._ids = iter(range(1, 2**63))
        self._meta: dict[str, tuple[str, str]] = {}  # model -> (input name, output name)
        self._stats: dict[str, tuple[int, int]] = {}  # model -> (count, ns) at the last read
        self._stats_ok = True
        self._inflight = inflight
        self._pool = None
        self._futures: dict[int, object] = {}
        self._lock = threading.Lock()
        self.client = None
        self._connect()

    # -- connection ------------------------------------------------------------------------
    def _connect(self):
        if self.client is not None:
            self._close_client()
        if self.protocol == "grpc":
            self.client = self.tc.InferenceServerClient(self.url)
        else:
            self.client = self.tc.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                        network_timeout=self.timeout_s, concurrency=self._inflight)

    def _close_client(self):
        try:
            self.client.close()
        except Exception:  # a client whose connection already broke
            pass
        self.client = None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.client is not None:
            self._close_client()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _unavailable(self, e: Exception) -> bool:
        """Whether ``e`` means the server was not reached or did not answer in time (retry), rather
        than a refusal of this request (EdgeError)."""
        status = getattr(e, "status", lambda: None)
        code = str(status() if callable(status) else status or "")
        if any(s in code for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")):
            return True
        if isinstance(e, (OSError, TimeoutError, ConnectionError)):
            return True
        text = str(e).lower()
        return any(s in text for s in ("timed out", "timeout", "connection refused", "failed to connect",
                                       "unavailable", "deadline"))

    def _call(self, fn, *args, **kw):
        """``fn(client, ...)`` with the timeout; EdgeUnavailable or EdgeError for what went wrong."""
        try:
            if self.protocol == "grpc":
                kw["client_timeout"] = self.timeout_s
            return fn(self.client, *args, headers=self.headers, **kw)
        except Exception as e:
            if self._unavailable(e):
                raise EdgeUnavailable(f"no reply from Triton at {self.url} ({self.protocol}) within "
                                      f"{self.timeout_s:g} s: {str(e).splitlines()[0][:200]}; is tritonserver "
                                      f"running there with the models of `tlcut compile --target triton`?") from None
            msg = str(e).splitlines()[0][:300]
            code = P.E_WRONG_CUT if "unknown model" in msg.lower() or "not found" in msg.lower() else (
                P.E_WRONG_TENSOR if "shape" in msg.lower() or "datatype" in msg.lower() else P.E_INTERNAL)
            raise EdgeError(code, msg) from None

    # -- model metadata and statistics -----------------------------------------------------
    def _model(self, cut_id: int, flags: int) -> str:
        name = model_name(cut_id, bool(flags & P.FLAG_TL), self.engine)
        if name not in self._meta:
            md = self._call(lambda c, **kw: c.get_model_metadata(name, **kw))
            md = md if isinstance(md, dict) else _message_to_dict(md)
            self._meta[name] = (md["inputs"][0]["name"], md["outputs"][0]["name"])
            self._stats[name] = self._read_stats(name) or (0, 0)
        return name

    def _read_stats(self, name: str) -> tuple[int, int] | None:
        if not self._stats_ok:
            return None
        try:
            kw = {"as_json": True, "client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            st = self.client.get_inference_statistics(name, headers=self.headers, **kw)
            s = st["model_stats"][0]["inference_stats"]
            # arrival to outputs computed; compute_output (and success, which ends at the request's
            # release) also holds the sending of the response, which the device counts as transfer
            ns = sum(int(s.get(k, {}).get("ns", 0)) for k in ("queue", "compute_input", "compute_infer"))
            return int(s["success"].get("count", 0)), ns
        except Exception as e:
            self._stats_ok = False
            log.warning("Triton at %s refuses its statistics (%s): edge time is reported as 0",
                        self.url, str(e).splitlines()[0][:200])
            return None

    def resync(self) -> None:
        """A fresh statistics baseline for every model used so far: call it after other clients
        have used them, so the next request's window holds that request alone."""
        for name in self._stats:
            self._stats[name] = self._read_stats(name) or self._stats[name]

    def _edge_time(self, name: str):
        def resolve():
            before = self._stats.get(name)
            now = self._read_stats(name)
            # Triton may count a request just after its response left: wait briefly for it (off the clock)
            for _ in range(20):
                if now is None or before is None or now[0] > before[0]:
                    break
                time.sleep(0.0005)
                now = self._read_stats(name)
            if now is None or before is None:
                return 0, "none"
            self._stats[name] = now
            n, ns = now[0] - before[0], now[1] - before[1]
            if n <= 0:
                return 0, "none"
            return int(ns / n / 1e3), ("stats" if n == 1 else "stats-mean")
        return resolve

    # -- requests --------------------------------------------------------------------------
    def _infer(self, name: str, array: np.ndarray):
        iname, oname = self._meta[name]
        tc = self.tc
        dt = DATATYPES.get(array.dtype.name)
        if dt is None:
            raise TlcutError(f"Triton takes no {array.dtype.name} tensors here")
        inp = tc.InferInput(iname, list(array.shape), dt)
        if self.protocol == "grpc":
            inp.set_data_from_numpy(array)
            out = [tc.InferRequestedOutput(oname)]
        else:
            inp.set_data_from_numpy(array, binary_data=True)
            out = [tc.InferRequestedOutput(oname, binary_data=True)]
        res = self._call(lambda c, **kw: c.infer(name, [inp], outputs=out, **kw))
        return res.as_numpy(oname)

    def _check(self, encoding: str):
        if encoding != "raw":
            raise TlcutError(f"--encoding {encoding} is not for a Triton edge: its tails take the cut tensor as "
                             f"it is (float32); use --encoding raw, or tlcut's own edge (tcp://) for {encoding}")

    def request(self, array: np.ndarray, cut_id: int, flags: int = 0, encoding: str = "raw", **_encode_kw):
        """(result, TritonReply) for one tensor; retries on a fresh client, then EdgeUnavailable.
        ``_encode_kw`` (EdgeClient's encoding parameters) only exist for the non-raw encodings refused here."""
        self._check(encoding)
        array = np.ascontiguousarray(array)
        self.last_payload_bytes = array.nbytes

        def attempt():
            rid = next(self._ids)
            name = self._model(cut_id, flags)
            return rid, name, self._infer(name, array)

        rid, name, y = lazy_pirate(attempt, self.retries, reconnect=self._connect, on_retry=self._count_retry)
        return y, TritonReply(rid, cut_id, flags & P.FLAG_TL, tuple(y.shape), y.dtype.name,
                              _resolve=self._edge_time(name))

    def _count_retry(self) -> None:
        self.retried += 1

    def send(self, array: np.ndarray, cut_id: int, flags: int = 0, encoding: str = "raw", **_encode_kw) -> int:
        """Start a request without waiting (a thread per request in flight); ``receive`` its reply."""
        from concurrent.futures import ThreadPoolExecutor

        self._check(encoding)
        array = np.ascontiguousarray(array)
        self.last_payload_bytes = array.nbytes
        name = self._model(cut_id, flags)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._inflight, thread_name_prefix="tlcut-triton")
        rid = next(self._ids)
        self._futures[rid] = (self._pool.submit(self._infer, name, array), name, cut_id, flags)
        return rid

    def receive(self, rid: int, timeout_s: float | None = None):
        from concurrent.futures import TimeoutError as FutTimeout

        fut, name, cut_id, flags = self._futures.pop(rid)
        try:
            y = fut.result(self.timeout_s if timeout_s is None else timeout_s)
        except (EdgeUnavailable, FutTimeout):
            self._futures.clear()
            self._connect()
            raise EdgeUnavailable(f"no reply from Triton at {self.url} within {self.timeout_s:g} s") from None
        return y, TritonReply(rid, cut_id, flags & P.FLAG_TL, tuple(y.shape), y.dtype.name,
                              _resolve=self._edge_time(name))

    def ping(self, timeout_s: float | None = None):
        """Server liveness (``/v2/health/live``); EdgeUnavailable when there is no answer."""
        old, self.timeout_s = self.timeout_s, (self.timeout_s if timeout_s is None else timeout_s)
        try:
            if self.protocol == "http" and timeout_s is not None:
                self._connect()
            try:
                live = self._call(lambda c, **kw: c.is_server_live(**kw))
            except EdgeUnavailable:
                self._connect()
                raise
        finally:
            self.timeout_s = old
        if not live:
            raise EdgeUnavailable(f"Triton at {self.url} answers but is not live")
        return P.Header(type=P.PONG)


def _message_to_dict(msg) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(msg, preserving_proto_field_name=True)


# -- a PyTriton edge serving a bundle with tlcut's runners -------------------------------------

def pytriton_ready() -> str | None:
    """Why PyTriton's tritonserver cannot serve from this interpreter, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        return "nvidia-pytriton is not installed: pip install 'tlcut[triton]'"
    if int(np.__version__.split(".")[0]) >= 2:
        return (f"PyTriton 0.7 needs numpy<2 (with numpy {np.__version__} its Python backend answers empty "
                f"tensors): run it from a venv with numpy<2 and point TLCUT_TRITON_PYTHON at its python "
                f"(docs/triton.md)")
    return None


def _match_libpython():
    """Make Triton's Python-backend stub load this interpreter's libpython, not the system's one of
    the same minor version (a mismatch fails at model load: docs/triton.md)."""
    import os
    import sysconfig

    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        cur = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir and libdir not in cur.split(":"):
            os.environ["LD_LIBRARY_PATH"] = libdir + (":" + cur if cur else "")


def serve_pytriton(bundle_path, cuts: list[str], *, tl: str = "both", grpc_port: int = 8001, http_port: int = 8000,
                   metrics_port: int = 8002, backend: str = DEFAULT, threads: int | None = None, stop=None,
                   on_ready=None, max_batch: int = 0, max_queue_delay_us: int = 0) -> None:
    """Serve the tails of ``cuts`` (and the whole model) of a bundle from PyTriton's tritonserver,
    each bound to a tlcut runner, under ``model_name``'s names, until ``stop`` is set or SIGINT.

    Why: the wheel's Triton has only the Python backend, so this is how a real tritonserver serves
    tlcut's tails here (tests, benchmarks/communicator.py). Statistics are left unrestricted so the
    device can read edge time. ``max_batch`` > 0 turns on Triton's dynamic batching for the cut
    tails, on their batched builds (`tlcut compile --batch dynamic`): what benchmarks/edge_scaling.py
    sets against tlcut's own batching edge."""
    why = pytriton_ready()
    if why:
        raise TlcutError(why)
    _match_libpython()
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    from tlcut.bundle import Bundle
    from tlcut.placement import EDGE, Placement, tl_modes
    from tlcut.runtime import backends

    b = Bundle.open(bundle_path)
    be = backends.get(backend)
    served: dict[str, object] = {model_name(None): be.runner(b.runnable("model", engine=be.name), threads=threads)}
    batched: set[str] = set()
    for spec in cuts:
        p = Placement.resolve(b, spec)
        if p.where == EDGE:
            continue
        cut = b.cuts[p.cut]
        for with_tl in tl_modes(cut, tl):
            if tl == "both" and with_tl and not b.find("tail", cut.index, True):
                continue
            name = model_name(cut.index, with_tl)
            art = b.batched_tail(cut.index, with_tl, be.name) if max_batch > 0 else None
            if max_batch > 0 and art is None:
                raise TlcutError(f"dynamic batching needs a batched tail of cut {cut.index}: run `tlcut compile "
                                 f"{bundle_path} --cuts {cut.index} --batch dynamic`")
            path = b.path / art.file if art else b.runnable("tail", cut.index, with_tl, be.name)
            served[name] = be.runner(path, threads=threads)
            if art:
                batched.add(name)
    cfg = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    sec = TritonSecurityConfig(restricted_endpoints=["model-repository", "shared-memory", "trace", "logging"])
    with Triton(config=cfg, security_config=sec) as triton:
        for name, r in served.items():
            r.activate()
            (iname, (idt, ishape)), = r.input_metadata().items()
            if name in batched:
                from pytriton.decorators import batch
                from pytriton.model_config import DynamicBatcher

                ishape = [d if isinstance(d, int) and d > 0 else 1 for d in ishape]  # the symbolic batch
                outs = r.infer({iname: np.zeros(ishape, idt)}, check=False)

                def run(_r=r, **inputs):
                    return _r.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()}, check=False)

                triton.bind(model_name=name, infer_func=batch(run),
                            inputs=[Tensor(name=iname, dtype=idt, shape=tuple(ishape[1:]))],
                            outputs=[Tensor(name=k, dtype=v.dtype, shape=v.shape[1:]) for k, v in outs.items()],
                            config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(
                                max_queue_delay_microseconds=max_queue_delay_us)))
                continue
            feed = {iname: np.zeros(ishape, idt)}
            outs = r.infer(feed, check=False)
            triton.bind(model_name=name, infer_func=_infer_func(r, iname),
                        inputs=[Tensor(name=iname, dtype=idt, shape=tuple(ishape))],
                        outputs=[Tensor(name=k, dtype=v.dtype, shape=v.shape) for k, v in outs.items()],
                        config=ModelConfig(batching=False))
        triton.run()
        log.info("PyTriton serving %s on gRPC %d, HTTP %d", ", ".join(served), grpc_port, http_port)
        if on_ready:
            on_ready(list(served))
        try:
            while stop is None or not stop.is_set():
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
    for r in served.values():
        r.deactivate()


def _infer_func(runner, iname):
    def infer(requests):
        return [runner.infer({iname: np.ascontiguousarray(req[iname])}, check=False) for req in requests]
    return infer


def main(argv=None) -> int:
    """``python -m tlcut.runtime.triton BUNDLE --cut K ... [--grpc-port P --http-port P --metrics-port P]``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m tlcut.runtime.triton", description=serve_pytriton.__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--cut", action="append", default=[])
    ap.add_argument("--tl", default="both", choices=["on", "off", "both"])
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-batch", type=int, default=0, help="Triton dynamic batching up to N (batched tails)")
    ap.add_argument("--max-queue-delay-us", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        serve_pytriton(a.bundle, a.cut, tl=a.tl, grpc_port=a.grpc_port, http_port=a.http_port,
                       metrics_port=a.metrics_port, threads=a.threads, max_batch=a.max_batch,
                       max_queue_delay_us=a.max_queue_delay_us,
                       # a line of its own even where tritonserver's log shares the pipe mid-line
                       on_ready=lambda names: print("\nREADY " + " ".join(names), flush=True))
    except TlcutError as e:
        print(f"tlcut: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
