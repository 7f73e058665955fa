"""Accuracy of every placement tlcut can serve, on a real inspection task, with intervals.

Trains a baseline from random weights on the ELPV solar-cell images (4 defect grades, fixed seeded
stratified split) with `tlcut train`'s recipe, exports it, and at each cut measures test accuracy of
the deployed halves through tlcut's device/edge runtime (what `tlcut eval` measures, wire format
included): no TL with raw, float16 and int8 payloads; the TL as trained without it; the TL after
retraining (`tlcut retrain`) with raw, float16 and int8 payloads; and the retrained halves compiled
to int8 (QDQ, calibrated on ELPV training images) on ONNX Runtime and OpenVINO. Every change is
against the baseline on the same test images: a 95% paired bootstrap interval and McNemar's exact
test. The baseline's binary (functional / defective) accuracy is read off its four-grade answers.
Retraining also trains for more epochs, so the control (the baseline fine-tuned with the same recipe,
without the TL) is measured too and every retrained row is compared with it as well. With --keep DIR
--reuse, a run measures everything again from the models an earlier run kept there.
Writes benchmarks/results/{name}.{json,md}.

    python benchmarks/accuracy.py                                      # InspectNet, 4 cuts
    python benchmarks/accuracy.py --model DenseNet121 --size 96 --cuts pool2_pool,pool3_pool
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

from elpv_models import baseline_and_control, change, keep_args, model_args, retrained_tl, version

HERE = Path(__file__).resolve().parent
PUBLISHED = [
    "Deitsch et al. (arXiv 1807.02894), their own split: 88.42% average accuracy for a CNN fine-tuned from "
    "ImageNet weights; 82.44% for an SVM on hand-crafted features",
    "a 2023 study, 4 grades: 83.5%",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_args(ap)
    ap.add_argument("--engines", default="onnxrt,openvino", help="engines the int8 halves are measured on")
    ap.add_argument("--limit", type=int, default=None, help="fewer images, for a quick look (not a result)")
    ap.add_argument("--calib-count", type=int, default=64, help="ELPV training images that calibrate the int8 halves")
    keep_args(ap)
    ap.add_argument("--note", action="append", default=[], help="a note for the results file (repeatable)")
    ap.add_argument("--name", help="results file name (default accuracy, or accuracy-MODEL)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--report", metavar="JSON", help="only write the markdown again from a results JSON this script wrote")
    a = ap.parse_args()
    if a.report:
        if not Path(a.report).is_file():
            ap.error(f"--report {a.report}: no such file; give the .json an earlier run wrote")
        md = _markdown(json.loads(Path(a.report).read_text()))
        Path(a.report).with_suffix(".md").write_text(md)
        print(md)
        return 0
    if a.reuse and not a.keep:
        ap.error("--reuse needs --keep DIR, the folder an earlier run kept its models in")

    from tlcut.bundle import Bundle
    from tlcut.placement import Placement
    from tlcut.stats import paired_difference
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.eval import evaluate

    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="tlcut-acc-"))
    work.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()
    reused = []
    try:
        m = baseline_and_control(a, work, say, reused)
        base, b, dev, baseline, ctl_dev, control = (m[k] for k in ("base", "bundle", "dev", "baseline", "ctl_dev",
                                                                   "control"))

        def vs_base(ev, retrained=False):
            out = {"accuracy": ev["accuracy"], "payload_bytes": ev["payload_bytes"],
                   "vs_baseline": paired_difference(dev["per_image"], ev["per_image"])}
            if retrained:
                out["vs_control"] = paired_difference(ctl_dev["per_image"], ev["per_image"])
            return out

        rows = []
        for layer in a.cuts.split(","):
            c = b.cut(layer)
            compile_cuts(b, [c], tl="both")
            b = Bundle.open(b.path)
            opts = {f"no TL, {enc}": vs_base(evaluate(b, Placement.resolve(b, layer, False, enc), limit=a.limit))
                    for enc in ("raw", "float16", "int8")}
            opts["TL not retrained, raw"] = vs_base(evaluate(b, Placement.resolve(b, layer, True), limit=a.limit))
            r, rb = retrained_tl(a, work, layer, say, reused)
            for enc in ("raw", "float16", "int8"):
                opts[f"TL retrained, {enc}"] = vs_base(evaluate(rb, Placement.resolve(rb, layer, True, enc), limit=a.limit),
                                                       retrained=True)
            compile_cuts(rb, [rb.cut(layer)], tl="on", precision="int8", calib="elpv", calib_count=a.calib_count)
            rb = Bundle.open(rb.path)
            for be in a.engines.split(","):
                opts[f"TL retrained, int8 halves on {be}"] = vs_base(
                    evaluate(rb, Placement.resolve(rb, layer, True), limit=a.limit, backend=be, precision="int8"),
                    retrained=True)
            rows.append({"layer": layer, "cut": c.index, "shape": list(c.shape), "tl_shape": list(c.tl_shape),
                         "retrain": r["training"], "split_max_abs_diff": r["split_max_abs_diff"], "options": opts})
            say(json.dumps({k: v["accuracy"] for k, v in opts.items()}))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    import tensorflow as tf

    name = a.name or ("accuracy" if a.model == "InspectNet" else f"accuracy-{a.model}") + ("-quick" if a.limit else "")
    argv = [x for i, x in enumerate(sys.argv[1:]) if "--note" not in (x, sys.argv[i] if i else "")]  # notes go below
    cmd = "python benchmarks/accuracy.py " + " ".join(argv)
    res = {"command": cmd, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "platform": platform.platform(), "python": platform.pythonversion(), "tensorflow": tf.__version__,
           "onnxruntime": version("onnxruntime"), "openvino": version("openvino"), "args": vars(a),
           "data": base["data"], "classes": base["classes"], "model": base["model"], "training": base["training"],
           "baseline": baseline, "control": control, "published": PUBLISHED, "cuts": rows,
           "wall_s": time.perf_counter() - t_start, "reused": reused, "notes": a.note}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    md = _markdown(res)
    (out / f"{name}.md").write_text(md)
    print(md)
    return 0


def _markdown(res: dict) -> str:
    bl, tr, d = res["baseline"], res["training"], res["data"]
    fg = bl["four_grade"]
    md = [f"# Accuracy on ELPV ({d.get('task')}, {len(res['classes'])} classes): {res['model']}", "",
          f"Command: `{res['command']}`  ",
          f"Date: {res['date']}; {res['platform']}; Python {res['python']}, TensorFlow {res['tensorflow']}, "
          f"ONNX Runtime {res['onnxruntime']}, OpenVINO {res['openvino']}; 2-core CPU, no GPU.  ",
          f"Data: {d.get('name')}, {d['size']}x{d['size']}x{d['channels']}, split {d['fractions']} stratified by "
          f"class x cell type, seed {d['seed']} (sha256 prefix {d['split_sha256']}); classes {', '.join(res['classes'])}.  ",
          f"Baseline training (`tlcut train`, random initial weights): {tr['optimizer']} peak lr {tr['lr']:g}, "
          f"{tr['schedule']} schedule with {tr['warmup_epochs']} warm-up epochs, weight decay {tr['weight_decay']:g}, "
          f"label smoothing {tr['label_smoothing']:g}, class weights {tr['balance']}, augmentation: {tr['augment']}; "
          f"batch {tr['batch']}, {tr['epochs_run']} epochs, best validation epoch {tr['best_epoch']} kept; "
          f"seed {tr['seed']}; {tr['train_seconds']:.0f} s.", "",
          "## Baseline", "",
          f"- Four grades: **{fg['pts']:.2f}%** [95% bootstrap {fg['ci95_pts'][0]:.2f}, {fg['ci95_pts'][1]:.2f}] on "
          f"{bl['n']} test images, deployed (ONNX, device only; Keras said {100 * bl['test_accuracy_keras']:.2f}%); "
          f"always answering the majority class scores {100 * bl['majority_class_rate']:.2f}%. "
          f"Balanced accuracy (mean recall) {100 * bl['balanced_accuracy']:.2f}%; recall "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in bl["recall"].items() if v is not None) + "."]
    if "binary" in bl:
        bi = bl["binary"]
        md.append(f"- Functional / defective (grades >= 2/3 defective, read off the four-grade answer): "
                  f"**{bi['pts']:.2f}%** [{bi['ci95_pts'][0]:.2f}, {bi['ci95_pts'][1]:.2f}]; "
                  f"the majority answer scores {100 * bl['binary_majority_rate']:.2f}%.")
    md += ["- Confusion (rows true, columns predicted): "
           + "; ".join(f"{c}: {row}" for c, row in zip(res["classes"], bl["confusion"])), "",
           "Published figures on this data set, for context. Protocols differ: their own splits (ours keeps 15% for test "
           "and 15% for choosing the epoch), pre-trained weights where noted (none can be downloaded here), and "
           f"higher resolutions than the {d['size']}x{d['size']} these 2-core machines train at.", ""]
    md += [f"- {p}" for p in res["published"]]
    ctl = res.get("control")
    if ctl:
        ct, cd = ctl["training"], ctl["vs_baseline"]
        md += ["", "## The control: the same fine-tuning without the TL", "",
               f"Retraining with the TL also trains the model for {ct['epochs_run']} more epochs ({ct['optimizer']} "
               f"peak lr {ct['lr']:g}, {ct['schedule']}). To tell what the TL costs from what those epochs give, the "
               f"baseline is fine-tuned with the same recipe and seed without the TL: **{100 * ctl['accuracy']:.2f}%**, "
               f"{cd['diff_pts']:+.2f} pt against the baseline [{cd['ci95_pts'][0]:+.2f}, {cd['ci95_pts'][1]:+.2f}], "
               f"McNemar p {cd['mcnemar_p']:.3f} (best epoch {ct['best_epoch']}, {ct['train_seconds']:.0f} s). The TL's "
               "cost below is given against both."]
    md += ["", "## Every placement, against the baseline", "",
           "Each accuracy is measured on the test split through tlcut's runtime (head, wire encoding, ZeroMQ, tail), "
           "so it is what is served; `tlcut eval` records the same figure in the bundle for `tlcut plan "
           "--max-accuracy-drop`. The change is against the baseline on the same images, with a 95% paired bootstrap "
           "interval (2000 resamples) and McNemar's exact p (how often a split of the disagreements this uneven "
           f"would occur by chance). One test image is {100 / bl['n']:.2f} points.", ""]
    md += ["| cut | option | payload bytes | accuracy | change [95% CI] | McNemar p | only baseline / only this right | "
           "vs the control [95% CI] |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["cuts"]:
        where = f"{r['cut']} `{r['layer']}` {'x'.join(map(str, r['shape'][1:]))}"
        for k, v in r["options"].items():
            dd, vc = v["vs_baseline"], v.get("vs_control")
            md.append(f"| {where} | {k} | {v['payload_bytes']} | {100 * v['accuracy']:.2f}% | {change(dd)} | "
                      f"{dd['mcnemar_p']:.3f} | {dd['only_a_right']} / {dd['only_b_right']} | "
                      f"{change(vc) if vc else '-'} |")
    md += ["", "## The TL's cost after retraining", "",
           "The goal is a drop of at most 0.5 points. Against the baseline, a change mixes the TL's cost with what the "
           "retraining epochs give; against the control (the same epochs, no TL) it is the TL's own cost. The point "
           "estimate says whether the goal is met; the interval says what this test set can rule out (with this many "
           "images a single figure moves by several points).", "",
           "| cut | TL tensor | vs the baseline [95% CI] | McNemar p | vs the control [95% CI] | McNemar p | "
           "estimate within 0.5 pt (baseline / control) | interval rules out a drop over 0.5 pt (baseline / control) "
           "| retraining |",
           "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for r in res["cuts"]:
        dd, rt = r["options"]["TL retrained, raw"]["vs_baseline"], r["retrain"]
        vc = r["options"]["TL retrained, raw"].get("vs_control")
        both = [dd, vc] if vc else [dd]
        ok = " / ".join("yes" if x["diff_pts"] >= -0.5 else f"no: {x['diff_pts']:+.2f} pt" for x in both)
        rules = " / ".join("yes" if x["ci95_pts"][0] >= -0.5 else f"no: down to {x['ci95_pts'][0]:+.2f} pt" for x in both)
        md.append(f"| {r['cut']} `{r['layer']}` | {'x'.join(map(str, r['tl_shape'][1:]))} | {change(dd)} | "
                  f"{dd['mcnemar_p']:.3f} | {change(vc) if vc else '-'} | {format(vc['mcnemar_p'], '.3f') if vc else '-'} | "
                  f"{ok} | {rules} | {rt['epochs_run']} ep (best {rt['best_epoch']}), {rt['train_seconds']:.0f} s |")
    whole = f"Whole run: {res['wall_s'] / 60:.0f} min wall clock."
    if res.get("reused"):
        whole += (" This run measured every accuracy again but reused the models an earlier run of the same command "
                  f"kept (`--reuse`): {', '.join(res['reused'])}; their training times are the ones recorded then.")
    md += ["", whole, *[f"Note: {n}" for n in res.get("notes", [])], ""]
    return "\n".join(md)


if __name__ == "__main__":
    from tlcut.errors import TlcutError

    try:
        sys.exit(main())
    except TlcutError as e:
        print(f"accuracy: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
