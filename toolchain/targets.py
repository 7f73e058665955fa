"""`tlcut compile --target jetson`: a folder with everything one device needs, and nothing it does not.

A TensorRT engine runs only on the GPU, TensorRT version and platform it was built on, and there
is no cross-building, so the folder carries the device's half as portable ONNX (every precision
the bundle has for the cut, plus float16 converted here) and a ``build_engine.sh`` that builds the
engines on the Jetson with ``trtexec``, choosing TensorRT 10's or 11's flags. It also carries the
payload contract (what crosses the link and what the edge must serve), the edge's public key and
endpoint when given, and a README for the person at the device.

The folder is also a minimal tlcut bundle (docs/bundle.md, format 2: the source's model, inputs,
outputs and cuts, artifact rows for the heads it holds), so `tlcut run DIR --cut K --edge ...`
uses it as it is. It keeps ``model.onnx`` because a bundle must have it and because a device
falls back to the whole model while the edge is away (``--fallback on``, the default). It is
written in a staged sibling folder and renamed into place.

What ran here (a CPU machine): the folder, its manifest and contract, ``tlcut run`` on it against
a local edge, and ``build_engine.sh`` in ``DRY_RUN=1`` mode (its trtexec command lines for
TensorRT 10 and 11). ``build_engine.sh`` has never run trtexec (docs/gpu.md).
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
from pathlib import Path

from tlcut.errors import TlcutError

TARGETS = ("jetson", "triton")  # triton: toolchain/triton_repo.py
CONTRACT = "payload.json"
EDGE_KEY = "edge.key"
BUILD_SCRIPT = "build_engine.sh"
README = "README.md"
#: Order in which heads are listed and built (the device's precisions).
HEAD_PRECISIONS = ("float32", "float16", "int8")
_ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


def to_float16(src, dst) -> str | None:
    """Write ``src`` (float32 ONNX) with float16 compute and float32 input/output to ``dst``, for
    TensorRT 11's strongly typed builds (TensorRT 10 takes it with --fp16). Returns None, or why
    it could not (then nothing is written)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        import onnx_graphsurgeon as gs
    except ImportError as e:
        return f"no float16 converter here ({e}); a float16 engine needs the float16 ONNX on TensorRT 11"
    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    graph = gs.import_onnx(half)
    graph.toposort()  # the converter appends its casts at the end; TensorRT's parser wants topological order
    half = gs.export_onnx(graph)
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as e:
        return f"the float16 conversion is not a valid ONNX graph ({str(e).splitlines()[0][:150]})"
    onnx.save(half, str(dst))
    return None


def _float16_agreement(f32, f16, input_meta) -> dict:
    """The float16 head against the float32 head on one random input, on ONNX Runtime's CPU."""
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).random(input_meta["shape"]).astype(input_meta["dtype"])
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {input_meta["name"]: x})[0]
            for p in (f32, f16)]
    return {"max_abs_diff": float(np.abs(outs[0] - outs[1]).max()), "max_abs": float(np.abs(outs[0]).max()),
            "finite": bool(np.isfinite(outs[1]).all())}


def payload_contract(bundle, cut, tl: bool, head_out: dict, endpoint: str | None, has_key: bool) -> dict:
    """What crosses the link at this cut and what the edge must serve: the device's half of the
    agreement, for the people running either side (docs/protocol.md is the wire format)."""
    from tlcut import encodings
    from tlcut.runtime import protocol as P

    names = encodings.names(encodings.CUT)
    # an entropy-coded payload weighs what the image makes it: no fixed size to promise
    per = {e: encodings.get(e).wire_bytes(head_out["shape"], head_out["dtype"]) for e in names
           if not encodings.get(e).measured}
    tl_flag = "on" if tl else "off"
    return {
        "format": "tlcut-payload-contract", "version": 1,
        "model": {"name": bundle.name, "sha256": bundle.model_sha256},
        "cut": cut.index, "cut_tensor": cut.tensor, "layer": cut.layer, "tl": tl,
        "payload": {"name": head_out["name"], "dtype": head_out["dtype"], "shape": head_out["shape"],
                    "layout": cut.layout, "bytes": per["raw"]},
        "wire": {"protocol": "tlcut", "version": P.VERSION, "header_bytes": P.HEADER.size,
                 "transport": "ZeroMQ DEALER (device) to ROUTER (edge); two frames: header, payload",
                 "cut_id": cut.index, "flags": P.FLAG_TL if tl else 0,
                 "encodings": list(names), "payload_bytes_by_encoding": per,
                 "payload_bytes_depend_on_content": [e for e in names if e not in per],
                 "spec": "docs/protocol.md"},
        "edge": {"serves": f"the tail of cut {cut.index}" + (" starting with the EdgeTL" if tl else ""),
                 "takes": {"dtype": head_out["dtype"], "shape": head_out["shape"]},
                 "returns": [{k: o[k] for k in ("name", "dtype", "shape")} for o in bundle.outputs],
                 "command": (f"tlcut serve BUNDLE --cut {cut.index} --tl {tl_flag} --key edge.key_secret "
                             f"--allow DEVICE_KEYS"),
                 "endpoint": endpoint, "curve": has_key, "public_key": EDGE_KEY if has_key else None},
    }


def write_jetson(bundle, cut_ref, out, *, tl: bool | None = None, endpoint: str | None = None,
                 edge_key: str | None = None, force: bool = False, progress=None) -> Path:
    """Write the Jetson folder for one cut of ``bundle`` at ``out``; return its path."""
    from tlcut.bundle import (FORMAT, MANIFEST, MODEL, ONNX, VERSION, Artifact, artifact_file, staged_dir,
                              write_json_atomic)
    from tlcut import __version__
    from tlcut.placement import tl_modes
    from tlcut.toolchain.compile import describe_io

    say = progress or (lambda *_: None)
    cut = bundle.cut(cut_ref)
    if tl is None:
        tl = cut.tl
    tl_modes(cut, "on" if tl else "off")  # the TL must apply where asked for
    if endpoint is not None and not _ENDPOINT.match(endpoint):
        raise TlcutError(f"--edge-endpoint '{endpoint}' is not tcp://HOST:PORT")
    key_bytes = None
    if edge_key:
        from tlcut.runtime.security import load_public

        load_public(edge_key)  # a CURVE public key file, or a one-line error
        key_bytes = Path(edge_key).read_bytes()
        if b"secret-key" in key_bytes:
            raise TlcutError(f"'{edge_key}' holds the edge's secret key; give its public NAME.key, never the secret")
    heads = {p: bundle.find("head", cut.index, tl, ONNX, p) for p in ("float32", "int8")}
    if heads["float32"] is None:
        raise TlcutError(f"bundle '{bundle.path}' has no head of cut {cut.index} with the TL {'on' if tl else 'off'}; "
                         f"run `tlcut compile {bundle.path} --cuts {cut.index} --tl {'on' if tl else 'off'}` first")
    model_row = bundle.find("model", None, False, ONNX, "float32")
    out = Path(out)
    notes: dict = {}
    with staged_dir(out, overwrite=force) as tmp:
        shutil.copy2(bundle.model_path, tmp / MODEL)
        rows = [model_row] if model_row else []
        for prec, a in heads.items():
            if a is None:
                notes[prec] = f"not compiled in the source bundle (`tlcut compile {bundle.path} --cuts {cut.index} " \
                              f"--tl {'on' if tl else 'off'} --precision int8 --calib elpv|FOLDER` adds it)"
                continue
            (tmp / a.file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.path / a.file, tmp / a.file)
            rows.append(Artifact("head", cut.index, tl, ONNX, prec, a.file, a.input, a.output, a.calibration))
        rel16 = artifact_file("head", cut.index, tl, precision="float16")
        say(f"[target] converting the float32 head of cut {cut.index} to float16")
        why = to_float16(tmp / heads["float32"].file, tmp / rel16)
        if why is None:
            agree = _float16_agreement(tmp / heads["float32"].file, tmp / rel16, heads["float32"].input)
            if not agree["finite"]:
                (tmp / rel16).unlink()
                why = "the float16 head gives non-finite outputs (values beyond float16's range)"
            else:
                rows.append(Artifact("head", cut.index, tl, ONNX, "float16", rel16, *describe_io(tmp / rel16)))
                notes["float16"] = (f"converted from the float32 head (float32 input/output kept); on a random input "
                                    f"it differs from float32 by at most {agree['max_abs_diff']:.3g} "
                                    f"(outputs up to {agree['max_abs']:.3g}), on ONNX Runtime's CPU")
        if why is not None:
            notes["float16"] = f"left out: {why}"
        head_rows = sorted((r for r in rows if r.kind == "head"), key=lambda r: HEAD_PRECISIONS.index(r.precision))
        contract = payload_contract(bundle, cut, tl, heads["float32"].output, endpoint, key_bytes is not None)
        write_json_atomic(tmp / CONTRACT, contract)
        if key_bytes is not None:
            (tmp / EDGE_KEY).write_bytes(key_bytes)
        script = tmp / BUILD_SCRIPT
        script.write_text(build_script(head_rows + [r for r in rows if r.kind == "model"]))
        script.chmod(0o755)
        (tmp / README).write_text(readme(bundle, cut, tl, head_rows, notes, endpoint, key_bytes is not None))
        m = bundle.manifest
        manifest = {
            "format": FORMAT, "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tlcut_version": __version__,
            "source": m["source"], "model": m["model"], "inputs": m["inputs"], "outputs": m["outputs"],
            "validation": m.get("validation"),
            # the device needs no activation table; the cut's own tensor is kept for reference
            "tensors": {cut.tensor: m["tensors"][cut.tensor]} if cut.tensor in m.get("tensors", {}) else {},
            "cuts": m["cuts"],  # all of them: a cut's index is its position in this list
            "artifacts": [r.to_json() for r in rows],
            "target": {"kind": "jetson", "cut": cut.index, "tl": tl, "from_bundle": str(Path(bundle.path).resolve()),
                       "contract": CONTRACT, "build_script": BUILD_SCRIPT, "notes": notes},
        }
        write_json_atomic(tmp / MANIFEST, manifest)  # last: a folder without it is not a bundle
    say(f"[target] wrote {out}: {', '.join(r.file for r in head_rows)}, {CONTRACT}, {BUILD_SCRIPT}, {README}")
    return out


def build_script(rows) -> str:
    """``build_engine.sh`` for these ONNX files (rows with ``precision`` and ``file``), in this order."""
    from tlcut.bundle import engine_dir
    from tlcut.runtime.backends import TENSORRT

    return _SCRIPT.replace("@ONNX_FILES@", "\n".join(f"  \"{r.precision} {r.file}\"" for r in rows)).replace(
        "@ENGINE_DIR@", engine_dir("", TENSORRT).as_posix())


def readme(bundle, cut, tl, head_rows, notes, endpoint, has_key) -> str:
    tl_flag = "on" if tl else "off"
    ep = endpoint or "tcp://EDGE_HOST:5555"
    curve = (f"--key keys/device1.key_secret --edge-key {EDGE_KEY}" if has_key
             else "--key keys/device1.key_secret --edge-key edge.key   # copy the edge's public key here first")
    qdq = " (QDQ: quantize/dequantize pairs TensorRT runs as int8)"
    files = "\n".join(f"| `{r.file}` | the device's half (head) of cut {cut.index}{' with the DeviceTL' if tl else ''}, "
                      f"{r.precision}{qdq if r.precision == 'int8' else ''} |"
                      for r in head_rows)
    note_lines = "\n".join(f"- {p}: {t}" for p, t in notes.items())
    precs = " | ".join(r.precision for r in head_rows)
    return f"""# {bundle.name}, cut {cut.index}{' + TL' if tl else ''}: the device's folder

Written by `tlcut compile BUNDLE --target jetson --cut {cut.index}`. This device runs the model up to
tensor `{cut.tensor}`{' and the DeviceTL (a 2x2 max-pool)' if tl else ''}, sends that tensor to the edge, and gets the
model's output back.

## What is here

| file | what |
|---|---|
| `{BUILD_SCRIPT}` | builds the TensorRT engines **on this device** with `trtexec` (below) |
{files}
| `model.onnx` | the whole model: a device runs it itself while the edge is away (`--fallback on`); `{BUILD_SCRIPT}` builds its engine too |
| `{CONTRACT}` | what crosses the link: tensor `{cut.tensor}` as the head's output, its dtype, shape and layout, the wire protocol version and encodings, and what the edge must serve |
| {'`' + EDGE_KEY + '`' if has_key else '(no edge.key)'} | {"the edge's CURVE public key: the device pins it" if has_key else "no edge key was given: copy the edge's public NAME.key here as edge.key"} |
| `manifest.json` | makes this folder a tlcut bundle, so `tlcut run` uses it as it is |

Precisions here: {precs}.
{note_lines}

## Why the engines are built here

A TensorRT engine runs only on the GPU, the TensorRT version and the platform it was built on: an
engine built on an x86 server does not run on a Jetson, and nothing builds Jetson engines
elsewhere. So this folder carries ONNX, and `{BUILD_SCRIPT}` builds from it here. Build again
after every JetPack or TensorRT upgrade; tlcut refuses (and rebuilds) an engine whose record
does not match the machine.

## Commands

```sh
bash {BUILD_SCRIPT}                  # minutes; engines in halves/{cut.index}/tensorrt/<key>/, the model's in tensorrt/<key>/
DRY_RUN=1 bash {BUILD_SCRIPT}        # only print the trtexec commands it would run
TIME=1 bash {BUILD_SCRIPT}           # build, then time each engine with trtexec (with and without copies)
```

It finds `trtexec` on the PATH or in `/usr/src/tensorrt/bin`, reads the TensorRT version from
`trtexec`, dpkg or `python3 -c 'import tensorrt'`, the GPU from the CUDA driver, and the JetPack
release from dpkg (`nvidia-jetpack`) or `/etc/nv_tegra_release`. TensorRT 10 (JetPack 6) gets
`--fp16` for the float16 head and `--int8` for the QDQ int8 head; TensorRT 11 (JetPack 7) builds
strongly typed networks and takes its precision from the ONNX, so it gets no precision flags. The
timing cache is kept per TensorRT version, GPU and JetPack (`halves/{cut.index}/tensorrt/timing-*.cache`).

Then run the device (install tlcut here first: `pip install tlcut`, or `pip install -e .` from its source):

```sh
tlcut keys -o keys device1            # once; give keys/device1.key to the edge's operator (its --allow folder)
tlcut run . --cut {cut.index} --tl {tl_flag} --edge {ep} {curve}
```

Add `--backend tensorrt` (and `--precision int8` for the int8 head) to run the engines built above
(it needs TensorRT's Python module, from JetPack, and `pip install cuda-python`); the float16 engine
is for `trtexec` and comparison until tlcut's `--precision` takes float16. Without it the
head runs on ONNX Runtime's CPU, or on the GPU with `--backend onnxrt --providers cuda` and the
onnxruntime-gpu wheel for this JetPack. The edge runs
`tlcut serve BUNDLE --cut {cut.index} --tl {tl_flag} --key edge.key_secret --allow DEVICE_KEYS` on the same bundle.

None of this has been run on a Jetson by tlcut's authors: see docs/gpu.md in tlcut's source.
"""


_SCRIPT = r'''#!/usr/bin/env bash
# Build this folder's TensorRT engines ON THIS DEVICE with trtexec (written by `tlcut compile --target jetson`).
#
# An engine runs only on the GPU, TensorRT version and platform it was built on, so it is built
# here, from the ONNX files in this folder. TensorRT 10 (JetPack 6) gets --fp16/--int8 where a
# head's precision needs them; TensorRT 11 (JetPack 7) builds strongly typed networks and takes
# the precision from the ONNX itself, so it gets none. Each engine gets a record (.engine.json)
# that tlcut checks before loading it.
#
#   DRY_RUN=1   print the commands, run nothing (TRT_VERSION, GPU_NAME, GPU_CC, JETPACK fake the machine)
#   TIME=1      after building, time each engine with trtexec, with and without host/device copies
#   WORKSPACE_MIB=1024  builder workspace;  TRTEXEC=/path/to/trtexec
set -euo pipefail
cd "$(dirname "$0")"

# precision and ONNX file of each engine to build: the heads, then the whole model (what the
# device runs while the edge is away, with --fallback on)
ONNX_FILES=(
@ONNX_FILES@
)
# each half's TensorRT folder, where tlcut's runtime also files the engines it builds
ENGINE_DIR=@ENGINE_DIR@
WORKSPACE_MIB=${WORKSPACE_MIB:-1024}
DRY_RUN=${DRY_RUN:-0}
TIME=${TIME:-0}

die() { echo "build_engine.sh: error: $*" >&2; exit 2; }

find_trtexec() {
  if [ -n "${TRTEXEC:-}" ]; then echo "$TRTEXEC"; return 0; fi
  if command -v trtexec >/dev/null 2>&1; then command -v trtexec; return 0; fi
  if [ -x /usr/src/tensorrt/bin/trtexec ]; then echo /usr/src/tensorrt/bin/trtexec; return 0; fi
  return 1
}

# TensorRT's version: trtexec's banner ("[TensorRT v100300]"), else dpkg, else the Python module.
trt_version() {
  if [ -n "${TRT_VERSION:-}" ]; then echo "$TRT_VERSION"; return 0; fi
  local n v
  if [ -n "$TRTEXEC_BIN" ]; then
    n=$( { "$TRTEXEC_BIN" --version 2>&1 || true; "$TRTEXEC_BIN" --help 2>&1 || true; } \
         | grep -o 'TensorRT v[0-9]\{4,6\}' | head -n 1 | tr -dc '0-9')
    if [ -n "$n" ]; then
      if [ "${#n}" -ge 6 ]; then echo "$((n / 10000)).$((n / 100 % 100)).$((n % 100))"
      else echo "$((n / 1000)).$((n / 100 % 10)).$((n % 100))"; fi
      return 0
    fi
  fi
  v=$(dpkg-query -W -f='${Version}\n' libnvinfer-bin tensorrt libnvinfer10 libnvinfer11 2>/dev/null \
      | grep -o '^[0-9]\+\.[0-9]\+\.[0-9]\+' | head -n 1 || true)
  if [ -n "$v" ]; then echo "$v"; return 0; fi
  v=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)
  if [ -n "$v" ]; then echo "$v"; return 0; fi
  return 1
}

# The GPU's name and compute capability, from the CUDA driver (the same source as tlcut's runtime).
gpu_info() {
  if [ -n "${GPU_NAME:-}" ] && [ -n "${GPU_CC:-}" ]; then echo "$GPU_NAME|$GPU_CC"; return 0; fi
  python3 - 2>/dev/null <<'PY' && return 0
import ctypes
cu = ctypes.CDLL("libcuda.so.1")
dev, major, minor, name = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(256)
assert cu.cuInit(0) == 0 and cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
assert cu.cuDeviceGetName(name, 256, dev) == 0
assert cu.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) == 0  # compute capability major
assert cu.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) == 0  # and minor
print(f"{name.value.decode()}|{major.value}.{minor.value}")
PY
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | sed 's/, */|/' \
      | grep '|' && return 0
  fi
  return 1
}

# JetPack (dpkg nvidia-jetpack), else L4T (/etc/nv_tegra_release), else none (not a Jetson).
jetpack_tag() {
  if [ -n "${JETPACK:-}" ]; then echo "jp$JETPACK"; return 0; fi
  local v
  v=$(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null | grep -o '^[0-9]\+\(\.[0-9]\+\)*' || true)
  if [ -n "$v" ]; then echo "jp$v"; return 0; fi
  if [ -r /etc/nv_tegra_release ]; then
    v=$(sed -n 's/^# R\([0-9]\+\) (release), REVISION: \([0-9.]\+\).*/\1.\2/p' /etc/nv_tegra_release | head -n 1)
    if [ -n "$v" ]; then echo "l4t$v"; return 0; fi
  fi
  echo "nojetpack"
}

slug() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//'; }

TRTEXEC_BIN=$(find_trtexec || true)
if [ -z "$TRTEXEC_BIN" ] && [ "$DRY_RUN" != 1 ]; then
  die "trtexec not found (not on PATH, not in /usr/src/tensorrt/bin): install TensorRT with JetPack (sudo apt install nvidia-jetpack), or set TRTEXEC=/path/to/trtexec"
fi
TRTEXEC_SHOWN=trtexec
[ "$DRY_RUN" = 1 ] || TRTEXEC_SHOWN=$TRTEXEC_BIN
V=$(trt_version) || die "cannot tell TensorRT's version (trtexec, dpkg and python3 -c 'import tensorrt' all failed); set TRT_VERSION=10.3.0 for example"
V=$(echo "$V" | awk -F. '{ printf "%s.%s.%s", $1, ($2 == "" ? 0 : $2), ($3 == "" ? 0 : $3) }')
MAJOR=${V%%.*}
GPU=$(gpu_info) || die "no NVIDIA GPU found through the CUDA driver (libcuda.so.1) or nvidia-smi; set GPU_NAME and GPU_CC for a dry run"
GPU_NAME_FOUND=${GPU%%|*}
CC=${GPU##*|}
JP=$(jetpack_tag)
GPU_SLUG=$(slug "$GPU_NAME_FOUND")
KEY="trt${V}_${GPU_SLUG:-gpu}_sm${CC//./}"
if [ "$MAJOR" -ge 11 ]; then FLAVOR=11
elif [ "$MAJOR" -eq 10 ]; then FLAVOR=10
else die "TensorRT $V found (JetPack 5 or older); this script knows TensorRT 10 (JetPack 6) and 11 (JetPack 7): upgrade JetPack, or run the ONNX heads with tlcut run . --backend onnxrt"
fi

echo "# TensorRT $V (flags of TensorRT $FLAVOR), GPU $GPU_NAME_FOUND (sm $CC), $JP: engines under <half>/$ENGINE_DIR/$KEY/"

# trtexec's build command for one head, one argument a line
build_cmd() {
  local prec=$1 onnx=$2 engine=$3 cache=$4
  printf '%s\n' "$TRTEXEC_SHOWN" "--onnx=$onnx" "--saveEngine=$engine" "--timingCacheFile=$cache" \
    "--memPoolSize=workspace:${WORKSPACE_MIB}M" "--skipInference"
  if [ "$FLAVOR" = 10 ]; then
    case "$prec" in
      float32) echo "--noTF32" ;;  # float32 means float32 (TensorRT 10 allows TF32 by default)
      float16) echo "--fp16" ;;
      int8) echo "--int8" ;;       # explicit quantization: the QDQ pairs carry the scales
    esac
  fi
}

# trtexec's timing commands: with copies, then without (TensorRT 11 leaves copies out unless asked)
time_cmds() {
  local engine=$1
  if [ "$FLAVOR" = 10 ]; then
    echo "$TRTEXEC_SHOWN --loadEngine=$engine --useCudaGraph"
    echo "$TRTEXEC_SHOWN --loadEngine=$engine --useCudaGraph --noDataTransfers"
  else
    echo "$TRTEXEC_SHOWN --loadEngine=$engine --includeDataTransfers"
    echo "$TRTEXEC_SHOWN --loadEngine=$engine"
  fi
}

built=0
for entry in "${ONNX_FILES[@]}"; do
  read -r prec onnx <<<"$entry"
  dir=$(dirname "$onnx")
  stem=$(basename "$onnx" .onnx)
  engine="$dir/$ENGINE_DIR/$KEY/$stem.engine"
  cache="$dir/$ENGINE_DIR/timing-${KEY}_${JP}.cache"
  mapfile -t cmd < <(build_cmd "$prec" "$onnx" "$engine" "$cache")
  if [ "$DRY_RUN" = 1 ]; then
    echo "${cmd[*]}"
    if [ "$TIME" = 1 ]; then time_cmds "$engine"; fi
    continue
  fi
  [ -f "$onnx" ] || die "$onnx is missing from this folder; write the folder again with tlcut compile --target jetson"
  mkdir -p "$dir/$ENGINE_DIR/$KEY"
  rm -f "$engine" "$engine.json"  # an engine without its record is never loaded by tlcut
  log="$dir/$ENGINE_DIR/$KEY/$stem.build.log"
  echo "building $engine ($prec) ..."
  if ! "${cmd[@]}" >"$log" 2>&1; then
    rm -f "$engine"
    tail -n 5 "$log" >&2 || true
    die "trtexec failed for $onnx; the whole log is $log"
  fi
  sha=$(sha256sum "$onnx" | cut -d ' ' -f 1)
  flags=$(printf '%s ' "${cmd[@]:6}")
  name_json=$(printf '%s' "$GPU_NAME_FOUND" | sed 's/\\/\\\\/g; s/"/\\"/g')
  printf '{"key": "%s", "tensorrt": "%s", "gpu": "%s", "compute_capability": "%s", "jetpack": "%s", "onnx": "../../%s.onnx", "onnx_sha256": "%s", "precision": "%s", "builder": "trtexec", "builder_flags": "%s"}\n' \
    "$KEY" "$V" "$name_json" "$CC" "$JP" "$stem" "$sha" "$prec" "${flags% }" >"$engine.json.tmp"
  mv "$engine.json.tmp" "$engine.json"
  built=$((built + 1))
  if [ "$TIME" = 1 ]; then
    while read -r t; do
      echo "== $t"
      $t 2>&1 | grep -E 'Latency:|GPU Compute Time:|H2D Latency:|D2H Latency:|Throughput:' || true
    done < <(time_cmds "$engine")
  fi
done
[ "$DRY_RUN" = 1 ] || echo "built $built engine(s); run them with: tlcut run . --cut K --backend tensorrt --precision P --edge tcp://HOST:PORT (see README.md)"
'''
