"""Horizontal tiles on real models: exactness, and each band's compute against the untiled segment.

For segments of DenseNet169, ResNet101 and EfficientNetB0 (random weights, 224x224), split into 2,
3 and 4 equal bands and into bands weighted 1,1,2: the stitched output against the untiled
segment (max abs diff), and on ONE core (ONNX Runtime, one intra-op and one inter-op thread) the
median time of the untiled segment and of each band. The sum over bands shows what the halo
recomputation costs; the slowest band is what bands on equal nodes in parallel would take (no
network); the predicted band time is the untiled time times the band's work share from the
graph (tiles.json's work_fraction), the planner's estimate. Writes
``benchmarks/results/tiles.json`` and ``tiles.md``.

    python benchmarks/tiles.py [--models DenseNet169,ResNet101,EfficientNetB0] [--bundles DIR] [--iterations 20]

``--bundles DIR`` reuses bundles DIR/<model>-224 exported before (`tlcut export NAME -o DIR/NAME-224`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tlcut.toolchain.bench import cpu_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
#: (model, from layer or None for the first cut, to layer): runs of spatially local layers.
SEGMENTS = [
    ("DenseNet169", None, "pool2_bn"),  # stem conv 7x7/2, padded max-pool 3x3/2, dense block 1 (6 concats)
    ("DenseNet169", "pool2_bn", "conv3_block6_concat"),  # transition (1x1 conv, avg-pool 2x2/2), 6 concats
    ("ResNet101", None, "conv2_block3_out"),  # stem, max-pool, 3 bottlenecks (adds)
    ("ResNet101", "conv2_block3_out", "conv3_block2_out"),  # strided bottleneck with projection, adds
    ("EfficientNetB0", None, "block1a_activation"),  # NHWC rescaling, transpose, stem 3x3/2 (pads 0/1), swish, depthwise
    ("EfficientNetB0", "block2a_expand_activation", "block2a_activation"),  # asymmetric Pad, depthwise 3x3/2
]
SPLITS = [[1, 1], [1, 1, 1], [1, 1, 1, 1], [1, 1, 2]]


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _round_robin(runs: dict, warmup: int, iterations: int) -> dict:
    """Median ms of each callable, timed in interleaved rounds."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in runs}
    for _ in range(iterations):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in ts.items()}


def _bundle(name: str, bundles: Path | None, work: Path):
    from tlcut.bundle import Bundle, manifest_path
    from tlcut.toolchain.export import export

    if bundles and manifest_path(bundles / f"{name}-224").is_file():
        return Bundle.open(bundles / f"{name}-224")
    return export(name, work / name, input_shape=(224, 224, 3), progress=lambda *_: None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="DenseNet169,ResNet101,EfficientNetB0")
    ap.add_argument("--bundles", help="folder of bundles <model>-224 to reuse")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    from tlcut.toolchain import tiles

    models = a.models.split(",")
    work = Path(tempfile.mkdtemp(prefix="tlcut-tiles-"))
    rows = []
    try:
        for name in models:
            b = _bundle(name, Path(a.bundles) if a.bundles else None, work)
            full = onnx.load(str(b.model_path))
            for model, src, dst in SEGMENTS:
                if model != name:
                    continue
                ca = b.cuts[0] if src is None else b.cut(src)
                cz = b.cut(dst)
                seg_model = tiles.extract(full, ca.tensor, cz.tensor)
                seg = tiles.Segment(seg_model, ca.layout)
                rng = np.random.default_rng(0)
                x = rng.standard_normal(seg.shapes[seg.input]).astype(np.float32)
                x2 = rng.standard_normal(seg.shapes[seg.input]).astype(np.float32)
                s = _session(seg_model)
                y = s.run(None, {seg.input: x})[0]
                moves = float(np.abs(y - s.run(None, {seg.input: x2})[0]).max())
                hi, ho = seg.h[seg.input], seg.h[seg.output]
                # every session first, then timed round-robin, so load from elsewhere hits all alike
                runs = {"untiled": (lambda s=s: s.run(None, {seg.input: x}))}
                splits = []
                for k, weights in enumerate(SPLITS):
                    heights = tiles.plan_bands(seg.height(seg.output), weights)
                    bands = tiles.split(seg, heights)
                    desc = tiles.describe(seg, bands, weights)
                    parts = []
                    for j, band in enumerate(bands):
                        bs = _session(tiles.band_model(seg, band))
                        xb = np.ascontiguousarray(np.take(x, range(*band.in_rows), axis=hi))
                        parts.append(bs.run(None, {seg.input: xb})[0])
                        runs[(k, j)] = (lambda bs=bs, xb=xb: bs.run(None, {seg.input: xb}))
                    runs[(k, "stitch")] = (lambda parts=parts: np.concatenate(parts, axis=ho))
                    diff = float(np.abs(np.concatenate(parts, axis=ho) - y).max())
                    splits.append((weights, heights, desc, diff))
                ms = _round_robin(runs, a.warmup, a.iterations)
                seg_ms = ms["untiled"]
                row = {"model": name, "from": {"cut": ca.index, "layer": ca.layer}, "to": {"cut": cz.index, "layer": cz.layer},
                       "input": list(seg.shapes[seg.input]), "output": list(seg.shapes[seg.output]),
                       "nodes": len(seg.nodes), "ops": sorted({n.op_type for n in seg.nodes}),
                       "output_moves_with_input": moves, "untiled_ms": seg_ms, "splits": []}
                for k, (weights, heights, desc, diff) in enumerate(splits):
                    per = [{"out_rows": d["out_rows"], "in_rows": d["in_rows"], "halo": [d["halo_top"], d["halo_bottom"]],
                            "in_bytes": d["in_bytes"], "work_fraction": d["work_fraction"], "ms": ms[(k, j)],
                            "predicted_ms": seg_ms * d["work_fraction"]} for j, d in enumerate(desc)]
                    row["splits"].append({
                        "weights": weights, "heights": heights, "max_abs_diff": diff, "bands": per,
                        "sum_band_ms": sum(p["ms"] for p in per), "max_band_ms": max(p["ms"] for p in per),
                        "stitch_ms": ms[(k, "stitch")], "input_bytes_sent": sum(p["in_bytes"] for p in per)})
                    print(f"{name} {ca.layer}->{cz.layer} {weights}: diff {diff:.1e}, untiled {seg_ms:.1f} ms, "
                          f"bands {[round(p['ms'], 1) for p in per]} ms", flush=True)
                del runs, s
                rows.append(row)
            if not a.bundles:
                shutil.rmtree(work / name, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(rows, Path(a.out), a)
    return 0


def write(rows, out: Path, a) -> None:
    import tensorflow as tf
    import tf2onnx

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(), "threads_used": 1},
           "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
                        "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
           "iterations": a.iterations, "warmup": a.warmup, "segments": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiles.json").write_text(json.dumps(res, indent=1) + "\n")
    m = res["machine"]
    md = ["# Horizontal tiles: exactness and per-band compute", "",
          f"Command: `python benchmarks/tiles.py --iterations {a.iterations}`  ",
          f"Date: {res['date']}; {m['platform']}; {m['cpu']}, {m['cores']} cores, timed on 1 thread  ",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()), "",
          "Random weights, 224x224 inputs. Each band is its own ONNX file (`toolchain/tiles.py`); the stitched band "
          "outputs are compared with the untiled segment on one random input (the output moves with the input: "
          "the second column). Times are medians of "
          f"{a.iterations} runs after {a.warmup} warm-up runs, timed in interleaved rounds (untiled, every band, "
          "the stitch), ONNX Runtime CPU, one intra-op thread; on a shared "
          "2-core machine they carry a few percent of noise. *sum* is the total compute of all bands (the halo's "
          "recomputation makes it more than the untiled time); *max* is the slowest band, what the bands on equal "
          "nodes would take in parallel, with no network; *pred max* is the untiled time times the slowest band's "
          "work share derived from the graph (what the planner predicts).", "",
          "| segment | moves | bands (weights) | out rows | max abs diff | untiled ms | band ms | sum ms | max ms | pred max ms | stitch ms | untiled / max | input sent / input |",
          "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        seg = f"{r['model']} {r['from']['layer']} -> {r['to']['layer']} ({'x'.join(map(str, r['input'][1:]))} -> {'x'.join(map(str, r['output'][1:]))})"
        in_bytes = int(np.prod(r["input"])) * 4
        for s in r["splits"]:
            pred = max(b["predicted_ms"] for b in s["bands"])
            md.append(f"| {seg} | {r['output_moves_with_input']:.2g} | {len(s['weights'])} ({','.join(map(str, s['weights']))}) | "
                      f"{', '.join(str(h) for h in s['heights'])} | {s['max_abs_diff']:.1e} | {r['untiled_ms']:.1f} | "
                      f"{' / '.join(format(b['ms'], '.1f') for b in s['bands'])} | {s['sum_band_ms']:.1f} | {s['max_band_ms']:.1f} | "
                      f"{pred:.1f} | {s['stitch_ms']:.2f} | {r['untiled_ms'] / s['max_band_ms']:.2f} | {s['input_bytes_sent'] / in_bytes:.2f} |")
            seg = ""
    (out / "tiles.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'tiles.json'} and {out / 'tiles.md'}")


if __name__ == "__main__":
    raise SystemExit(main())
