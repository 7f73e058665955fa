"""`tlcut bench` over engine configurations: backend x precision x threads, into one profile.

A backend counts where it runs here (a one-node model loads and runs); a precision where the
bundle holds it (int8: `tlcut compile --precision int8`); threads are what the user gives. Like
trtexec and benchmark_app, the choice is explicit when asked for (``--engines``) and exhaustive
otherwise; what could not run is said, not silently dropped.
"""

from __future__ import annotations

import time

from tlcut.bundle import PRECISIONS, Bundle
from tlcut.deployment import Engine
from tlcut.errors import TlcutError
from tlcut.runtime import backends
from tlcut.toolchain import bench as benchmod
from tlcut.toolchain.profile import Config, Profile


def bundle_precisions(bundle: Bundle) -> list[str]:
    """float32 (the model's own), and each other precision the bundle has halves or a whole model at."""
    held = {a.precision for a in bundle.artifacts}
    return [p for p in PRECISIONS if p == "float32" or p in held]


def why_not_here(name: str, options: dict | None = None) -> str | None:
    """None if backend ``name`` loads and runs a one-node model on this machine, else why not."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    try:
        with backends.get(name, **(options or {})).runner(m.SerializeToString()):
            pass
    except TlcutError as e:
        return str(e)
    except Exception as e:  # an engine's own failure to start is a reason to leave it out, said
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return None


def parse_threads(text: str | None, default: int | None, what: str = "--thread-counts") -> list[int | None]:
    if not text:
        return [default]
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TlcutError(f"{what} takes numbers separated by commas like 1,2, got '{text}'") from None
    if not out or min(out) < 1:
        raise TlcutError(f"{what} must be positive numbers like 1,2, got '{text}'")
    return list(dict.fromkeys(out))


def select(bundle: Bundle, spec: str | None, threads: list, *, backend: str | None = None,
           precision: str | None = None, options: dict | None = None, progress=print) -> list[Engine]:
    """The configurations to profile: those ``spec`` names (``onnxrt:float32,openvino:int8``; an
    entry ``BACKEND[:PRECISION[:THREADS]]``), or every one the machine and the bundle can run,
    narrowed to ``backend``/``precision`` where given. One-line errors for a name that is not a
    backend or precision, a precision the bundle lacks, or a backend that cannot run here."""
    options = options or {}
    held = bundle_precisions(bundle)
    runs: dict[str, str | None] = {}

    def check_here(name):
        if name not in runs:
            runs[name] = why_not_here(name, options.get(name))
        return runs[name]

    def need_precision(p, entry):
        if p not in PRECISIONS:
            raise TlcutError(f"unknown precision '{p}' in --engines entry '{entry}'; precisions: {', '.join(PRECISIONS)}")
        if p not in held:
            raise TlcutError(f"--engines asks for {p}, but bundle '{bundle.path}' has no {p} halves; compile them: "
                             f"`tlcut compile {bundle.path} --cuts K --precision {p} --calib elpv`")

    if spec:
        out = []
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            parts = entry.split(":")
            name = parts[0]
            if name not in backends.names() or len(parts) > 3:
                raise TlcutError(f"unknown engine '{entry}' in --engines; write BACKEND[:PRECISION[:THREADS]] with a "
                                 f"backend of {', '.join(backends.names())}, e.g. {backends.DEFAULT}:float32")
            why = check_here(name)
            if why:
                raise TlcutError(f"--engines names {name}, which cannot run here: {why}")
            precs = [parts[1]] if len(parts) > 1 and parts[1] else held
            for p in precs:
                need_precision(p, entry)
            ts = threads
            if len(parts) > 2:
                ts = parse_threads(parts[2], None, f"the threads of --engines entry '{entry}'")
            out += [Engine(name, p, t) for p in precs for t in ts]
        if not out:
            raise TlcutError("--engines names no engine; give e.g. onnxrt:float32,openvino:int8")
        return list(dict.fromkeys(out))
    if precision is not None:
        need_precision(precision, f"--precision {precision}")
    out = []
    for name in ([backend] if backend else backends.names()):
        why = check_here(name)
        if why:
            if backend:
                raise TlcutError(f"--backend {name} cannot run here: {why}")
            progress(f"[bench] leaving out {name}: {why}")
            continue
        out += [Engine(name, p, t) for p in ([precision] if precision else held) for t in threads]
    return out


def bench_engines(bundle: Bundle, engines: list[Engine], *, role: str, options: dict | None = None,
                  progress=print, **kw) -> Profile:
    """Profile ``bundle`` once per engine configuration (``bench.bench``'s settings in ``kw``); what no
    engine changes (wire and input encoding costs) is measured once and shared."""
    if not engines:
        raise TlcutError("no engine configuration to profile on this machine")
    options = options or {}
    shared: dict = {}
    configs, spent = [], []
    t0 = time.perf_counter()
    for i, e in enumerate(engines, 1):
        progress(f"[bench] configuration {i}/{len(engines)}: {e.words(threads=True)}")
        t = time.perf_counter()
        fig = benchmod.bench(bundle, role=role, backend=backends.get(e.backend, **options.get(e.backend, {})),
                             threads=e.threads, precision=e.precision, shared=shared, progress=progress, **kw)
        configs.append(Config(e, fig))
        spent.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    for c, s in zip(configs, spent):
        full = c.full["median"] if c.full else None
        progress(f"[bench]   {c.engine.words(threads=True)}: {s:.1f} s; whole model "
                 f"{f'{full:.2f} ms' if full is not None else 'not compiled'}; "
                 f"{len(c.figures['cuts'])} cut{'s' if len(c.figures['cuts']) != 1 else ''}")
    progress(f"[bench] {len(configs)} configurations in {total:.1f} s")
    first = configs[0].figures
    threads = list(dict.fromkeys(e.threads for e in engines))
    machine = {**first["machine"], "threads": threads[0] if len(threads) == 1 else threads}
    meta = {"created": first["created"], "tlcut_version": first["tlcut_version"], "machine": machine,
            "settings": {k: v for k, v in first["settings"].items() if k != "method"},
            "bench_seconds": round(total, 2)}
    return Profile(role, bundle.name, bundle.model_sha256, len(bundle.cuts), configs, meta)
