#!/usr/bin/env bash
# The GPU check: the one command to run on a machine with an NVIDIA GPU (an edge server or a Jetson).
#
#   bash scripts/gpu-check.sh [WORKDIR]          (default WORKDIR: gpu-check-work)
#
# It exports DenseNet169 (random weights), compiles two cuts with the TL at float32 and int8 (QDQ,
# calibrated on ELPV), makes float16 halves, and then, for every GPU engine present here:
#   - TensorRT (`pip install 'tlcut[tensorrt]'`, or JetPack): engines built by `tlcut compile
#     --backend tensorrt` (float32, int8) and by the runner's engine cache (float16), with and
#     without CUDA graphs; and, where trtexec exists, the Jetson folder's build_engine.sh for real;
#   - ONNX Runtime's CUDA and TensorRT providers (`pip install onnxruntime-gpu`);
# checks each half against ONNX Runtime on the CPU (Polygraphy-style: an element fails only if it
# exceeds both the absolute and the relative tolerance; float32 1e-4/1e-4, float16 1e-2/1e-2; int8
# reported as error statistics and top-1 agreement of head+tail against float32), and times it
# (median, p90, p99 of `infer` with host/device copies, and TensorRT's compute alone without them).
# Results: RESULTS.json and RESULTS.md (default benchmarks/results/gpu-check-HOST). Exit 0 when
# every float32/float16 check passed, 1 when one failed, 2 when it cannot run here.
#
# Settings (environment): MODEL=DenseNet169 (or an .onnx file, with EXPORT_ARGS="--input-layout NCHW")
# CUTS=auto|K1,K2  CALIB=elpv|FOLDER  CALIB_COUNT=64  SAMPLES=16  ITERATIONS=200  WARMUP=20
# RESULTS=path/prefix  PYTHON=python3.
# GPU_CHECK_CPU_SELFTEST=1 runs all of it with ONNX Runtime's CPU standing in for the GPU engines:
# it tests this script where no GPU is; its results say so and measure no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WORK=${1:-gpu-check-work}
MODEL=${MODEL:-DenseNet169}
EXPORT_ARGS=${EXPORT_ARGS:-}
CUTS=${CUTS:-auto}
CALIB=${CALIB:-elpv}
CALIB_COUNT=${CALIB_COUNT:-64}
SAMPLES=${SAMPLES:-16}
ITERATIONS=${ITERATIONS:-200}
WARMUP=${WARMUP:-20}
SELFTEST=${GPU_CHECK_CPU_SELFTEST:-0}
RESULTS=${RESULTS:-benchmarks/results/gpu-check-$(hostname -s 2>/dev/null || echo host)}

die() { echo "gpu-check: error: $*" >&2; exit 2; }
say() { echo "gpu-check: $*" >&2; }
has_py() { "$PY" -c "$1" >/dev/null 2>&1; }

command -v "$PY" >/dev/null 2>&1 || die "$PY not found; set PYTHON=/path/to/python3"
has_py 'import tlcut' || die "tlcut is not importable by $PY; pip install -e . in tlcut's source first"

# -- what is here ------------------------------------------------------------------------------
HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then HAVE_GPU=1
elif [ -r /etc/nv_tegra_release ]; then HAVE_GPU=1  # a Jetson: its nvidia-smi lists no GPU on older JetPacks
fi
HAVE_TRT=0; has_py 'import tensorrt' && HAVE_TRT=1
HAVE_CUDAPY=0
has_py 'from cuda.bindings import runtime' && HAVE_CUDAPY=1
[ "$HAVE_CUDAPY" = 1 ] || { has_py 'from cuda import cudart' && HAVE_CUDAPY=1; } || true
HAVE_ORT_CUDA=0
has_py 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' && HAVE_ORT_CUDA=1
HAVE_ORT_TRT=0
has_py 'import onnxruntime as o, sys; sys.exit("TensorrtExecutionProvider" not in o.get_available_providers())' && HAVE_ORT_TRT=1
TRTEXEC=$(command -v trtexec 2>/dev/null || { [ -x /usr/src/tensorrt/bin/trtexec ] && echo /usr/src/tensorrt/bin/trtexec; } || true)

if [ "$SELFTEST" = 1 ]; then
  say "CPU SELF-TEST: ONNX Runtime's CPU stands in for every GPU engine; nothing here measures a GPU"
  HAVE_TRT=0; HAVE_ORT_CUDA=0; HAVE_ORT_TRT=0; TRTEXEC=""
else
  [ "$HAVE_GPU" = 1 ] || die "no NVIDIA GPU here (nvidia-smi lists none and this is not a Jetson): run this where there is one; on this machine only the CPU-side tests run (python -m pytest tests/test_gpu_paths.py)"
  if [ "$HAVE_TRT" = 0 ] && [ "$HAVE_ORT_CUDA" = 0 ]; then
    die "a GPU is here, but neither TensorRT nor ONNX Runtime's CUDA provider: pip install 'tlcut[tensorrt]' (TensorRT and cuda-python; on a Jetson TensorRT comes with JetPack), and/or pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
  fi
  if [ "$HAVE_TRT" = 1 ] && [ "$HAVE_CUDAPY" = 0 ]; then
    die "TensorRT is here but NVIDIA's cuda-python is not: pip install cuda-python (your CUDA's major version)"
  fi
  [ "$HAVE_TRT" = 1 ] || say "TensorRT is not installed: checking ONNX Runtime's CUDA provider only (pip install 'tlcut[tensorrt]' adds the TensorRT engines)"
  [ "$HAVE_ORT_CUDA" = 1 ] || say "onnxruntime-gpu is not installed: checking TensorRT only"
fi

# -- the bundle: export, two cuts, float32 and int8 ---------------------------------------------
B="$WORK/bundle"
mkdir -p "$WORK"
# the bundle's manifest file, by the one module that names a bundle's paths
MANIFEST=$("$PY" -c 'from tlcut.bundle import manifest_path; print(manifest_path(""))')
if [ ! -f "$B/$MANIFEST" ]; then
  case "$MODEL" in
    *.onnx) ;;
    *) has_py 'import tensorflow, tf2onnx' || die "exporting $MODEL needs TensorFlow: pip install 'tlcut[tf,train]'" ;;
  esac
  say "exporting $MODEL to $B"
  # shellcheck disable=SC2086  # EXPORT_ARGS is a list of flags
  "$PY" -m tlcut export "$MODEL" -o "$B" $EXPORT_ARGS
fi
if [ "$CALIB" = elpv ]; then
  has_py 'import elpv_dataset' || die "int8 calibration on ELPV needs its images: pip install 'tlcut[train]' (or CALIB=FOLDER)"
fi
if [ "$CUTS" = auto ]; then
  CUTS=$("$PY" -m tlcut cuts "$B" --json --tl-only | "$PY" -c '
import json, sys
cuts = [c["index"] for c in json.load(sys.stdin)["cuts"]]
if len(cuts) < 2:
    sys.exit("fewer than two cuts take the TL; set CUTS=K1,K2")
print(f"{cuts[len(cuts) // 3]},{cuts[2 * len(cuts) // 3]}")')
fi
say "cuts $CUTS: float32 halves"
"$PY" -m tlcut compile "$B" --cuts "$CUTS" --tl on
say "cuts $CUTS: int8 halves (QDQ, calibrated on $CALIB)"
"$PY" -m tlcut compile "$B" --cuts "$CUTS" --tl on --precision int8 --calib "$CALIB" --calib-count "$CALIB_COUNT"
if [ "$HAVE_TRT" = 1 ]; then
  say "TensorRT engines with tlcut compile --backend tensorrt (float32, int8)"
  "$PY" -m tlcut compile "$B" --cuts "$CUTS" --tl on --backend tensorrt
  "$PY" -m tlcut compile "$B" --cuts "$CUTS" --tl on --backend tensorrt --precision int8 --calib "$CALIB" \
    --calib-count "$CALIB_COUNT"
fi

# -- the Jetson folder's build_engine.sh, for real, where trtexec is ------------------------------
TRTEXEC_LOG=""
if [ -n "$TRTEXEC" ]; then
  K1=${CUTS%%,*}
  DEV="$WORK/device-$K1"
  "$PY" -m tlcut compile "$B" --target jetson --cut "$K1" --tl on -o "$DEV" --force
  TRTEXEC_LOG="$WORK/build_engine.log"
  say "build_engine.sh of $DEV with $TRTEXEC (log: $TRTEXEC_LOG)"
  if ! TRTEXEC="$TRTEXEC" TIME=1 bash "$DEV/build_engine.sh" >"$TRTEXEC_LOG" 2>&1; then
    say "build_engine.sh FAILED; its log: $TRTEXEC_LOG"
    echo "BUILD_ENGINE_FAILED" >>"$TRTEXEC_LOG"
  fi
fi

# -- accuracy and timing ------------------------------------------------------------------------
export B CUTS SAMPLES ITERATIONS WARMUP SELFTEST HAVE_TRT HAVE_ORT_CUDA HAVE_ORT_TRT TRTEXEC TRTEXEC_LOG RESULTS WORK
mkdir -p "$(dirname "$RESULTS")"
"$PY" - <<'PYCHECK'
import json, os, platform, subprocess, sys, time
from pathlib import Path

import numpy as np

from tlcut.bundle import ONNX, Bundle
from tlcut.runtime import backends
from tlcut.toolchain.targets import to_float16

env = os.environ
B = Bundle.open(env["B"])
CUTS = [int(c) for c in env["CUTS"].split(",")]
SAMPLES, ITER, WARM = int(env["SAMPLES"]), int(env["ITERATIONS"]), int(env["WARMUP"])
SELFTEST = env["SELFTEST"] == "1"
TOL = {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2)}  # (absolute, relative), Polygraphy-style
PRECS = ("float32", "float16", "int8")
WORK = Path(env["WORK"])


def engines():
    """(label, backend, engine name for bundle lookups) of every GPU engine here."""
    ORT, TRT = backends.ONNXRT, backends.TENSORRT
    out = []
    if SELFTEST:
        out.append(("onnxrt-cpu (SELF-TEST stand-in, not a GPU)", backends.get(ORT), ONNX))
    if env["HAVE_TRT"] == "1":
        out.append(("tensorrt", backends.get(TRT), TRT))
        out.append(("tensorrt+cudagraph", backends.get(TRT, cuda_graph=True), TRT))
    if env["HAVE_ORT_CUDA"] == "1":
        out.append(("onnxrt cuda EP", backends.get(ORT, providers="cuda"), ONNX))
    if env["HAVE_ORT_TRT"] == "1":
        out.append(("onnxrt tensorrt EP", backends.get(ORT, providers="tensorrt"), ONNX))
    return out


def compare(ref, got, atol, rtol):
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got - ref)
    bad = (diff > atol) & (diff > rtol * np.abs(ref))
    return {"pass": bool(not bad.any()), "failing": int(bad.sum()), "elements": int(diff.size),
            "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "max_rel": float((diff / np.maximum(np.abs(ref), 1e-12)).max()),
            "max_abs_over_max_ref": float(diff.max() / max(float(np.abs(ref).max()), 1e-12))}


def ms(ts):
    a = np.asarray(ts) * 1e3
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": int(a.size)}


def run_all(runner, name, xs):
    return [next(iter(runner.infer({name: x}).values())) for x in xs]


def timing(runner, name, x):
    feed = {name: x}
    for _ in range(WARM):
        runner.infer(feed)
    ts = []
    for _ in range(ITER):
        t0 = time.perf_counter()
        runner.infer(feed)
        ts.append(time.perf_counter() - t0)
    out = {"with_copies_ms": ms(ts)}
    if hasattr(runner, "compute_only"):
        ts = []
        for _ in range(ITER):
            t0 = time.perf_counter()
            runner.compute_only()
            ts.append(time.perf_counter() - t0)
        out["without_copies_ms"] = ms(ts)
    return out


cpu = backends.get(backends.ONNXRT)
rng = np.random.default_rng(0)
inp = B.inputs[0]
xs = [rng.random(inp["shape"]).astype(inp["dtype"]) for _ in range(SAMPLES)]
rows, e2e = [], []
for k in CUTS:
    files = {}  # (kind, precision) -> (portable ONNX, artifact)
    for kind in ("head", "tail"):
        for prec in ("float32", "int8"):
            a = B.find(kind, k, True, ONNX, prec)
            files[(kind, prec)] = B.path / a.file
        f16 = WORK / "float16" / str(k) / f"{kind}_tl.float16.onnx"
        f16.parent.mkdir(parents=True, exist_ok=True)
        why = None if f16.is_file() else to_float16(files[(kind, "float32")], f16)
        if why:
            print(f"gpu-check: no float16 {kind} of cut {k}: {why}", file=sys.stderr)
        else:
            files[(kind, "float16")] = f16
    head_name = B.find("head", k, True).input["name"]
    tail_name = B.find("tail", k, True).input["name"]
    with cpu.runner(files[("head", "float32")]) as h, cpu.runner(files[("tail", "float32")]) as t:
        payloads = run_all(h, head_name, xs)
        ref = {"head": payloads, "tail": run_all(t, tail_name, payloads)}
    with cpu.runner(files[("head", "int8")]) as h, cpu.runner(files[("tail", "int8")]) as t:
        ref_int8 = {"head": run_all(h, head_name, xs), "tail": run_all(t, tail_name, payloads)}
    for label, be, eng in engines():
        outs = {}
        for (kind, prec), onnx_path in sorted(files.items(), key=lambda kv: (kv[0][0], PRECS.index(kv[0][1]))):
            path = onnx_path
            if eng != ONNX and prec != "float16":
                path = B.runnable(kind, k, True, eng, prec)  # the engine `tlcut compile --backend` built
            name = head_name if kind == "head" else tail_name
            feeds = xs if kind == "head" else payloads
            row = {"engine": label, "cut": k, "half": kind, "precision": prec, "file": str(path)}
            try:
                t0 = time.perf_counter()
                with be.runner(path) as r:
                    row["load_s"] = time.perf_counter() - t0  # includes an engine build where one was needed
                    got = run_all(r, name, feeds)
                    row["timing"] = timing(r, name, feeds[0])
            except Exception as e:  # one engine failing must not hide the others' results
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                rows.append(row)
                continue
            outs[(kind, prec)] = got
            cmp = [compare(a, b, *TOL.get(prec, (0, 0))) for a, b in zip(ref[kind], got)]
            row["vs_cpu_float32"] = {"pass": all(c["pass"] for c in cmp) if prec in TOL else None,
                                     "tolerance": TOL.get(prec),
                                     "max_abs": max(c["max_abs"] for c in cmp),
                                     "max_rel": max(c["max_rel"] for c in cmp),
                                     "mean_abs": float(np.mean([c["mean_abs"] for c in cmp])),
                                     "max_abs_over_max_ref": max(c["max_abs_over_max_ref"] for c in cmp),
                                     "failing_elements": sum(c["failing"] for c in cmp)}
            if prec == "int8":
                c8 = [compare(a, b, 0, 0) for a, b in zip(ref_int8[kind], got)]
                row["vs_cpu_int8_qdq"] = {"max_abs": max(c["max_abs"] for c in c8),
                                          "mean_abs": float(np.mean([c["mean_abs"] for c in c8])),
                                          "max_abs_over_max_ref": max(c["max_abs_over_max_ref"] for c in c8)}
            rows.append(row)
        for prec in ("float32", "float16", "int8"):  # head then tail on this engine, against float32 on the CPU
            if ("head", prec) in outs and ("tail", prec) in outs:
                with be.runner(files[("tail", prec)] if eng == ONNX or prec == "float16"
                               else B.runnable("tail", k, True, eng, prec)) as t:
                    ys = run_all(t, tail_name, outs[("head", prec)])
                agree = float(np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(ref["tail"], ys)]))
                e2e.append({"engine": label, "cut": k, "precision": prec, "top1_agreement": agree, "n": len(ys),
                            "max_abs_over_max_ref": max(compare(a, b, 0, 0)["max_abs_over_max_ref"]
                                                        for a, b in zip(ref["tail"], ys))})


def machine():
    m = {"host": platform.node(), "python": platform.python_version()}
    try:
        m["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        m["gpu"] = None
    for mod in ("tensorrt", "onnxruntime"):
        try:
            m[mod] = __import__(mod).__version__
        except ImportError:
            m[mod] = None
    if Path("/etc/nv_tegra_release").is_file():
        m["l4t"] = Path("/etc/nv_tegra_release").read_text().splitlines()[0]
    return m


checks = [r["vs_cpu_float32"]["pass"] for r in rows if "vs_cpu_float32" in r and r["vs_cpu_float32"]["pass"] is not None]
errors = [r for r in rows if "error" in r]
trtexec_log = env.get("TRTEXEC_LOG") or ""
result = {
    "format": "tlcut-gpu-check", "mode": "cpu-selftest (NOT a GPU measurement)" if SELFTEST else "gpu",
    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
    "model": B.name, "model_sha256": B.model_sha256, "cuts": CUTS, "tl": True, "samples": SAMPLES,
    "iterations": ITER, "warmup": WARM, "tolerances": {p: {"abs": a, "rel": r} for p, (a, r) in TOL.items()},
    "engines": [e[0] for e in engines()], "halves": rows, "head_then_tail": e2e,
    "trtexec": Path(trtexec_log).read_text()[-20000:] if trtexec_log and Path(trtexec_log).is_file() else None,
    "pass": bool(checks) and all(checks) and not errors,
}
out = Path(env["RESULTS"])
Path(str(out) + ".json").write_text(json.dumps(result, indent=1) + "\n")

lines = [f"# GPU check: {B.name}, cuts {', '.join(map(str, CUTS))} with the TL", "",
         f"Mode: **{result['mode']}**. Machine: {json.dumps(result['machine'])}.", "",
         "Each half against ONNX Runtime float32 on the CPU: an element fails only if it exceeds both tolerances "
         "(float32 1e-4/1e-4, float16 1e-2/1e-2); int8 is reported, not judged. Times in ms "
         f"(median / p90 / p99 of {ITER} runs after {WARM}).", "",
         "| engine | cut | half | precision | check | max abs | max rel | with copies | without copies |",
         "|---|---:|---|---|---|---:|---:|---|---|"]
for r in rows:
    if "error" in r:
        lines.append(f"| {r['engine']} | {r['cut']} | {r['half']} | {r['precision']} | ERROR: {r['error']} | | | | |")
        continue
    v, t = r["vs_cpu_float32"], r["timing"]
    fmt = lambda s: f"{s['median']:.3f} / {s['p90']:.3f} / {s['p99']:.3f}" if s else "n/a"  # noqa: E731
    check = "report" if v["pass"] is None else ("pass" if v["pass"] else f"FAIL ({v['failing_elements']} elements)")
    lines.append(f"| {r['engine']} | {r['cut']} | {r['half']} | {r['precision']} | {check} | {v['max_abs']:.3g} | "
                 f"{v['max_rel']:.3g} | {fmt(t['with_copies_ms'])} | {fmt(t.get('without_copies_ms'))} |")
lines += ["", "Head then tail on the engine against float32 on the CPU (top-1 agreement over "
          f"{SAMPLES} random inputs; the model has random weights):", "",
          "| engine | cut | precision | top-1 agreement | max abs / max ref |", "|---|---:|---|---:|---:|"]
lines += [f"| {e['engine']} | {e['cut']} | {e['precision']} | {e['top1_agreement']:.3f} | {e['max_abs_over_max_ref']:.3g} |"
          for e in e2e]
if result["trtexec"]:
    lines += ["", "build_engine.sh (trtexec) log, last lines:", "", "```", *result["trtexec"].splitlines()[-40:], "```"]
lines += ["", f"Overall: {'PASS' if result['pass'] else 'FAIL'}", ""]
Path(str(out) + ".md").write_text("\n".join(lines))
print(f"gpu-check: wrote {Path(str(out) + '.json')} and {Path(str(out) + '.md')}: "
      f"{'PASS' if result['pass'] else 'FAIL'}", file=sys.stderr)
sys.exit(0 if result["pass"] else 1)
PYCHECK
