"""`tlcut export` on every architecture it offers: does it export, how long, how much memory.

Each export runs as its own `python -m tlcut export NAME -o DIR` process, so its peak resident
memory (the kernel's ru_maxrss for that one process, from wait4) is its own. The weights are the
Keras model's parameter bytes, counted in a second process that only builds the model. Writes
``benchmarks/results/export.json`` and ``export.md`` after every model, so an interrupted run
keeps what it measured.

    python benchmarks/export.py [--models VGG16,ConvNeXtTiny] [--timeout 600] [--input-shape 224,224,3]
        [--max-rss-gib 14] [--note "a C++ build ran at the same time"]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = "TinyBranchNet"  # 23 KiB of weights: its export's peak RSS is the frameworks' own
BIG_MIB, MID_MIB = 100, 10  # weights above which RSS / weights, and RSS above the baseline, are reported

# Prints the parameter bytes of a zoo model (argv: name, "H,W,C" or "").
PARAMS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from tlcut.models import zoo
shape = tuple(int(v) for v in sys.argv[2].split(",")) if sys.argv[2] else None
m = zoo.build(sys.argv[1], input_shape=shape)
print(sum(int(w.numpy().nbytes) for w in m.weights), "x".join(str(d) for d in m.inputs[0].shape[1:]))
"""


def machine() -> dict:
    cpu = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1), "platform": platform.platform()}


def versions() -> dict:
    from tlcut import __version__

    def v(*dists):
        for d in dists:
            try:
                return md.version(d)
            except md.PackageNotFoundError:
                continue
        return None

    return {"tlcut": __version__, "tensorflow": v("tensorflow-cpu", "tensorflow"), "tf2onnx": v("tf2onnx"),
            "onnx": v("onnx"), "onnxruntime": v("onnxruntime")}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def run_measured(argv: list[str], timeout: float, env: dict, max_rss: float = float("inf")) -> dict:
    """Run argv; return its exit status, seconds, peak RSS in bytes and output. Killed (with its
    process group) after ``timeout`` seconds, or once resident above ``max_rss`` bytes, so that
    one export cannot take the machine (and whatever else runs on it) down."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                             start_new_session=True)
        stopped = None
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                stopped = "timeout"
            elif _rss(p.pid) > max_rss:
                stopped = "memory"
            if stopped:
                os.killpg(p.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.1)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return {"rc": p.returncode, "seconds": time.perf_counter() - t0, "peak_rss": usage.ru_maxrss * 1024,
            "stopped": stopped, "max_rss": max_rss, "output": text}


def error_line(r: dict, timeout: float) -> str | None:
    """The one line that says why an export failed."""
    if r["stopped"] == "timeout":
        return f"timed out after {timeout:g} s"
    if r["stopped"] == "memory":
        return (f"stopped by this benchmark once resident above {r['max_rss'] / 2**30:g} GiB (--max-rss-gib); "
                "the export needs more")
    if r["rc"] == 0:
        return None
    lines = [line.strip() for line in r["output"].splitlines() if line.strip()]
    mine = [line for line in lines if line.startswith("tlcut: error:")]
    if mine:
        return mine[-1][len("tlcut: error:"):].strip()
    if r["rc"] < 0:
        sig = signal.Signals(-r["rc"]).name
        return f"killed by {sig}" + (" (the OOM killer?)" if sig == "SIGKILL" else "")
    return "crashed: " + (lines[-1][:300] if lines else f"exit status {r['rc']}")


def list_models(env) -> list[str]:
    p = subprocess.run([sys.executable, "-m", "tlcut", "export", "--list"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
    if p.returncode != 0:
        sys.exit(f"`tlcut export --list` failed: {p.stderr.strip().splitlines()[-1:]}")
    return [n for n in p.stdout.split() if n]


def write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = res["models"]
    ok = [r for r in rows if r["status"] == "ok"]
    base = res.get("baseline_mib")
    big = [r for r in ok if r.get("weights_mib") and r["weights_mib"] >= BIG_MIB]
    worst = max(big, key=lambda r: r["rss_per_weight"]) if big else None
    mid = [r for r in ok if r.get("above_baseline_per_weight") is not None and r["weights_mib"] >= MID_MIB]
    worst_above = max(mid, key=lambda r: r["above_baseline_per_weight"]) if mid else None
    m = res["machine"]
    lines = [
        "# `tlcut export` on every architecture", "",
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']} (finished {res.get('finished', 'not yet')})  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['platform']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + "  ",
        f"Input: {res['input_shape'] or 'each model’s own default'}; random weights; per-model timeout {res['timeout_s']:g} s; "
        f"an export resident above {res['max_rss_gib']:g} GiB is stopped",
        "",
    ]
    if res.get("note"):
        lines += [f"**Note:** {res['note']}", ""]
    loads = [r["load_before"] for r in rows if r.get("load_before") is not None]
    if loads:
        lines += [f"1-minute load average before each export: {min(loads):.1f} to {max(loads):.1f} "
                  f"(on {m['cores']} cores; above that, other work shared the CPU and the seconds are upper bounds; "
                  "peak memory is per process and unaffected).", ""]
    lines += [
        "Each export is its own `python -m tlcut export NAME -o DIR` process; peak RSS is that process's "
        "ru_maxrss, TensorFlow, Keras and ONNX Runtime included"
        + (f": exporting TinyBranchNet (23 KiB of weights) peaks at {base:.0f} MiB, the *baseline*" if base else "")
        + ". Weights are the Keras model's parameter bytes. For small models RSS / weights mostly measures the "
        "baseline, so the last column subtracts it.", "",
        f"**{len(ok)} of {len(rows)} architectures export.**", "",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["Failed: " + "; ".join(f"{r['model']} ({r['error']})" for r in failed) + ".", ""]
    if worst:
        lines += [f"Worst peak RSS / weights among models with at least {BIG_MIB} MiB of weights: {worst['model']}, "
                  f"{worst['rss_per_weight']:.1f}x ({worst['peak_rss_mib']:.0f} MiB for {worst['weights_mib']:.1f} MiB).  "]
    if worst_above:
        lines += [f"Worst (peak RSS - baseline) / weights among models with at least {MID_MIB} MiB: "
                  f"{worst_above['model']}, {worst_above['above_baseline_per_weight']:.1f}x.  "]
    lines += ["",
        "| model | input | status | seconds | peak RSS MiB | weights MiB | RSS / weights | cuts | error | (RSS - baseline) / weights |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        err = (r.get("error") or "").replace("|", "\\|")
        done = r["status"] == "ok"  # a stopped export's peak is where it was stopped: no ratio
        lines.append(f"| {r['model']} | {r.get('input') or '-'} | {r['status']} | {f(r['seconds'], '.1f')} | "
                     f"{f(r['peak_rss_mib'], '.0f')} | {f(r['weights_mib'], '.1f')} | "
                     f"{f(r['rss_per_weight'] if done else None, '.1f')} | {f(r['cuts'], 'd')} | {err} | "
                     f"{f(r.get('above_baseline_per_weight') if done else None, '.1f')} |")
    (out / "export.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    from tlcut.bundle import manifest_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (default: all of `tlcut export --list`)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per export (default 600)")
    ap.add_argument("--input-shape", metavar="H,W,C", help="one input size for all (default: each model's own)")
    ap.add_argument("--max-rss-gib", type=float, default=14,
                    help="stop an export resident above this many GiB (default 14), to keep the machine up")
    ap.add_argument("--note", help="a remark for the results, e.g. other work running on the machine")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    names = a.models.split(",") if a.models else list_models(env)
    res = {"command": " ".join(["python", "benchmarks/export.py", *sys.argv[1:]]),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "versions": versions(), "input_shape": a.input_shape, "timeout_s": a.timeout, "max_rss_gib": a.max_rss_gib,
           "note": a.note, "models": []}
    out = Path(a.out)
    work = Path(tempfile.mkdtemp(prefix="tlcut-export-bench-"))
    if BASELINE in names:  # measured first: every other row is compared with it
        names = [BASELINE] + [n for n in names if n != BASELINE]
    else:
        r = run_measured([sys.executable, "-m", "tlcut", "export", BASELINE, "-o", str(work / BASELINE)], a.timeout, env,
                         a.max_rss_gib * 2**30)
        shutil.rmtree(work / BASELINE, ignore_errors=True)
        if error_line(r, a.timeout) is None:
            res["baseline_mib"] = r["peak_rss"] / 2**20
    try:
        for name in names:
            shape_args = ["--input-shape", a.input_shape] if a.input_shape else []
            load = os.getloadavg()[0]
            r = run_measured([sys.executable, "-m", "tlcut", "export", name, "-o", str(work / name), *shape_args],
                             a.timeout, env, a.max_rss_gib * 2**30)
            err = error_line(r, a.timeout)
            cuts = None
            if err is None:
                manifest = json.loads(manifest_path(work / name).read_text())
                cuts = len(manifest["cuts"])
            shutil.rmtree(work / name, ignore_errors=True)
            p = subprocess.run([sys.executable, "-c", PARAMS, name, a.input_shape or ""], capture_output=True,
                               text=True, cwd=ROOT, env=env, timeout=max(a.timeout, 60))
            weights, shape = (int(p.stdout.split()[-2]), p.stdout.split()[-1]) if p.returncode == 0 else (None, None)
            row = {"model": name, "input": shape, "status": "ok" if err is None else "failed",
                   "seconds": r["seconds"], "peak_rss_mib": r["peak_rss"] / 2**20,
                   "weights_mib": weights / 2**20 if weights else None,
                   "rss_per_weight": r["peak_rss"] / weights if weights else None, "cuts": cuts, "error": err,
                   "load_before": load}
            if name == BASELINE and err is None and not a.input_shape:
                res["baseline_mib"] = row["peak_rss_mib"]
            base = res.get("baseline_mib")
            row["above_baseline_per_weight"] = (row["peak_rss_mib"] - base) / row["weights_mib"] \
                if base is not None and weights and name != BASELINE else None
            res["models"].append(row)
            print(json.dumps(row), flush=True)
            write(res, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
