"""`tlcut bench`: measure every cut on the machine that will run it.

Timing a separate head and tail for each of DenseNet169's ~100 cuts would build ~200 sessions and
run the model ~100 times per repeat. Instead the whole model runs under the backend's per-node
profiler, alternating with plain runs: each profiled run gives every node's share of a run and the
plain run beside it the run's wall-clock time (the profiler slows what it measures; a noisy moment
on a shared machine hits both alike). The head of cut k is then the share up to the cut's node
times that wall time, the tail the rest, per run, which gives percentiles too. A sample of real
cut halves is then timed as separate sessions and set against these prefix sums (``check`` in the
profile): that is how close the shortcut is.

The TL's cost is timed per distinct cut shape with the DeviceTL/EdgeTL alone, and serialization
with tlcut's own wire encoding of a tensor of the payload's size, in each wire encoding; the model
input also as the camera's uint8 pixels and as a JPEG of real images (their size is the point).

That is one engine configuration (backend, precision, threads); bench_configs.py runs it once per
configuration the bundle and the machine can run, into one profile (profile.py).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time

import numpy as np
import onnx

from tlcut import __version__, encodings
from tlcut.machine import cpu_model, has_vnni
from tlcut.bundle import Bundle, Cut
from tlcut.errors import TlcutError
from tlcut.runtime import backends, protocol
from tlcut.stats import summary
from tlcut.toolchain import surgery, wire_sizes

from tlcut.toolchain.profile import FORMAT  # noqa: F401  (the profile's format, owned by profile.py)


def stats(seconds) -> dict:
    """Milliseconds: median, p90, p99, mean, min, max and the sample count."""
    return summary(seconds, 1e3)


def random_feed(inputs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i["name"]: rng.random(i["shape"], dtype=np.float64).astype(i["dtype"]) for i in inputs}


#: The sleep before each timed run, by role. The edge idles between requests for at least the link's
#: round trip, and an engine that has idled runs slower than one timed back to back (OpenVINO int8 on
#: DenseNet169 here: 11.0 ms back to back, 13.0 ms after 30 ms idle: benchmarks/results/idle-gap).
#: The device's whole model (device only) runs back to back, and a sleep would also refill a CPU
#: quota and flatter it (device only on OpenVINO int8 under the demo's 0.2-CPU quota: 51.8 ms benched
#: after 30 ms gaps, 78.8 ms served), so the device is timed back to back.
IDLE_MS = {"device": 0.0, "edge": 30.0}
#: A head, though, runs once per request, after the device has waited at least a round trip for the
#: last answer: under a CPU quota it starts on a refilled quota. OpenVINO int8's cut 5 head under the
#: demo's 0.2-CPU quota timed 19.6 ms back to back (two 10 ms quota periods) and ran in 2.8 ms in the
#: requests (benchmarks/results/demo-DenseNet169-min-cut-5 at 0532a81), so real heads are timed after
#: this sleep in either role. (A float32 head is a share of the whole model's back-to-back runs.)
HEAD_IDLE_MS = 30.0


def idle_ms_for(role: str, idle_ms: float | None = None, head: bool = False) -> float:
    """``idle_ms`` as given, or the role's default (``head``: for a real head's timed runs)."""
    if idle_ms is not None:
        return idle_ms
    return HEAD_IDLE_MS if head else IDLE_MS.get(role, 0.0)


def time_runner(runner, feed, warmup: int, iterations: int) -> list[float]:
    """Each timed run after the runner's ``idle_s`` of sleep (0: back to back)."""
    for _ in range(warmup):
        runner.infer(feed, check=False)
    out = []
    idle = getattr(runner, "idle_s", 0.0)
    for _ in range(iterations):
        if idle:
            time.sleep(idle)
        t0 = time.perf_counter()
        runner.infer(feed, check=False)
        out.append(time.perf_counter() - t0)
    return out


def time_call(fn, iterations: int) -> list[float]:
    fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def wire_times(shape, dtype: str, iterations: int) -> tuple[list[float], list[float]]:
    """Encode and decode a tensor with tlcut's wire protocol, as device and edge do per request."""
    a = np.zeros(shape, dtype=dtype)
    ser = time_call(lambda: protocol.tensor_frames(protocol.REQUEST, a, 1, 0), iterations)
    frames = [bytes(f) for f in protocol.tensor_frames(protocol.REQUEST, a, 1, 0)]
    de = time_call(lambda: protocol.decode(frames), iterations)
    return ser, de


def _timed_encodings(applies_to: str, qualities=(None,)) -> list[tuple[str, int | None]]:
    """(encoding, quality) for each encoding of ``applies_to`` beside raw (timed by wire_times), once
    per quality for one that takes a quality."""
    out = []
    for e in encodings.ALL:
        if applies_to in e.applies_to and e.name != encodings.DEFAULT:
            out += [(e.name, q) for q in qualities] if e.default_quality is not None else [(e.name, None)]
    return out


def encoding_times(shape, dtype: str, iterations: int) -> dict:
    """Per wire encoding of a cut's tensor: the device's encode + framing and the edge's decode + restore."""
    out = {}
    if dtype != "float32":
        return out
    a = np.random.default_rng(2).random(shape, dtype=np.float32)
    for enc, _ in _timed_encodings(encodings.CUT):
        def ser():
            w, code, scale, zp = protocol.encode(a, enc)
            return protocol.tensor_frames(protocol.REQUEST, w, 1, 0, encoding=code, scale=scale, zero_point=zp)

        frames = [bytes(f) for f in ser()]

        def de():
            h, w = protocol.decode(frames)
            return protocol.restore(h, w, shape)

        out[enc] = {"serialize": stats(time_call(ser, iterations)), "deserialize": stats(time_call(de, iterations)),
                    "bytes": len(frames[1])}
    return out


def input_encoding_times(bundle: Bundle, iterations: int, images: str | None = None,
                         jpeg_quality=(90,), progress=print) -> dict:
    """What sending the model input as pixels costs: the camera's uint8 image, or a JPEG of it per
    quality. Device: encode + framing of a float32 input, as `tlcut run` does (a camera that hands
    over uint8 frames skips the conversion, so this errs against these options); edge: decode +
    restore to float32. A JPEG's size depends on the picture, so real images are used: 'elpv' (the
    embedded solar cells, the default where installed) or a folder; noise, the fallback, is said."""
    try:
        bundle.image_shape()
        scale, zp = bundle.pixels
    except TlcutError:
        return {"encodings": [], "images": None, "why_none": "the input is not an image"}
    from tlcut.runtime import run as rt

    source = images if images is not None else rt.default_images(bundle)
    xs = rt.inputs(bundle, source, 32)
    served = tuple(bundle.inputs[0]["shape"])
    out = {"encodings": [], "images": source or "random (no images given, elpv-dataset not installed): JPEG sizes are those of noise"}
    for enc, q in _timed_encodings(encodings.INPUT, [int(q) for q in jpeg_quality]):
        kw = {"scale": scale, "zero_point": zp, **({"quality": q} if q else {})}
        sizes, ser, de = [], [], []
        for i in range(max(iterations, len(xs))):
            x = xs[i % len(xs)]
            t0 = time.perf_counter()
            w, code, sc, z = protocol.encode(x, enc, **kw)
            frames = [bytes(f) for f in protocol.tensor_frames(protocol.REQUEST, w, 1, protocol.INPUT_CUT,
                                                               encoding=code, scale=sc, zero_point=z)]
            t1 = time.perf_counter()
            h, wire = protocol.decode(frames)
            protocol.restore(h, wire, served)
            t2 = time.perf_counter()
            ser.append(t1 - t0)
            de.append(t2 - t1)
            sizes.append(len(frames[1]))
        out["encodings"].append({"encoding": enc, "quality": q, "serialize": stats(ser), "deserialize": stats(de),
                                 "bytes": int(np.median(sizes)), "bytes_min": int(min(sizes)), "bytes_max": int(max(sizes))})
        progress(f"[bench] input as {enc}{f' q{q}' if q else ''}: {int(np.median(sizes))} B median")
    return out


def machine_info(threads) -> dict:
    import onnxruntime

    info = {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": cpu_model(), "cpus_visible": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "threads": threads,
            "cpu_quota": _cpu_quota(), "vnni": has_vnni()}
    return info


def _cpu_quota() -> str | None:
    try:
        cg = open("/proc/self/cgroup").read().strip().splitlines()[-1].split(":", 2)[2]
        p = f"/sys/fs/cgroup{cg}/cpu.max"
        return open(p).read().strip() if os.path.exists(p) else None
    except (OSError, IndexError):
        return None


def check_settings(role: str, warmup: int, iterations: int, slowdown: float, idle_ms: float = 0.0) -> None:
    """Refuse impossible settings before any configuration is chosen or timed."""
    if role not in ("device", "edge"):
        raise TlcutError(f"--role must be device or edge, got '{role}'")
    if iterations < 1 or warmup < 0:
        raise TlcutError("--iterations must be at least 1 and --warmup at least 0")
    if slowdown < 1.0:
        raise TlcutError(f"--slowdown must be at least 1, got {slowdown:g}")
    if not 0 <= idle_ms <= 10_000:
        raise TlcutError(f"--idle-ms must be 0..10000 ms, got {idle_ms:g}")


def bench(bundle: Bundle, *, role: str, warmup: int = 3, iterations: int = 20, threads: int | None = None,
          check: int = 4, backend: str = backends.DEFAULT, progress=print, bar=None, slowdown: float = 1.0,
          images: str | None = None, jpeg_quality=(90,), precision: str = "float32", shared: dict | None = None,
          idle_ms: float | None = None, head_idle_ms: float | None = None) -> dict:
    """Measure every cut of ``bundle`` on this machine with one engine configuration; return what a
    version 1 profile holds (see module doc). ``bench_engines`` profiles several into one version 2.

    ``slowdown`` > 1 emulates a slower device without root: every engine run is stretched to that
    many times its duration, exactly as `tlcut run --slowdown` stretches them (runners/base.py).
    ``precision`` int8 times the bundle's int8 halves as they are (``_int8_halves``). ``shared``
    keeps what no engine changes (wire and input encoding costs) for the next configuration.
    ``idle_ms``: the sleep before each timed run of the model and its halves, as a served engine
    idles between requests (0: back to back, as benchmark_app and trtexec time by default; None:
    the role's ``IDLE_MS``). ``head_idle_ms``: the same for real heads (None: ``idle_ms`` where
    given, else ``HEAD_IDLE_MS``).
    """
    head_idle_ms = idle_ms_for(role, idle_ms if head_idle_ms is None else head_idle_ms, head=True)
    idle_ms = idle_ms_for(role, idle_ms)
    check_settings(role, warmup, iterations, slowdown, idle_ms)
    check_settings(role, warmup, iterations, slowdown, head_idle_ms)
    be = _Stretched(backends.get(backend), slowdown, idle_ms / 1e3, head_idle_ms / 1e3)
    bar = bar or _no_bar
    feed = random_feed(bundle.inputs)
    model_path = bundle.model_path
    t_start = time.perf_counter()
    shared = {} if shared is None else shared

    if precision != "float32":
        full_wall, outputs, prefix, rows, checks, method = _int8_halves(bundle, be, precision, feed, warmup, iterations,
                                                                        threads, progress, bar)
    else:
        full_wall, outputs, prefix, total, method = _profiled_whole(bundle, be, feed, warmup, iterations, threads,
                                                                    progress, bar)
        rows, checks = [], []
    cuts = bundle.cuts
    tl_cache: dict[tuple, tuple] = {}
    enc_cache = shared.setdefault("encodings", {})
    wire = shared.setdefault("wire", {})

    def wire_of(c: Cut, tl: bool) -> dict:
        """What crosses at cut c costs the same whatever engine computed it: timed once per bench."""
        if c.index not in wire:
            w = wire[c.index] = {}
            ser, de = wire_times(c.shape, c.dtype, max(iterations, 20))
            w["serialize"], w["deserialize"] = stats(ser), stats(de)
            w["encodings"] = _cached(enc_cache, (c.shape, c.dtype),
                                     lambda: encoding_times(c.shape, c.dtype, max(iterations, 20)))
            if c.tl:
                w["encodings_tl"] = _cached(enc_cache, (c.tl_shape, c.dtype),
                                            lambda: encoding_times(c.tl_shape, c.dtype, max(iterations, 20)))
                ser_tl, de_tl = _cached(enc_cache, ("raw", c.tl_shape, c.dtype),
                                        lambda: wire_times(c.tl_shape, c.dtype, max(iterations, 20)))
                w["serialize_tl"], w["deserialize_tl"] = stats(ser_tl), stats(de_tl)
        return {k: v for k, v in wire[c.index].items() if tl or not k.endswith("_tl")}

    if precision == "float32":
        progress(f"[bench] TL and wire costs for {len(cuts)} cuts")
        for c in bar("TL and wire", "cut")(cuts):
            if prefix is not None:
                head = prefix[:, c.node_index]
                tail = total - head
            else:
                head, tail = _time_halves(be, model_path, c, feed, warmup, iterations, threads)
            row = {"index": c.index, "tensor": c.tensor, "layer": c.layer, "bytes": c.bytes, "tl": c.tl,
                   "tl_bytes": c.tl_bytes, "head": stats(head), "tail": stats(tail), **wire_of(c, c.tl),
                   **({"tl_kind": c.tl_kind} if c.tl_kind != "pool" else {})}  # absent: pool, as profiles before
            if c.tl:
                key = (c.shape, c.layout, c.dtype)
                if key not in tl_cache:
                    tl_cache[key] = _time_tl(be, c, warmup, iterations, threads)
                dtl, etl = tl_cache[key]
                row.update(device_tl=stats(dtl), edge_tl=stats(etl))
            rows.append(row)
    else:
        for row in rows:
            row.update(wire_of(cuts[row["index"]], row["tl"]))

    if role == "edge":
        # What an entropy-coded tensor weighs depends on the image, not on the machine: measured
        # once, on real images, on the edge (the device may be emulated at a fifth of a core). The
        # plan reads these sizes from whichever profile has them.
        wire_sizes.record(bundle, rows, images, threads=threads, progress=progress, shared=shared)
    inp = bundle.inputs[0]
    if "input" not in shared:
        in_ser, in_de = wire_times(inp["shape"], inp["dtype"], max(iterations, 20))
        out_arr = next(iter(outputs.values()))
        out_ser, out_de = wire_times(out_arr.shape, out_arr.dtype.name, max(iterations, 20))
        in_enc = input_encoding_times(bundle, max(iterations, 20), images, jpeg_quality, progress)
        shared["input"] = {"name": inp["name"], "bytes": int(np.prod(inp["shape"])) * np.dtype(inp["dtype"]).itemsize,
                           "serialize": stats(in_ser), "deserialize": stats(in_de), **in_enc}
        shared["output"] = {"bytes": int(out_arr.nbytes), "serialize": stats(out_ser), "deserialize": stats(out_de)}

    if check and prefix is not None:
        sample = _sample(cuts, check)
        progress(f"[bench] checking prefix sums against real halves of cuts {[c.index for c in sample]}")
        by_index = {r["index"]: r for r in rows}
        for c in bar("check", "cut")(sample):
            checks.append(_check(be, model_path, c, feed, warmup, iterations, threads, by_index[c.index]))
    errs = [abs(x["head_err_pct"]) for x in checks] + [abs(x["tail_err_pct"]) for x in checks]
    profile = {
        "format": FORMAT, "version": 1, "role": role,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "tlcut_version": __version__,
        "model": bundle.name, "model_sha256": bundle.model_sha256, "backend": be.name,
        "machine": machine_info(threads),
        "settings": {"warmup": warmup, "iterations": iterations, "method": method, "slowdown": slowdown,
                     "idle_ms": idle_ms, "head_idle_ms": head_idle_ms},
        "full": stats(full_wall) if full_wall is not None else None,
        "input": shared["input"], "output": shared["output"],
        "cuts": rows,
        "check": {"cuts": checks, "median_abs_err_pct": float(np.median(errs)) if errs else None,
                  "max_abs_err_pct": float(np.max(errs)) if errs else None},
        "bench_seconds": round(time.perf_counter() - t_start, 2),
    }
    if precision != "float32":
        profile["precision"] = precision
    if checks:
        progress(f"[bench] prefix sums vs real halves: median |error| {profile['check']['median_abs_err_pct']:.1f}%, "
                 f"max {profile['check']['max_abs_err_pct']:.1f}% (the plan predicts each cut's head and tail from "
                 "the profiled run's prefix sums; a real half may take that much more or less than predicted)")
    progress(f"[bench] done in {profile['bench_seconds']:.1f} s")
    return profile


def _no_bar(desc: str, unit: str):
    return lambda items: items


def _profiled_whole(bundle, be, feed, warmup, iterations, threads, progress, bar):
    """The float32 whole model's wall times, its outputs, and each cut's head as prefix sums of node
    shares (None: the engine has no profiler and ONNX Runtime cannot stand in; time halves instead)."""
    model_path = bundle.model_path
    progress(f"[bench] {bundle.name}: whole model, {warmup} warm-up + {iterations} timed runs")
    plain = be.runner(model_path, threads=threads)
    # An engine without a per-node profiler (OpenVINO) borrows ONNX Runtime's node shares; its own
    # wall-clock runs set the times, and the real-halves check below says how far that carries.
    prof_be = be if be.has_node_profiler else _Stretched(backends.get(backends.ONNXRT), 1.0, 0.0)
    profiled = prof_be.runner(model_path, threads=threads, profile=True, idle=False)
    with plain:
        outputs = plain.infer(feed, check=False)
        if profiled is None:
            return np.array(time_runner(plain, feed, warmup, iterations)), outputs, None, None, "separate halves"
        # Profiled and plain runs alternate, so both see the same moments of a shared machine.
        # A profiled run is slower than a plain one, so the profile gives each node's share of a
        # run and the plain run beside it gives the run's wall-clock time.
        with profiled:
            full_wall = []
            for i in bar("whole model", "run")(range(warmup + iterations)):
                profiled.infer(feed, check=False)
                if plain.idle_s:
                    time.sleep(plain.idle_s)
                t0 = time.perf_counter()
                plain.infer(feed, check=False)
                if i >= warmup:
                    full_wall.append(time.perf_counter() - t0)
            nodes = prof_be.node_times(profiled, model_path, skip=warmup)
    full_wall = np.array(full_wall)
    # Each half is its own session call and pays the fixed per-call cost once.
    call = min(float(np.median(_call_overhead(be, threads, warmup, iterations))), float(full_wall.min()) / 2)
    share = np.cumsum(nodes, axis=1) / np.maximum(nodes.sum(axis=1, keepdims=True), 1e-12)
    work = full_wall - call
    prefix = share * work[:, None] + call
    total = full_wall + call  # head + tail = two calls
    return full_wall, outputs, prefix, total, f"{prof_be.name} per-node profile shares of interleaved {be.name} wall-clock runs"


def _int8_halves(bundle, be, precision, feed, warmup, iterations, threads, progress, bar):
    """An int8 configuration times the real halves the bundle holds at ``precision``: a QDQ graph's
    node shares differ from the float32 one's, and only the compiled cuts can run at int8 anyway,
    so these cuts are the configuration's rows (the plan offers int8 at them only). The whole int8
    model, where compiled, is device only and edge only. With the TL, the DeviceTL and EdgeTL are
    the TL halves' time beyond the plain halves' medians."""
    def has(kind, cut=None, tl=False):
        return bundle.find(kind, cut, tl, be.name, precision) is not None

    def timed(kind, cut, tl, x):
        with be.runner(bundle.runnable(kind, cut, tl, be.name, precision), threads=threads, head=kind == "head") as r:
            ts = np.array(time_runner(r, x, warmup, iterations))
            return ts, r.infer(x, check=False)

    full, outputs = None, None
    if has("model"):
        progress(f"[bench] {bundle.name}: whole model at {precision}, {warmup} warm-up + {iterations} timed runs")
        full, outputs = timed("model", None, False, feed)
    compiled = [c for c in bundle.cuts if has("head", c.index) and has("tail", c.index)]
    if full is None and not compiled:
        raise TlcutError(f"bundle '{bundle.path}' has no {precision} halves; compile them first: "
                         f"`tlcut compile {bundle.path} --cuts K --precision {precision} --calib elpv`")
    progress(f"[bench] real {precision} halves of cuts {[c.index for c in compiled]}")
    rows = []
    for c in bar(f"{precision} halves", "cut")(compiled):
        head, mid = timed("head", c.index, False, feed)
        tail, out = timed("tail", c.index, False, {c.tensor: next(iter(mid.values()))})
        outputs = outputs or out
        row = {"index": c.index, "tensor": c.tensor, "layer": c.layer, "bytes": c.bytes, "tl": False,
               "tl_bytes": c.tl_bytes, "head": stats(head), "tail": stats(tail),
               **({"tl_kind": c.tl_kind} if c.tl_kind != "pool" else {})}
        if c.tl and has("head", c.index, True) and has("tail", c.index, True):
            head_tl, pay = timed("head", c.index, True, feed)
            tail_tl, _ = timed("tail", c.index, True, {surgery.PAYLOAD_TL: next(iter(pay.values()))})
            row.update(tl=True, device_tl=stats(np.maximum(head_tl - np.median(head), 0.0)),
                       edge_tl=stats(np.maximum(tail_tl - np.median(tail), 0.0)))
        rows.append(row)
    return full, outputs, None, rows, [], f"real {precision} halves on {be.name}"


def _cached(cache: dict, key, make):
    if key not in cache:
        cache[key] = make()
    return cache[key]


class _Stretched:
    """A backend whose runners are stretched by ``slowdown`` (lab emulation of a slower device) and
    timed after ``idle_s`` of sleep (``runner(..., head=True)``: ``head_idle_s``; ``idle=False``: back
    to back)."""

    def __init__(self, be, slowdown: float, idle_s: float = 0.0, head_idle_s: float | None = None):
        self._be, self._slowdown, self._idle_s = be, slowdown, idle_s
        self._head_idle_s = idle_s if head_idle_s is None else head_idle_s

    def runner(self, *args, idle: bool = True, head: bool = False, **kw):
        r = self._be.runner(*args, **kw)
        if r is not None:
            r.slowdown = self._slowdown
            r.idle_s = (self._head_idle_s if head else self._idle_s) if idle else 0.0
        return r

    def __getattr__(self, name):
        return getattr(self._be, name)


def _call_overhead(be, threads, warmup, iterations) -> list[float]:
    """Wall time of a session call that does next to nothing: the fixed cost every half pays."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with be.runner(m.SerializeToString(), threads=threads) as r:
        return time_runner(r, {"x": np.zeros((1, 8), np.float32)}, warmup, iterations)


def _sample(cuts: list[Cut], n: int) -> list[Cut]:
    """``n`` cuts spread evenly over the model (always including early, middle and late ones)."""
    if n >= len(cuts):
        return list(cuts)
    idx = np.unique(np.linspace(0, len(cuts) - 1, n + 2).round().astype(int)[1:-1])
    return [cuts[i] for i in idx]


def _time_halves(be, model_path, c: Cut, feed, warmup, iterations, threads):
    model = onnx.load(str(model_path))
    with be.runner(surgery.head(model, c).SerializeToString(), threads=threads, head=True) as h:
        head = time_runner(h, feed, warmup, iterations)
        mid = h.infer(feed, check=False)
    with be.runner(surgery.tail(model, c).SerializeToString(), threads=threads) as t:
        tail = time_runner(t, {c.tensor: next(iter(mid.values()))}, warmup, iterations)
    return np.array(head), np.array(tail)


def _time_tl(be, c: Cut, warmup, iterations, threads):
    x = {c.tensor: np.random.default_rng(1).random(c.shape).astype(c.dtype)}
    with be.runner(surgery.device_tl(c).SerializeToString(), threads=threads, idle=False) as d:
        dtl = time_runner(d, x, warmup, iterations)
        payload = next(iter(d.infer(x, check=False).values()))
    with be.runner(surgery.edge_tl(c).SerializeToString(), threads=threads, idle=False) as e:
        etl = time_runner(e, {surgery.PAYLOAD_TL: payload}, warmup, iterations)
    return dtl, etl


def _check(be, model_path, c: Cut, feed, warmup, iterations, threads, row) -> dict:
    head, tail = _time_halves(be, model_path, c, feed, warmup, iterations, threads)
    hm, tm = float(np.median(head)) * 1e3, float(np.median(tail)) * 1e3
    hp, tp = row["head"]["median"], row["tail"]["median"]
    return {"index": c.index, "head_measured_ms": hm, "head_predicted_ms": hp, "head_err_pct": 100 * (hp - hm) / hm,
            "tail_measured_ms": tm, "tail_predicted_ms": tp, "tail_err_pct": 100 * (tp - tm) / tm}
