"""Why InspectNet: it and a Keras Applications architecture (MobileNetV2, random initial weights)
trained side by side on the same ELPV split for the same few epochs on this 2-core CPU.
Writes benchmarks/results/train_choice.{json,md}.

    python benchmarks/train_choice.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    from tlcut.models import datasets, zoo
    from tlcut.toolchain.train import accuracy, fit

    ds = datasets.load("elpv", size=a.size, channels=1, seed=0)
    rows = []
    for name in ("InspectNet", "MobileNetV2"):
        m = zoo.build(name, input_shape=(a.size, a.size, 1), classes=len(ds.classes))
        info = fit(m, ds, epochs=a.epochs, lr=1e-3, patience=a.epochs, verbose=2)
        rows.append({"model": name, "parameters": int(m.count_params()), "epochs": info["epochs_run"],
                     "seconds_per_epoch": info["train_seconds"] / info["epochs_run"],
                     "best_val_accuracy": info["best_val_accuracy"], "val_accuracy_last": accuracy(m, ds.val)})
        print(json.dumps(rows[-1]), flush=True)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "epochs": a.epochs, "size": a.size,
           "majority_rate_val": float((ds.val.y == 0).mean()), "rows": rows}
    out = HERE / "results"
    (out / "train_choice.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Choosing the baseline architecture", "", f"Command: `python benchmarks/train_choice.py --epochs {a.epochs}`  ",
          f"Date: {res['date']}. ELPV, 4 grades, {a.size}x{a.size} grey, the fixed split (seed 0); Adam 1e-3, batch 32, "
          f"{a.epochs} epochs each, side by side in one run. The validation split's majority class is "
          f"{res['majority_rate_val']:.4f}.", "",
          "| model | parameters | seconds per epoch | best validation accuracy | validation accuracy after the last epoch |",
          "|---|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['parameters']:,} | {r['seconds_per_epoch']:.0f} | {r['best_val_accuracy']:.4f} | "
                  f"{r['val_accuracy_last']:.4f} |")
    md.append("")
    (out / "train_choice.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
