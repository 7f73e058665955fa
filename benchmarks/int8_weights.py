"""int8 weights in 8 bits or 7 (``reduce_range``), side by side on one machine: what each costs in
speed, and how far each engine's answer moves from the QDQ graph computed as written and from the
float32 model.

    python benchmarks/int8_weights.py [--bundle DIR] [--rounds 5] [--runs 10] [--images 32]

The whole model is quantized twice from the same 64 ELPV training images (entropy calibration, as
`tlcut compile --precision int8 --calib elpv` does), once per weight width. Both are timed on ONNX
Runtime and OpenVINO, one thread each, in this process (no testbed: this compares the two files on
this CPU, it does not predict a deployment); rounds alternate the four so a noisy moment hits all.
Agreement on ELPV images the calibration did not see, on the logits (the softmax of random
weights is near-uniform): max error relative to the largest logit, top-1 agreement; "the graph as
written" is ONNX Runtime with graph optimizations off (Quantize and Dequantize in float), which no
CPU changes. The machine line says whether the CPU has VNNI: where it does not, 8-bit weights
saturate the int8 kernels' 16-bit pair sums. Make the bundle with `tlcut export DenseNet169 -o DIR`
(random weights). Writes benchmarks/results/int8-weights.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENGINES = ("onnxrt", "openvino")
BITS = (8, 7)
CALIB = 64


def quantize(b, bits: int, xs, out: Path) -> float:
    from tlcut.calibrate import int8

    was = int8.WEIGHT_BITS
    int8.WEIGHT_BITS = bits
    try:
        t0 = time.perf_counter()
        int8.quantize(b.model_path, out, [{b.inputs[0]["name"]: x} for x in xs], "entropy")
        return time.perf_counter() - t0
    finally:
        int8.WEIGHT_BITS = was


def logits(path: Path, into: Path) -> Path:
    import onnx

    from tlcut.toolchain import surgery

    into.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(surgery.logits(onnx.load(str(path))), str(into))
    return into


def answers(run, xs, name) -> list[np.ndarray]:
    return [np.asarray(next(iter(run({name: x}).values()))) for x in xs]


def agreement(got, ref) -> dict:
    return {"rel_max_err": max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)) for g, w in zip(got, ref)),
            "top1_agreement": float(np.mean([np.argmax(g) == np.argmax(w) for g, w in zip(got, ref)]))}


def positive(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"a whole number, at least 1, got '{v}'")
    return int(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="a bundle to reuse (default: export DenseNet169)")
    ap.add_argument("--rounds", type=positive, default=5)
    ap.add_argument("--runs", type=positive, default=10, help="timed runs of each file on each engine per round")
    ap.add_argument("--images", type=positive, default=32, help="ELPV images for agreement, none seen by calibration")
    a = ap.parse_args()

    import onnxruntime as ort
    import openvino

    from tlcut import __version__
    from tlcut.bundle import Bundle
    from tlcut.calibrate.int8 import calibration_inputs
    from tlcut.runtime import backends
    from tlcut.stats import summary
    from tlcut.machine import cpu_model, has_vnni
    from tlcut.toolchain.export import export

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tlcut-int8-weights-"))
    b = Bundle.open(a.bundle) if a.bundle else export("DenseNet169", root / "bundle", progress=print)
    name = b.inputs[0]["name"]
    xs, _ = calibration_inputs(b, "elpv", CALIB + a.images, seed=0)
    calib, test = xs[:CALIB], xs[CALIB:]  # as engines.py: the calibration's own images are left out
    files, quant_s = {}, {}
    for bits in BITS:
        print(f"[int8-weights] quantizing {b.name} with {bits}-bit weights")
        files[bits] = root / f"model.w{bits}.onnx"
        quant_s[str(bits)] = round(quantize(b, bits, calib, files[bits]), 1)

    print("[int8-weights] agreement")
    with backends.get("onnxrt").runner(logits(b.model_path, root / "lg" / "f32.onnx")) as r:
        ref_f32 = answers(lambda f: r.infer(f, check=False), test, name)
    acc = []
    exact = ort.SessionOptions()
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for bits in BITS:
        lg = logits(files[bits], root / "lg" / f"w{bits}.onnx")
        s = ort.InferenceSession(str(lg), exact, providers=["CPUExecutionProvider"])
        ref_q = answers(lambda f: dict(zip([o.name for o in s.get_outputs()], s.run(None, f))), test, name)
        acc.append({"weight_bits": bits, "engine": "the graph as written", "vs_float32": agreement(ref_q, ref_f32)})
        for eng in ENGINES:
            with backends.get(eng).runner(lg) as r:
                got = answers(lambda f: r.infer(f, check=False), test, name)
            acc.append({"weight_bits": bits, "engine": eng, "vs_float32": agreement(got, ref_f32),
                        "vs_graph_as_written": agreement(got, ref_q)})

    print("[int8-weights] timing")
    feed = {name: test[0]}
    jobs = []
    for bits in BITS:
        for eng in ENGINES:
            r = backends.get(eng).runner(files[bits], threads=1)
            r.activate()
            for _ in range(2):
                r.infer(feed, check=False)  # warm-up
            jobs.append({"weight_bits": bits, "engine": eng, "runner": r, "times": []})
    for k in range(a.rounds):
        for j in (jobs if k % 2 == 0 else jobs[::-1]):
            for _ in range(a.runs):
                t0 = time.perf_counter()
                j["runner"].infer(feed, check=False)
                j["times"].append(time.perf_counter() - t0)
    timing = [{"weight_bits": j["weight_bits"], "engine": j["engine"], "ms": summary(j["times"], 1e3)} for j in jobs]
    for j in jobs:
        j["runner"].deactivate()

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/int8_weights.py" + (f" --bundle {a.bundle}" if a.bundle else "")
           + "".join(f" --{k} {getattr(a, k)}" for k, d in (("rounds", 5), ("runs", 10), ("images", 32)) if getattr(a, k) != d),
           "machine": {"cpu": cpu_model(), "vnni": has_vnni(), "python": platform.python_version()},
           "versions": {"tlcut": __version__, "onnxruntime": ort.__version__, "openvino": openvino.__version__},
           "model": b.name, "calibration": {"source": "elpv training split", "count": CALIB, "method": "entropy"},
           "quantize_seconds": quant_s, "images": len(test), "rounds": a.rounds, "runs": a.runs, "threads": 1,
           "accuracy": acc, "timing": timing, "seconds": round(time.perf_counter() - t_start, 1)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "int8-weights.json").write_text(json.dumps(res, indent=1) + "\n")
    md = to_markdown(res)
    (HERE / "results" / "int8-weights.md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# int8 weights in 8 bits or 7: {r['model']}", "",
             f"Command: `{r['command']}`  ", f"Date: {r['date']}  ",
             f"Machine: {m['cpu']}, VNNI {({True: 'yes', False: 'no'}).get(m['vnni'], 'unknown')}; Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "  ",
             f"Calibration: {r['calibration']['count']} ELPV training images, {r['calibration']['method']} "
             f"(quantizing took {r['quantize_seconds']['8']} s at 8 bits, {r['quantize_seconds']['7']} s at 7).  ",
             f"Agreement on {r['images']} ELPV images the calibration did not see, on the logits. Timing: one "
             f"thread, {r['rounds']} alternating rounds of {r['runs']} runs, in one process.", "",
             "## Agreement", "",
             "| weights | engine | against float32: max rel. error | top-1 | against the graph as written: max rel. error | top-1 |",
             "|---|---|---:|---:|---:|---:|"]
    for row in r["accuracy"]:
        f, q = row["vs_float32"], row.get("vs_graph_as_written")
        lines.append(f"| {row['weight_bits']} bits | {row['engine']} | {f['rel_max_err']:.4f} | {f['top1_agreement']:.0%} | "
                     + (f"{q['rel_max_err']:.4f} | {q['top1_agreement']:.0%} |" if q else "- | - |"))
    lines += ["", "## Whole model, ms", "", "| weights | engine | median | p90 | min | max | runs |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in r["timing"]:
        s = row["ms"]
        lines.append(f"| {row['weight_bits']} bits | {row['engine']} | {s['median']:.1f} | "
                     f"{s['p90']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {s['n']} |")
    lines += ["", f"Took {r['seconds']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from tlcut.errors import TlcutError

    try:
        raise SystemExit(main())
    except TlcutError as e:  # a bad --bundle, no ELPV images: one line, not a traceback
        raise SystemExit(f"int8_weights.py: error: {e}") from None
