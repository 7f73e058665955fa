"""Accuracy of the TL on a real inspection task: baseline, TL without and with retraining, and
cheaper wire formats, at an early, a middle and a late cut.

Trains InspectNet from scratch on the ELPV solar-cell images (4 defect grades, 128x128 grey, fixed
seeded stratified split), exports it, and for each cut measures test accuracy of the deployed halves
through tlcut's device/edge runtime: TL as trained without it, TL after retraining (Adam), the
retrained TL's payload sent as float16 and as int8, and the retrained halves themselves compiled to
int8 (QDQ, calibrated on ELPV training images) on ONNX Runtime and on OpenVINO, with the drop
against the float32 halves and its 95% paired bootstrap interval. Writes
benchmarks/results/accuracy.{json,md}.

    python benchmarks/accuracy.py [--epochs 20] [--retrain-epochs 8] [--cuts s1_pool,s2_pool,s3_pool]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PUBLISHED = [
    "Deitsch et al. (arXiv 1807.02894): 88.42% average accuracy, fine-tuned CNN (pre-trained on ImageNet)",
    "Deitsch et al.: 82.44% average accuracy, SVM on hand-crafted features",
    "a 2023 study: 83.5% for four-class grading",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--retrain-epochs", type=int, default=8)
    ap.add_argument("--retrain-lr", type=float, default=3e-4)
    ap.add_argument("--cuts", default="s1_pool,s2_pool,s3_pool")
    ap.add_argument("--task", default="grade")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="fewer images, for a quick look (not a result)")
    ap.add_argument("--calib-count", type=int, default=64, help="ELPV training images that calibrate the int8 halves")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()

    from tlcut.bundle import Bundle
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.placement import Placement
    from tlcut.toolchain.eval import evaluate
    from tlcut.toolchain.export import export
    from tlcut.stats import paired_difference
    from tlcut.toolchain.train import retrain, train

    work = Path(tempfile.mkdtemp(prefix="tlcut-acc-"))
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        base = train("InspectNet", "elpv", work / "base.keras", size=a.size, task=a.task, epochs=a.epochs,
                     patience=5, limit=a.limit, say=say)
        b = export(str(work / "base.keras"), work / "base", progress=say)
        device_only = evaluate(b, Placement.resolve(b, "device"), limit=a.limit)
        rows = []
        for layer in a.cuts.split(","):
            c = b.cut(layer)
            compile_cuts(b, [c], tl="both")
            b = Bundle.open(b.path)
            plain = evaluate(b, Placement.resolve(b, layer, False), limit=a.limit)
            no_retrain = evaluate(b, Placement.resolve(b, layer, True), limit=a.limit)
            t0 = time.perf_counter()
            r = retrain(str(work / "base.keras"), layer, work / f"tl_{layer}", epochs=a.retrain_epochs,
                        lr=a.retrain_lr, limit=a.limit, say=say)
            rt_s = time.perf_counter() - t0
            rb = Bundle.open(work / f"tl_{layer}")
            evs = {enc: evaluate(rb, Placement.resolve(rb, layer, True, enc), limit=a.limit) for enc in ("raw", "float16", "int8")}
            compile_cuts(rb, [rb.cut(layer)], tl="on", precision="int8", calib="elpv", calib_count=a.calib_count)
            rb = Bundle.open(rb.path)
            q8 = {be: evaluate(rb, Placement.resolve(rb, layer, True), limit=a.limit, backend=be, precision="int8")
                  for be in ("onnxrt", "openvino")}
            rows.append({
                "layer": layer, "cut": c.index, "shape": list(c.shape), "tl_shape": list(c.tl_shape),
                "baseline": device_only["accuracy"], "plain_cut": plain["accuracy"], "plain_bytes": plain["payload_bytes"],
                "tl_no_retrain": no_retrain["accuracy"], "tl_bytes": no_retrain["payload_bytes"],
                "tl_retrained": evs["raw"]["accuracy"], "tl_float16": evs["float16"]["accuracy"],
                "tl_float16_bytes": evs["float16"]["payload_bytes"], "tl_int8": evs["int8"]["accuracy"],
                "tl_int8_bytes": evs["int8"]["payload_bytes"], "retrain": r["training"], "retrain_wall_s": rt_s,
                "split_max_abs_diff": r["split_max_abs_diff"],
                "int8_halves": {be: {"accuracy": v["accuracy"],
                                     "vs_float32": paired_difference(evs["raw"]["per_image"], v["per_image"])}
                                for be, v in q8.items()},
            })
            say(json.dumps(rows[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import tensorflow as tf

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
           "tensorflow": tf.__version__, "args": vars(a), "data": base["data"], "classes": base["classes"],
           "baseline": {"test_accuracy_keras": base["test_accuracy"], "test_accuracy_deployed": device_only["accuracy"],
                        "majority_class_rate": base["majority_class_rate"], "training": base["training"]},
           "published": PUBLISHED, "cuts": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "accuracy" if not a.limit else "accuracy-quick"
    (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    bt = base["training"]
    md = [f"# TL accuracy on ELPV ({a.task}, {len(base['classes'])} classes)", "",
          f"Command: `python benchmarks/accuracy.py --epochs {a.epochs} --retrain-epochs {a.retrain_epochs} "
          f"--retrain-lr {a.retrain_lr} --cuts {a.cuts}`  ",
          f"Date: {res['date']}; {res['platform']}; TensorFlow {tf.__version__}  ",
          f"Data: {base['data'].get('name')}, {a.size}x{a.size} grey, split seed {base['data']['seed']} "
          f"(sha {base['data']['split_sha256']}), classes {', '.join(base['classes'])}.  ",
          f"Baseline: InspectNet from scratch, Adam 1e-3, {bt['epochs_run']} epochs (best {bt['best_epoch']}), "
          f"{bt['train_seconds']:.0f} s on this 2-core CPU. Test accuracy {base['test_accuracy']:.4f} in Keras, "
          f"{device_only['accuracy']:.4f} deployed (ONNX, device only); always answering the majority class scores "
          f"{base['majority_class_rate']:.4f}.", "",
          "Accuracy is measured on the test split through tlcut's runtime (head, wire, tail), so it is what is served. "
          "One test image is 0.25 points. Training times are wall clock on a machine doing other work at the same time.", "",
          "| cut | tensor | baseline | no TL (bytes) | TL, not retrained | TL retrained (bytes) | drop after retraining (negative: a gain) | TL + float16 (bytes) | TL + int8 (bytes) | retraining |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    q8rows = []
    for r in rows:
        drop = 100 * (r["baseline"] - r["tl_retrained"])
        md.append(f"| {r['cut']} `{r['layer']}` | {'x'.join(map(str, r['shape'][1:]))} | {r['baseline']:.4f} | "
                  f"{r['plain_cut']:.4f} ({r['plain_bytes']}) | {r['tl_no_retrain']:.4f} | {r['tl_retrained']:.4f} ({r['tl_bytes']}) | "
                  f"{drop:+.2f} pt | {r['tl_float16']:.4f} ({r['tl_float16_bytes']}) | {r['tl_int8']:.4f} ({r['tl_int8_bytes']}) | "
                  f"{r['retrain']['epochs_run']} ep, {r['retrain']['train_seconds']:.0f} s |")
        for be, v in r["int8_halves"].items():
            d = v["vs_float32"]
            q8rows.append(f"| {r['cut']} `{r['layer']}` + TL | {be} | {r['tl_retrained']:.4f} | {v['accuracy']:.4f} | "
                          f"{d['diff_pts']:+.2f} pt [{d['ci95_pts'][0]:+.2f}, {d['ci95_pts'][1]:+.2f}] | "
                          f"{d['only_a_right']} / {d['only_b_right']} |")
    md += ["", f"## int8 halves (QDQ, entropy calibration on {a.calib_count} ELPV training images)", "",
           "The retrained TL bundle's head and tail compiled with `tlcut compile --precision int8 --calib elpv`, "
           "evaluated through the runtime. The change is int8 minus float32 on the same test images, with a 95% "
           "paired bootstrap interval (2000 resamples); the last column counts images only float32 / only int8 gets right.", "",
           "| placement | engine | float32 halves | int8 halves | change [95% CI] | only float32 / only int8 right |",
           "|---|---|---:|---:|---:|---:|", *q8rows]
    md += ["", "Published figures on this data set, for context (other protocols and splits):", ""]
    md += [f"- {p}" for p in PUBLISHED]
    md.append("")
    (out / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
