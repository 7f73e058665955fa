"""Engines and precisions side by side: ONNX Runtime vs OpenVINO, float32 vs int8 (QDQ), on
DenseNet169's whole model and the head and tail of a spread of cuts, as the device (0.2 CPU) and
as the edge (one core), in one run.

    python benchmarks/engines.py [--bundle DIR] [--iterations 10] [--cuts 5]

Writes benchmarks/results/engines.{json,md}. As root each role runs in the testbed (cgroup quota
for the device, pinned cores); otherwise on loopback with the device stretched 5x (say which in the
results). Every (engine, precision, half) is timed in the same loop, round-robin, so a noisy moment
hits all of them alike. Accuracy of the halves, against ONNX Runtime float32 on ELPV images the
calibration did not see: a head on its output, a tail or the whole model on its logits (max error
relative to the largest value, median relative L2 error, top-1 agreement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tlcut.toolchain.bench import cpu_model

HERE = Path(__file__).resolve().parent
ENGINES = ("onnxrt", "openvino")
PRECISIONS = ("float32", "int8")


def worker(bundle_path: str, out: str, iterations: int, slowdown: float) -> None:
    """Time every artifact of the bundle at every engine and precision (run inside a role)."""
    from tlcut.bundle import Bundle
    from tlcut.runtime import backends
    from tlcut.stats import summary

    b = Bundle.open(bundle_path)
    rng = np.random.default_rng(0)
    jobs = []
    for a in b.artifacts:
        if a.engine != "onnx" or a.tl:
            continue
        feed = {a.input["name"]: rng.random(a.input["shape"]).astype(a.input["dtype"])}
        for eng in ENGINES:
            r = backends.get(eng).runner(b.path / a.file, threads=1)
            r.slowdown = slowdown
            r.activate()
            r.infer(feed, check=False)  # warm-up
            jobs.append({"engine": eng, "precision": a.precision, "kind": a.kind, "cut": a.cut, "runner": r,
                         "feed": feed, "times": []})
    for _ in range(iterations):
        for j in jobs:
            t0 = time.perf_counter()
            j["runner"].infer(j["feed"], check=False)
            j["times"].append(time.perf_counter() - t0)
    rows = [{k: j[k] for k in ("engine", "precision", "kind", "cut")} | {"ms": summary(j["times"], 1e3)} for j in jobs]
    Path(out).write_text(json.dumps(rows))


def accuracy(b, n: int = 32) -> list[dict]:
    """Each engine's float32 and int8 halves against ONNX Runtime float32, on ELPV images; a model
    or tail is compared on its logits (the softmax of random weights is near-uniform)."""
    from tlcut.calibrate.int8 import calibration_inputs
    from tlcut.runtime import backends
    from tlcut.toolchain import surgery

    def logits_file(a):
        path = b.path / a.file
        if a.kind == "head":
            return path
        out = Path(tempfile.mkdtemp(prefix="tlcut-logits-")) / path.name
        import onnx

        onnx.save(surgery.logits(onnx.load(str(path))), str(out))
        return out

    xs, _ = calibration_inputs(b, "elpv", 64 + n, seed=0)
    xs = xs[64:]  # the calibration took the first 64 of this same permutation: these it did not see
    out = []
    refs = {}
    for a in b.artifacts:
        if a.engine != "onnx" or a.tl:
            continue
        key = (a.kind, a.cut)
        ref_art = b.find(a.kind, a.cut, False, precision="float32")
        feeds = _feeds_for(b, a, xs)
        if key not in refs:
            with backends.get("onnxrt").runner(logits_file(ref_art)) as r:
                refs[key] = [next(iter(r.infer(f, check=False).values())) for f in feeds]
        for eng in ENGINES:
            with backends.get(eng).runner(logits_file(a)) as r:
                got = [next(iter(r.infer(f, check=False).values())) for f in feeds]
            ref = refs[key]
            rel_max = max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)) for g, w in zip(got, ref))
            rel_l2 = float(np.median([np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-12) for g, w in zip(got, ref)]))
            row = {"engine": eng, "precision": a.precision, "kind": a.kind, "cut": a.cut, "rel_max_err": rel_max,
                   "rel_l2_err_median": rel_l2, "samples": len(feeds)}
            if a.kind in ("model", "tail"):
                row["top1_agreement"] = float(np.mean([np.argmax(g) == np.argmax(w) for g, w in zip(got, ref)]))
            out.append(row)
    return out


_HEAD_CACHE: dict = {}


def _feeds_for(b, a, xs):
    """Inputs an artifact really sees: images for a model or head, the float32 head's output for a tail."""
    from tlcut.runtime import backends

    if a.kind in ("model", "head"):
        return [{a.input["name"]: x} for x in xs]
    if a.cut not in _HEAD_CACHE:
        head = b.find("head", a.cut, False, precision="float32")
        with backends.get("onnxrt").runner(b.path / head.file) as r:
            _HEAD_CACHE[a.cut] = [next(iter(r.infer({b.inputs[0]["name"]: x}, check=False).values())) for x in xs]
    return [{a.input["name"]: m} for m in _HEAD_CACHE[a.cut]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="a DenseNet169 bundle to reuse (default: export one)")
    ap.add_argument("--model", default="DenseNet169")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--cuts", type=int, default=5, help="how many cuts, spread over the model")
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--worker", nargs=4, metavar=("BUNDLE", "OUT", "ITER", "SLOWDOWN"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]), float(a.worker[3]))
        return 0

    import onnxruntime
    import openvino

    from tlcut import __version__
    from tlcut.bundle import Bundle
    from tlcut.lab import testbed as tbm
    from tlcut.lab.harness import pick
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tlcut-engines-"))
    b = Bundle.open(a.bundle) if a.bundle else export(a.model, root / "bundle", progress=print)
    idx = sorted(set(np.linspace(0, len(b.cuts) - 1, a.cuts + 2).round().astype(int)[1:-1]))
    cuts = [b.cuts[i] for i in idx]
    print(f"[engines] compiling cuts {idx} at float32 and int8 (calibration: {a.calib_count} ELPV training images)")
    compile_cuts(b, cuts, tl="off")
    t0 = time.perf_counter()
    compile_cuts(b, cuts, tl="off", precision="int8", calib="elpv", calib_count=a.calib_count)
    quant_s = time.perf_counter() - t0
    b = Bundle.open(b.path)
    print("[engines] accuracy of the halves")
    acc = accuracy(b)
    cfg = tbm.Config(device_quota=0.2)
    emu = pick()[0](cfg, log=print)
    roles = {}
    with emu as tb:
        for role in ("device", "edge"):
            out = root / f"{role}.json"
            slowdown = tb.slowdown if role == "device" else 1.0
            print(f"[engines] timing as the {role} ({tb.kind})")
            r = tb.run(role, [sys.executable, str(Path(__file__).resolve()), "--worker", str(b.path), str(out),
                              str(a.iterations), str(slowdown)])
            if r.returncode != 0:
                raise SystemExit(f"worker for {role} failed")
            roles[role] = json.loads(out.read_text())
        described = tb.describe()
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/engines.py" + (f" --iterations {a.iterations}" if a.iterations != 10 else "")
           + (f" --cuts {a.cuts}" if a.cuts != 5 else ""),
           "machine": {"cpu": cpu_model(), "cores": _nproc(), "python": platform.python_version()},
           "versions": {"tlcut": __version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
           "model": b.name, "cuts": [{"index": c.index, "layer": c.layer, "tensor": c.tensor} for c in cuts],
           "emulation": described, "iterations": a.iterations, "threads": 1,
           "int8": {"calibration": "elpv training split", "count": a.calib_count, "method": "entropy",
                    "quantize_seconds": round(quant_s, 1)},
           "timings": roles, "accuracy": acc, "seconds": round(time.perf_counter() - t_start, 1)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "engines.json").write_text(json.dumps(res, indent=1) + "\n")
    md = to_markdown(res)
    (HERE / "results" / "engines.md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict) -> str:
    md = [f"# Engines and precisions: {r['model']}", "",
          f"Command: `{r['command']}`  ", f"Date: {r['date']}  ",
          f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; Python {r['machine']['python']}; "
          + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "  ",
          f"Roles: {r['emulation']}. One thread per engine; {r['iterations']} timed runs of each, round-robin.  ",
          f"int8: QDQ from ONNX Runtime's quantize_static, entropy calibration on {r['int8']['count']} ELPV "
          f"training images (quantizing the whole model and {len(r['cuts'])} cuts' halves took "
          f"{r['int8']['quantize_seconds']} s).", "",
          "Median ms (p90 in brackets).", ""]
    cuts = {c["index"]: c for c in r["cuts"]}
    for role in ("device", "edge"):
        rows = r["timings"][role]
        md += [f"## {role}", "", "| half | onnxrt float32 | onnxrt int8 | openvino float32 | openvino int8 | best |",
               "|---|---:|---:|---:|---:|---|"]
        keys = sorted({(x["kind"], x["cut"]) for x in rows}, key=lambda k: (k[1] is not None, k[1] or 0, k[0]))
        for kind, cut in keys:
            cells, best = [], None
            for eng in ENGINES:
                for prec in PRECISIONS:
                    x = next((y for y in rows if (y["kind"], y["cut"], y["engine"], y["precision"]) == (kind, cut, eng, prec)), None)
                    if x is None:
                        cells.append("-")
                        continue
                    cells.append(f"{x['ms']['median']:.1f} ({x['ms']['p90']:.1f})")
                    if best is None or x["ms"]["median"] < best[0]:
                        best = (x["ms"]["median"], f"{eng} {prec}")
            what = "whole model" if kind == "model" else f"{kind} of cut {cut} ({cuts[cut]['layer'] or cuts[cut]['tensor']})"
            md.append(f"| {what} | " + " | ".join(cells) + f" | {best[1] if best else '-'} |")
        md.append("")
    md += ["## Accuracy of the halves (against ONNX Runtime float32)", "",
           f"On ELPV images the calibration did not see ({r['accuracy'][0]['samples'] if r['accuracy'] else 0} each).", "",
           "Heads on their output tensor; tails and the whole model on their logits (before the softmax).", "",
           "| half | engine | precision | max error / max value | median relative L2 error | top-1 agreement |",
           "|---|---|---|---:|---:|---:|"]
    for x in r["accuracy"]:
        what = "whole model" if x["kind"] == "model" else f"{x['kind']} of cut {x['cut']}"
        top1 = f"{x['top1_agreement']:.3f}" if "top1_agreement" in x else "-"
        md.append(f"| {what} | {x['engine']} | {x['precision']} | {x['rel_max_err']:.2e} | {x['rel_l2_err_median']:.2e} | {top1} |")
    md += ["", "The random-weight model's top-1 agreement is a stability check of the quantized arithmetic, not an "
           "accuracy figure; int8 accuracy on a trained model is in accuracy.md.", ""]
    return "\n".join(md)


def _nproc() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
