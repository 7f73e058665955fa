"""Choosing the baseline architecture: candidates trained side by side with `tlcut train`'s recipe.

Each candidate (an architecture at a resolution) is trained from random weights on the same fixed
ELPV split with the baseline recipe (`RECIPE`: AdamW, cosine with warm-up, label smoothing, class
weights, EL augmentation), shortened to ``--epochs`` so every candidate fits this 2-core machine in
one run; the cosine still reaches zero at the last epoch. The choice is made on the validation
split only (its accuracy with a 95% bootstrap interval, and the paired change against the first
candidate with McNemar's test); the test split is never touched here. Results are written after
each candidate, so a stopped run keeps what it finished.
Writes benchmarks/results/train_choice.{json,md}.

    python benchmarks/train_choice.py [--epochs 10] [--candidates InspectNet@128,InspectNet/w32@128,...]

A candidate is NAME[/wWIDTH]@SIZE: a tlcut zoo or Keras Applications name, for InspectNet an
optional base width (default 16), and the square input size (grey images).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = "InspectNet@128,InspectNet@192,MobileNetV2@128"
DEFECTIVE_FROM = 2


def parse(spec: str) -> dict:
    from tlcut.errors import TlcutError

    try:
        name, size = spec.rsplit("@", 1)
        width = None
        if "/w" in name:
            name, w = name.split("/w", 1)
            width = int(w)
        return {"spec": spec, "name": name, "width": width, "size": int(size)}
    except ValueError:
        raise TlcutError(f"candidate '{spec}' is not NAME[/wWIDTH]@SIZE, e.g. InspectNet/w32@128") from None


def check(c: dict) -> None:
    """A one-line error for a candidate that cannot be built, before any candidate trains."""
    from tlcut.errors import TlcutError
    from tlcut.models import zoo

    if c["name"] not in zoo.names():
        raise TlcutError(f"candidate '{c['spec']}': no architecture '{c['name']}'; list them with `tlcut export --list`")
    if c["width"] is not None and (c["name"] != "InspectNet" or c["width"] < 1):
        raise TlcutError(f"candidate '{c['spec']}': only InspectNet takes a width, a positive number")
    if c["size"] < 8:
        raise TlcutError(f"candidate '{c['spec']}': size {c['size']} is too small to train on")


def build(c: dict, classes: int):
    from tlcut.models import zoo

    shape = (c["size"], c["size"], 1)
    if c["width"] is not None:
        return zoo.inspect_net(shape, classes, width=c["width"])
    return zoo.build(c["name"], input_shape=shape, classes=classes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--candidates", default=DEFAULT, help=f"comma-separated NAME[/wWIDTH]@SIZE (default {DEFAULT})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="fewer images, for a quick look (not a result)")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    cands = [parse(s) for s in a.candidates.split(",") if s]

    import numpy as np

    from tlcut.models import datasets
    from tlcut.stats import accuracy_interval, paired_difference
    from tlcut.toolchain.train import RECIPE, _tf, check_recipe, fit

    recipe = {**RECIPE, "epochs": a.epochs, "warmup": max(0, min(RECIPE["warmup"], a.epochs - 1))}
    check_recipe(**recipe)
    for c in cands:
        check(c)
    tf, keras = _tf()
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
           "cpus": __import__("os").cpu_count(), "recipe": recipe, "seed": a.seed, "limit": a.limit,
           "command": "python benchmarks/train_choice.py " + " ".join(sys.argv[1:]), "rows": []}
    first_hits = None
    for c in cands:
        ds = datasets.load("elpv", size=c["size"], channels=1, seed=a.seed, limit=a.limit)
        res["split_sha256"] = ds.info["split_sha256"]
        res["majority_rate_val"] = float(np.bincount(ds.val.y).max() / len(ds.val.y))
        m = build(c, len(ds.classes))
        print(f"[choice] {c['spec']}: {m.count_params():,} parameters, {a.epochs} epochs", flush=True)
        t0 = time.perf_counter()
        info = fit(m, ds, batch=32, patience=a.epochs, seed=a.seed, verbose=2, **recipe)
        y = ds.val.y
        p = m.predict(ds.val.x.astype(np.float32) / 255.0, batch_size=64, verbose=0).argmax(axis=1)
        hits = (p == y).astype(int)
        recall = [float((p[y == k] == k).mean()) for k in range(len(ds.classes)) if (y == k).any()]
        row = {**c, "parameters": int(m.count_params()), "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
               "seconds_per_epoch": info["train_seconds"] / info["epochs_run"], "seconds": time.perf_counter() - t0,
               "val": accuracy_interval(hits), "val_balanced": float(np.mean(recall)),
               "val_binary": accuracy_interval(((y >= DEFECTIVE_FROM) == (p >= DEFECTIVE_FROM)).astype(int)),
               "val_recall": recall}
        if first_hits is None:
            first_hits = hits
        else:
            row["vs_first"] = paired_difference(first_hits, hits)
        res["rows"].append(row)
        print(json.dumps({k: row[k] for k in ("spec", "parameters", "seconds_per_epoch", "val")}), flush=True)
        write(res, Path(a.out))
        keras.backend.clear_session()
    print(markdown(res))
    return 0


def write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(res, indent=1) + "\n"), (".md", markdown(res))):
        tmp = out / f"train_choice{suffix}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"train_choice{suffix}")


def markdown(res: dict) -> str:
    r = res["recipe"]
    first = res["rows"][0]["spec"] if res["rows"] else ""
    n = res["rows"][0]["val"]["n"] if res["rows"] else 0
    md = ["# Choosing the baseline architecture", "",
          f"Command: `{res['command']}`  ",
          f"Date: {res['date']}; {res['machine']}; Python {res['python']}, TensorFlow {res['tensorflow']}, "
          f"Keras {res['keras']}; {res['cpus']}-core CPU, no GPU, one candidate at a time.  ",
          f"Data: ELPV, 4 grades, grey, the fixed split (seed {res['seed']}, sha256 prefix {res.get('split_sha256')})"
          + (f", limited to {res['limit']} images (a quick look, not a result)" if res["limit"] else "") + ".  ",
          f"Recipe: `tlcut train`'s, shortened to {r['epochs']} epochs: AdamW peak lr {r['lr']:g}, cosine with "
          f"{r['warmup']} warm-up epochs, weight decay {r['weight_decay']:g}, label smoothing {r['label_smoothing']:g}, "
          f"class weights {r['balance']}, EL augmentation; batch 32; the best validation epoch's weights kept.", "",
          f"Chosen on the validation split only ({n} images; the test split is not used here). Always answering "
          f"\"functional\" scores {res.get('majority_rate_val', 0) * 100:.2f}% on it. The change is paired against "
          f"{first} on the same images (95% bootstrap interval, McNemar's exact p).", "",
          "| candidate | parameters | s / epoch | best epoch | validation accuracy [95% CI] | change vs first [95% CI] | "
          "McNemar p | balanced | functional / defective |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["rows"]:
        v, vs = row["val"], row.get("vs_first")
        change = f"{vs['diff_pts']:+.2f} pt [{vs['ci95_pts'][0]:+.2f}, {vs['ci95_pts'][1]:+.2f}]" if vs else "-"
        md.append(f"| {row['spec']} | {row['parameters']:,} | {row['seconds_per_epoch']:.0f} | {row['best_epoch']} | "
                  f"{v['pts']:.2f}% [{v['ci95_pts'][0]:.2f}, {v['ci95_pts'][1]:.2f}] | {change} | "
                  f"{format(vs['mcnemar_p'], '.3f') if vs else '-'} | {row['val_balanced'] * 100:.2f}% | "
                  f"{row['val_binary']['pts']:.2f}% |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    from tlcut.errors import TlcutError

    try:
        sys.exit(main())
    except TlcutError as e:
        print(f"train_choice: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
