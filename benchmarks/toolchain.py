"""How long the offline toolchain takes on a real model (default DenseNet169, 224x224).

Measures, on this machine: export (Keras -> ONNX bundle), cut enumeration, surgery of every cut
(plain and TL head and tail, in memory, checked), and `bench` of every cut, repeated. Writes
``benchmarks/results/toolchain-<model>.json`` and a Markdown summary beside it.

    python benchmarks/toolchain.py [--model DenseNet169] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent


def spread(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "n": len(xs), "all": xs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="DenseNet169")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast steps (export runs once per repeat too)")
    ap.add_argument("--export-repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()

    from tlcut import __version__
    from tlcut.bundle import Bundle
    from tlcut.toolchain import bench, surgery
    from tlcut.toolchain.cuts import enumerate_cuts
    from tlcut.toolchain.export import export

    work = Path(tempfile.mkdtemp(prefix="tlcut-bench-"))
    res = {"model": a.model, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "tlcut": __version__, "threads": a.threads}
    try:
        export_s = []
        for i in range(a.export_repeats):
            t0 = time.perf_counter()
            b = export(a.model, work / f"b{i}", force=True, progress=lambda *_: None)
            export_s.append(time.perf_counter() - t0)
        res["export_s"] = spread(export_s)
        b = Bundle.open(work / "b0")
        model = onnx.load(str(b.model_path))
        res["cuts"] = len(b.cuts)
        res["cuts_with_tl"] = sum(c.tl for c in b.cuts)
        res["nodes"] = len(model.graph.node)

        enum_s = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            enumerate_cuts(model, b.manifest["tensors"])
            enum_s.append(time.perf_counter() - t0)
        res["enumerate_s"] = spread(enum_s)

        t0 = time.perf_counter()
        halves = 0
        for c in b.cuts:
            for tl in ([False, True] if c.tl else [False]):
                surgery.head(model, c, tl=tl)
                surgery.tail(model, c, tl=tl)
                halves += 2
        res["surgery_all_s"] = time.perf_counter() - t0
        res["surgery_halves"] = halves

        bench_s, checks = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            p = bench.bench(b, role="device", threads=a.threads, progress=lambda *_: None)
            bench_s.append(time.perf_counter() - t0)
            checks.append(p["check"])
        res["bench_all_s"] = spread(bench_s)
        res["bench_settings"] = p["settings"]
        res["prefix_sum_check"] = checks
        res["full_model_ms"] = p["full"]
        res["machine"] = p["machine"]
        res["versions"] = {"python": platform.python_version(), "onnx": onnx.__version__, "numpy": np.__version__,
                           "onnxruntime": p["machine"]["onnxruntime"]}
        try:
            import tensorflow as tf
            import tf2onnx

            res["versions"].update(tensorflow=tf.__version__, tf2onnx=tf2onnx.__version__)
        except ImportError:
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"toolchain-{a.model}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    errs = [abs(x[k]) for chk in checks for x in chk["cuts"] for k in ("head_err_pct", "tail_err_pct")]
    md = [
        f"# Toolchain timings: {a.model}",
        "",
        f"Command: `python benchmarks/toolchain.py --model {a.model} --repeats {a.repeats} --threads {a.threads}`  ",
        f"Date: {res['date']}  ",
        f"Machine: {res['machine']['processor']}, {res['machine']['cpus_visible']} CPUs visible, {res['machine']['platform']}  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
        "",
        f"{res['nodes']} ONNX nodes, {res['cuts']} cuts, the TL applies at {res['cuts_with_tl']}.",
        "",
        "| step | median | min | max | runs |",
        "|---|---|---|---|---|",
        _row("export (build in Keras, tf2onnx, shapes, layouts, cuts, write bundle)", res["export_s"]),
        _row("enumerate cuts", res["enumerate_s"], scale=1e3, unit="ms"),
        f"| surgery of all {halves} halves ({res['cuts']} cuts, plain + TL) | {res['surgery_all_s']:.1f} s | | | 1 |",
        _row(f"bench all {res['cuts']} cuts ({p['settings']['warmup']} warm-up + {p['settings']['iterations']} timed runs)",
             res["bench_all_s"]),
        "",
        f"Whole model on this machine: median {res['full_model_ms']['median']:.1f} ms "
        f"(p90 {res['full_model_ms']['p90']:.1f}, p99 {res['full_model_ms']['p99']:.1f}).",
        "",
        "Profiled prefix sums against real halves (separate sessions), over all repeats: "
        f"median |error| {statistics.median(errs):.1f}%, max {max(errs):.1f}% over {len(errs)} head/tail pairs.",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def _row(label, s, scale=1.0, unit="s"):
    f = (lambda v: f"{v * scale:.1f} {unit}") if unit == "s" else (lambda v: f"{v * scale:.2f} {unit}")
    return f"| {label} | {f(s['median'])} | {f(s['min'])} | {f(s['max'])} | {s['n']} |"


if __name__ == "__main__":
    sys.exit(main())
