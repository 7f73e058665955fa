"""The trained models the ELPV accuracy benchmarks measure, shared so that they measure the same ones.

benchmarks/accuracy.py and benchmarks/transfer_layers.py train the same baseline (`tlcut train`'s
recipe), the same control (the baseline fine-tuned as retraining does, without a TL) and TL bundles
(`tlcut retrain`), under the same names in a --keep folder, so one run's kept models serve the other
with --reuse. Each accuracy is measured again through tlcut's runtime (`tlcut eval`'s path).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DEFECTIVE_FROM = 2  # grades 2/3 and 1 are "defective" in the binary task (p >= 0.5), as `--task binary` labels them


def model_args(ap) -> None:
    """The flags that choose the model, its data, its cuts and its training, in every such benchmark."""
    ap.add_argument("--model", default="InspectNet", help="tlcut zoo or Keras Applications name (random weights)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--cuts", default="s1_pool,s2_pool,s3_pool,s4_pool", help="Keras layers to cut after")
    ap.add_argument("--epochs", type=int, help="baseline epochs (default: tlcut train's)")
    ap.add_argument("--retrain-epochs", type=int, help="TL fine-tuning epochs (default: tlcut retrain's)")
    ap.add_argument("--task", default="grade")
    ap.add_argument("--seed", type=int, default=0)


def keep_args(ap) -> None:
    """--keep and --reuse: train once, measure again from the kept models."""
    ap.add_argument("--keep", help="keep the baseline model and the retrained bundles (with their recorded accuracy) here")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse the models a run kept there instead of "
                    "training them again (every accuracy is measured again)")


def kept(a, path) -> bool:
    """Whether --reuse takes ``path`` from the --keep folder instead of training it again."""
    return a.reuse and Path(path).exists()


def baseline_and_control(a, work: Path, say, reused: list) -> dict:
    """The baseline (trained, exported, measured on the device) and the control, each measured again.

    Returns the baseline's training report (``base``), its bundle (``bundle``), its evaluation
    (``dev``) and summary (``baseline``), and the control's evaluation (``ctl_dev``) and summary
    (``control``, against the baseline)."""
    from tlcut.bundle import Bundle
    from tlcut.placement import Placement
    from tlcut.stats import paired_difference
    from tlcut.toolchain.eval import evaluate
    from tlcut.toolchain.export import export
    from tlcut.toolchain.train import fine_tune, train

    if kept(a, work / "base.keras.json"):  # written after the model: both are whole
        base = json.loads((work / "base.keras.json").read_text())
        reused.append("base.keras")
    else:
        base = train(a.model, "elpv", work / "base.keras", size=a.size, channels=a.channels, task=a.task,
                     seed=a.seed, epochs=a.epochs, limit=a.limit, say=say)
    b = Bundle.open(work / "base") if kept(a, work / "base") else export(str(work / "base.keras"), work / "base",
                                                                         progress=say)
    dev = evaluate(b, Placement.resolve(b, "device"), limit=a.limit)
    bl = baseline(dev, base)
    say(json.dumps(bl))
    # The control: the baseline fine-tuned exactly as retraining does, without the TL.
    if kept(a, work / "control.keras.json"):
        ctl = json.loads((work / "control.keras.json").read_text())
        reused.append("control.keras")
    else:
        ctl = fine_tune(str(work / "base.keras"), work / "control.keras", epochs=a.retrain_epochs, limit=a.limit,
                        say=say)
    cb = Bundle.open(work / "control") if kept(a, work / "control") else export(
        str(work / "control.keras"), work / "control", progress=say)
    ctl_dev = evaluate(cb, Placement.resolve(cb, "device"), limit=a.limit)
    control = {"accuracy": ctl_dev["accuracy"], "training": ctl["training"],
               "vs_baseline": paired_difference(dev["per_image"], ctl_dev["per_image"])}
    say(json.dumps(control))
    return {"base": base, "bundle": b, "dev": dev, "baseline": bl, "ctl_dev": ctl_dev, "control": control}


def tl_folder(layer: str, tl: str = "pool") -> str:
    """The kept bundle's folder name: ``tl_LAYER`` for the pool (what accuracy.py keeps), else with the kind."""
    return f"tl_{layer}" if tl == "pool" else f"tl_{layer}_" + re.sub(r"[^A-Za-z0-9]+", "-", tl).strip("-")


def retrained_tl(a, work: Path, layer: str, say, reused: list, tl: str = "pool"):
    """The baseline retrained with the TL ``tl`` at ``layer`` (`tlcut retrain`): its training report and bundle."""
    from tlcut.bundle import Bundle
    from tlcut.toolchain.train import retrain

    name = tl_folder(layer, tl)
    if kept(a, work / name):
        r = Bundle.open(work / name).manifest["source"]["training"]
        reused.append(name)
    else:
        r = retrain(str(work / "base.keras"), layer, work / name, tl=tl, epochs=a.retrain_epochs, limit=a.limit,
                    say=say)
    return r, Bundle.open(work / name)


def version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:
        return None


def baseline(dev: dict, base: dict) -> dict:
    """The deployed baseline's accuracy, per-class recall, and binary accuracy, each with its interval."""
    import numpy as np

    from tlcut.stats import accuracy_interval

    y, p = np.asarray(dev["labels"]), np.asarray(dev["predicted"])
    recall = {c: float((p[y == k] == k).mean()) if (y == k).any() else None for k, c in enumerate(dev["classes"])}
    out = {"test_accuracy_keras": base["test_accuracy"], "test_accuracy_deployed": dev["accuracy"],
           "four_grade": accuracy_interval(dev["per_image"]), "recall": recall,
           "balanced_accuracy": float(np.mean([v for v in recall.values() if v is not None])),
           "majority_class_rate": base["majority_class_rate"], "n": dev["n"],
           "confusion": [[int(((y == i) & (p == j)).sum()) for j in range(len(dev["classes"]))]
                         for i in range(len(dev["classes"]))]}
    if len(dev["classes"]) == 4:
        out["binary"] = accuracy_interval(((y >= DEFECTIVE_FROM) == (p >= DEFECTIVE_FROM)).astype(int))
        out["binary_majority_rate"] = float(max((y >= DEFECTIVE_FROM).mean(), (y < DEFECTIVE_FROM).mean()))
    return out


def change(d: dict) -> str:
    return f"{d['diff_pts']:+.2f} pt [{d['ci95_pts'][0]:+.2f}, {d['ci95_pts'][1]:+.2f}]"
