"""Every architecture the paper used (plus MobileNetV2) through export, cuts and surgery.

For each model: export time, ONNX nodes, cuts, cuts that take the TL, the converted graph against
Keras on a random input, and head-then-tail against the full model at three cuts (early, middle,
late). Writes ``benchmarks/results/models.json`` and ``models.md``.

    python benchmarks/models.py [--models DenseNet169,ResNet101]
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

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
MODELS = ["DenseNet169", "DenseNet201", "ResNet101", "InceptionV3", "InceptionResNetV2", "MobileNetV2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    from tlcut.toolchain import surgery
    from tlcut.toolchain.export import export

    rows = []
    work = Path(tempfile.mkdtemp(prefix="tlcut-models-"))
    try:
        for name in a.models.split(","):
            t0 = time.perf_counter()
            b = export(name, work / name, progress=lambda *_: None)
            t_export = time.perf_counter() - t0
            m = onnx.load(str(b.model_path))
            inp = b.inputs[0]
            x = np.random.default_rng(0).random(inp["shape"]).astype(np.float32)
            ref = ort.InferenceSession(str(b.model_path)).run(None, {inp["name"]: x})[0]
            diffs = {}
            for c in (b.cuts[len(b.cuts) // 10], b.cuts[len(b.cuts) // 2], b.cuts[-3]):
                mid = ort.InferenceSession(surgery.head(m, c).SerializeToString()).run(None, {inp["name"]: x})[0]
                y = ort.InferenceSession(surgery.tail(m, c).SerializeToString()).run(None, {c.tensor: mid})[0]
                diffs[c.index] = float(np.abs(y - ref).max())
            odd = sum(1 for c in b.cuts if c.tl and any(c.shape[k] % 2 for k in ((2, 3) if c.layout == "NCHW" else (1, 2))))
            rows.append({"model": name, "input": inp["shape"], "export_s": t_export, "nodes": len(m.graph.node),
                         "cuts": len(b.cuts), "tl_cuts": sum(c.tl for c in b.cuts), "odd_tl_cuts": odd,
                         "keras_vs_onnx_max_abs_diff": b.manifest["validation"]["max_abs_diff"],
                         "head_tail_max_abs_diff": diffs})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import tensorflow as tf
    import tf2onnx

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
           "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                        "onnxruntime": ort.__version__}, "models": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Architectures through export, cuts and surgery", "",
          "Command: `python benchmarks/models.py`  ", f"Date: {res['date']}; {res['platform']}  ",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()), "",
          "Random weights; one export each (seconds on this 2-core machine, one run, not a timing study).", "",
          "| model | input | export (s) | ONNX nodes | cuts | TL applies | TL at odd sizes | ONNX vs Keras max abs diff | head->tail vs full, 3 cuts |",
          "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ht = ", ".join(f"cut {k}: {v:.1e}" for k, v in r["head_tail_max_abs_diff"].items())
        md.append(f"| {r['model']} | {'x'.join(map(str, r['input'][1:]))} | {r['export_s']:.1f} | {r['nodes']} | {r['cuts']} | "
                  f"{r['tl_cuts']} | {r['odd_tl_cuts']} | {r['keras_vs_onnx_max_abs_diff']:.1e} | {ht} |")
    (out / "models.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
