"""Peak memory and time of int8 calibration, before and after it was collected a batch at a time.

    python benchmarks/calibration.py --bundle DIR [--cuts 14] [--git-rev REV] [--before-counts 16]
        [--after-counts 16,64] [--calib-batch 8]

Each run is `tlcut compile COPY --cuts 14 --tl both --precision int8 --calib elpv --calib-count N`
on a fresh copy of the bundle, in a subprocess under `/usr/bin/time -v` (peak resident set, wall
clock) and `nice -n 5`. "before" runs the code at --git-rev, checked out in a temporary git worktree;
"after" runs this checkout. Each imports tlcut from a folder laid out as pyproject's package-dir says,
so the two never mix (the import path of each is recorded). Scale agreement: for each calibration
count run both before and after, every QuantizeLinear/DequantizeLinear scale of every int8 file,
matched by tensor name. Make the bundle with `tlcut export DenseNet169 -o DIR` (random weights).
Writes benchmarks/results/calibration.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIME = "/usr/bin/time"
ISSUE = {"peak_rss_gb": 15.4, "wall_s": 141.0, "count": 64,
         "how": "quoted from issue 23 (`/usr/bin/time -v`, same command, 64 images); not measured by this script"}


def stage(code_root: Path, into: Path) -> Path:
    """A folder whose ``tlcut`` package is ``code_root``'s, laid out as its pyproject maps it."""
    dirs = tomllib.loads((code_root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = into / "tlcut"
    pkg.mkdir(parents=True)
    for entry in (code_root / dirs["tlcut"]).iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        if name != "tlcut" and not (pkg / name.split(".", 1)[1]).exists():
            (pkg / name.split(".", 1)[1]).symlink_to(code_root / folder)
    return into


def available_gb() -> float:
    return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) / 1e6


def wait_for_memory(need_gb: float) -> float:
    """Wait until ``need_gb`` is available: the machine is shared, and running out kills someone's work."""
    while (free := available_gb()) < need_gb:
        print(f"[calibration]   {free:.1f} GB available, waiting for {need_gb:.0f} GB", flush=True)
        time.sleep(30)
    return free


def run_compile(path: Path, bundle: Path, cuts: str, count: int, batch: int | None) -> dict:
    """One compile under /usr/bin/time -v: peak RSS, wall clock, the command and where tlcut came from."""
    env = dict(os.environ, PYTHONPATH=str(path), PYTHONDONTWRITEBYTECODE="1")
    cwd = path.parent  # not a checkout: its tlcut/ folder would shadow PYTHONPATH
    origin = subprocess.run([sys.executable, "-c", "import os, tlcut.calibrate.int8 as m; print(os.path.realpath(m.__file__))"],
                            env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    tlcut = ["tlcut", "compile", str(bundle), "--cuts", cuts, "--tl", "both", "--precision", "int8",
             "--calib", "elpv", "--calib-count", str(count)] + (["--calib-batch", str(batch)] if batch else [])
    cmd = [TIME, "-v", "nice", "-n", "5", sys.executable, "-m", *tlcut]
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        err = p.communicate()[1]
    finally:
        if p.poll() is None:  # interrupted: time's child too
            os.killpg(p.pid, signal.SIGKILL)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.group(1).split(":")))) if wall else None
    return {"command": " ".join(["/usr/bin/time -v nice -n 5 python -m", *tlcut[:2], "BUNDLE_COPY", *tlcut[3:]]),
            "tlcut_from": origin, "exit": p.returncode, "peak_rss_gb": int(rss.group(1)) / 1e6 if rss else None,
            "wall_s": secs, "stderr_tail": err[-600:] if p.returncode else ""}


def small_graph(batch: int) -> dict:
    """On a small residual graph whose inputs widen batch after batch: per method, the largest relative
    difference of any activation scale (max |range| / 127) from ONNX Runtime's all-at-once ranges, for
    tlcut's batches and for ONNX Runtime's own calibrator fed the same batches without a common range."""
    import contextlib
    import io

    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from tlcut.calibrate import int8
    from tlcut.models import graphs

    m = graphs.residual(hw=9, c=4)
    shape = [x.dim_value for x in m.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    feeds = [{m.graph.input[0].name: (rng.standard_normal(shape) * (1 + 3 * (i % 5))).astype(np.float32)}
             for i in range(11)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        tmp = Path(tmp)
        onnx.save(m, tmp / "m.onnx")

        def ort(step, method):
            cal = create_calibrator(tmp / "m.onnx", sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                    augmented_model_path=str(tmp / "a.onnx"), calibrate_method=int8._method(method),
                                    extra_options=int8.CALIB_OPTIONS)
            for i in range(0, len(feeds), step):
                cal.collect_data(int8.Samples(feeds[i:i + step]))
            return cal.compute_data()

        def worst(ref, got):
            top = {k: max(abs(float(np.max(v))) for v in ref[k].range_value) for k in ref.keys()}
            return max(abs(max(abs(float(np.max(v))) for v in got[k].range_value) - top[k]) / top[k] for k in top)

        for method in int8.METHODS:
            ref = ort(len(feeds), method)
            out[method] = {"tensors": len(ref.keys()), "samples": len(feeds), "batch": batch,
                           "tlcut": worst(ref, int8.tensor_ranges(tmp / "m.onnx", feeds, method, batch, tmp)),
                           "onnxruntime_batched": worst(ref, ort(batch, method))}
    return out


def scales(path: Path) -> dict[str, np.ndarray]:
    """Every QuantizeLinear/DequantizeLinear scale of an ONNX file, by initializer name."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    return {n.input[1]: numpy_helper.to_array(inits[n.input[1]]).astype(np.float64) for n in m.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits}


def agreement(before: Path, after: Path) -> list[dict]:
    """Per int8 file written by both runs: how many scales, and the largest relative difference."""
    out = []
    for f in sorted(before.rglob("*.onnx")):
        rel = f.relative_to(before)
        if "int8" not in str(rel) or not (after / rel).exists():
            continue
        a, b = scales(f), scales(after / rel)
        diffs = {k: float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-30)))
                 for k in a.keys() & b.keys()}
        worst = max(diffs, key=diffs.get) if diffs else None
        out.append({"file": str(rel), "scales": len(diffs), "only_before": len(a.keys() - b.keys()),
                    "only_after": len(b.keys() - a.keys()), "max_rel_diff": diffs[worst] if worst else None,
                    "worst": worst, "nonzero": {k: v for k, v in diffs.items() if v}})
    return out


def machine() -> dict:
    import onnx
    import onnxruntime

    from tlcut.toolchain.bench import cpu_model

    mem = dict(re.findall(r"(\w+):\s+(\d+) kB", Path("/proc/meminfo").read_text()))
    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
            "memory_gb": int(mem["MemTotal"]) / 1e6, "available_at_start_gb": int(mem["MemAvailable"]) / 1e6,
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "load_at_start": os.getloadavg()}


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="an exported bundle (`tlcut export DenseNet169 -o DIR`)")
    ap.add_argument("--cuts", default="14")
    ap.add_argument("--git-rev", default="85845fa", help="the code before: a git revision (default the last "
                                                         "commit before calibration was batched)")
    ap.add_argument("--before-counts", default="1,16", help="calibration counts for the code before; 64 peaked at "
                                                          "15.4 GB there, so keep it low on a shared machine")
    ap.add_argument("--after-counts", default="1,16,64")
    ap.add_argument("--calib-batch", type=int, default=8)
    ap.add_argument("--need-gb", type=float, default=10, help="wait for this much available memory before each run")
    ap.add_argument("-o", "--output", default=str(HERE / "results" / "calibration"))
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the temporary worktree
    if not Path(TIME).exists():
        sys.exit(f"{TIME} is missing: apt-get install -y time")
    counts = {"before": [int(c) for c in a.before_counts.split(",") if c],
              "after": [int(c) for c in a.after_counts.split(",") if c]}
    rev = git("rev-parse", a.git_rev)
    head = git("rev-parse", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain", "--", "calibrate",
                                                                       "toolchain", "tlcut") else "")
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "bundle": str(Path(a.bundle).resolve()), "cuts": a.cuts, "calib_batch": a.calib_batch,
              "code": {"before": rev, "after": head}, "issue": ISSUE, "runs": [], "agreement": {}}
    report["small_graph"] = small_graph(4)
    with tempfile.TemporaryDirectory(prefix="tlcut-calib-bench-") as tmp:
        tmp = Path(tmp)
        git("worktree", "add", "--detach", str(tmp / "before-src"), rev)
        try:
            paths = {"before": stage(tmp / "before-src", tmp / "before-path"), "after": stage(ROOT, tmp / "after-path")}
            for label in ("before", "after"):
                for count in counts[label]:
                    copy = tmp / f"{label}-{count}"
                    shutil.copytree(a.bundle, copy)
                    print(f"[calibration] {label}, {count} images ...", flush=True)
                    free = wait_for_memory(a.need_gb)
                    r = run_compile(paths[label], copy, a.cuts, count, a.calib_batch if label == "after" else None)
                    r.update(code=label, rev=report["code"][label], count=count, available_before_gb=free,
                             calib_batch=a.calib_batch if label == "after" else None)
                    print(f"[calibration]   peak {r['peak_rss_gb']} GB, {r['wall_s']} s, exit {r['exit']}", flush=True)
                    report["runs"].append(r)
            for count in sorted(set(counts["before"]) & set(counts["after"])):
                report["agreement"][str(count)] = agreement(tmp / f"before-{count}", tmp / f"after-{count}")
        finally:
            git("worktree", "remove", "--force", str(tmp / "before-src"))
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report, argv if argv is not None else sys.argv[1:]))
    print(f"[calibration] wrote {out}.md and .json")
    return 0 if all(r["exit"] == 0 for r in report["runs"]) else 1


def markdown(r: dict, argv) -> str:
    m = r["machine"]
    lines = [
        "# int8 calibration: peak memory and time, before and after batching",
        "",
        f"`python benchmarks/calibration.py {' '.join(argv)}`, {r['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.1f} GB ({m['available_at_start_gb']:.1f} GB "
        f"available at the start, load {m['load_at_start'][0]:.1f}); {m['os']}; Python {m['python']}, "
        f"ONNX Runtime {m['onnxruntime']}, onnx {m['onnx']}, numpy {m['numpy']}. Other work shared the machine "
        "and the runs were niced: peak memory is the figure that matters, wall time is noisy.",
        "",
        f"Each row: `tlcut compile` of cut {r['cuts']} (`--tl both --precision int8 --calib elpv`) on a fresh copy "
        f"of `{r['bundle']}` (DenseNet169, random weights), under `/usr/bin/time -v nice -n 5`; it quantizes "
        "the whole model and the four halves. \"before\" is the code at "
        f"{r['code']['before'][:10]}, run from a temporary git worktree; \"after\" is {r['code']['after'][:10]}.",
        "",
        "Peak RSS is `/usr/bin/time`'s maximum resident set size of the compile. The code after feeds ONNX "
        "Runtime's calibrator --calib-batch images per `collect_data` call, each reduced into the histograms "
        "before the next; a first pass over the images takes each tensor's extremes, so that every batch "
        "lands in the bins the all-at-once histogram has (calibrate/int8.py). The images go through the "
        "model twice: that costs time, not memory.",
        "",
        f"The code before ran with {', '.join(str(x['count']) for x in r['runs'] if x['code'] == 'before')} "
        "images only: it holds every intermediate output of every image (about 0.2 GB each on DenseNet169), "
        "and other sessions' work needed the rest of this shared machine. Its 64-image figure is the issue's.",
        "",
        "| code | calibration images | --calib-batch | peak RSS | wall clock | how |",
        "|---|---|---|---|---|---|",
        f"| before | {r['issue']['count']} | - | {r['issue']['peak_rss_gb']:.1f} GB | {r['issue']['wall_s']:.0f} s "
        f"| {r['issue']['how']} |",
    ]
    for x in r["runs"]:
        peak = f"{x['peak_rss_gb']:.2f} GB" if x["peak_rss_gb"] else "?"
        wall = f"{x['wall_s']:.0f} s" if x["wall_s"] else "?"
        fail = "" if x["exit"] == 0 else f", exit {x['exit']}"
        lines.append(f"| {x['code']} | {x['count']} | {x['calib_batch'] or '-'} | {peak} | {wall} | measured here "
                     f"({x['available_before_gb']:.1f} GB available at its start){fail} |")
    lines += ["", "Wall clock compares only between rows measured here, one after another; the issue's 141 s came "
              "from a quieter machine. What one more image costs, between the fewest and the most images of each "
              "code measured here:", ""]
    for label in ("before", "after"):
        rows = sorted((x for x in r["runs"] if x["code"] == label and x["exit"] == 0), key=lambda x: x["count"])
        if len(rows) >= 2:
            lo, hi = rows[0], rows[-1]
            mem, secs = ((hi[k] - lo[k]) / (hi["count"] - lo["count"]) for k in ("peak_rss_gb", "wall_s"))
            at64 = f"; at 64 images that is {lo['peak_rss_gb'] + mem * (64 - lo['count']):.1f} GB" if hi["count"] < 64 else ""
            lines.append(f"- {label}: {mem * 1000:+.0f} MB and {secs:+.1f} s per image ({lo['count']} to {hi['count']} "
                         f"images){at64}")
    lines += ["", "The command of each measured row (BUNDLE_COPY: the copy of the bundle):", ""]
    lines += [f"- {x['code']}, {x['count']}: `{x['command']}` (tlcut from `{x['tlcut_from']}`)" for x in r["runs"]]
    lines += ["", "## Same scales", "",
              "Every QuantizeLinear/DequantizeLinear scale of each int8 file, before vs after at the same "
              "calibration count, matched by name; relative difference |before - after| / |before|.", "",
              "| images | file | scales | max relative difference | only before / only after |",
              "|---|---|---|---|---|"]
    for count, files in r["agreement"].items():
        for f in files:
            d = "n/a" if f["max_rel_diff"] is None else f"{f['max_rel_diff']:.3g}"
            lines.append(f"| {count} | `{f['file']}` | {f['scales']} | {d} | {f['only_before']} / {f['only_after']} |")
    lines += ["", f"The same check on a small residual graph ({next(iter(r['small_graph'].values()))['samples']} "
              f"inputs whose spread grows batch after batch, batches of {next(iter(r['small_graph'].values()))['batch']}),"
              " in process: the largest relative difference of any activation scale from ONNX Runtime's "
              "all-at-once ranges, for tlcut's batches and for ONNX Runtime's calibrator fed the same batches "
              "(each batch widens the bins the first one set). tests/test_calibration.py asserts tlcut's "
              "are equal, tolerance 0.", "",
              "| method | tensors | tlcut, batched | ONNX Runtime, batched |", "|---|---|---|---|"]
    for method, x in r["small_graph"].items():
        lines.append(f"| {method} | {x['tensors']} | {x['tlcut']:.3g} | {x['onnxruntime_batched']:.3g} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
