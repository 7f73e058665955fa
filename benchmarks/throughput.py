"""Frames per second with `tlcut run --inflight N` against one frame at a time, and against the plan.

    python benchmarks/throughput.py --bundle DIR --profiles DIR [--inflight 4] [--requests 40]

On the testbed as root (loopback emulation otherwise, stated in the results), with the profiles a
demo or `tlcut bench` made for this testbed: plan with `--objective throughput` on the testbed's
link, then run, on the same images, the placement best for throughput, the one best for latency,
ScissionLite's static choice and edge only with a JPEG input, each with one frame in flight and
with N. For each, predicted (plan: latency = the sum of the stages, frames/s = 1 / the slowest
stage, with frames pipelined) against measured. Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--profiles", required=True, help="folder with profile-device.json and profile-edge.json")
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--bandwidth", type=float, default=57.0)
    ap.add_argument("--latency", type=float, default=28.0)
    ap.add_argument("--device-quota", type=float, default=0.2)
    a = ap.parse_args()

    from tlcut.bundle import Bundle
    from tlcut.lab import testbed as tbm
    from tlcut.lab.harness import Harness, pick
    from tlcut.runtime.run import default_images
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.compile import compile_cuts

    b = Bundle.open(a.bundle)
    root = Path(tempfile.mkdtemp(prefix="tlcut-throughput-"))
    cfg = tbm.Config(bandwidth_mbps=a.bandwidth, latency_ms=a.latency, device_quota=a.device_quota, port=5933)
    emu = pick()[0](cfg, log=print)
    prof = Path(a.profiles)
    dev, edg = (planmod.load_profile(prof / f"profile-{r}.json", r) for r in ("device", "edge"))
    net = planmod.Network(up_mbps=a.bandwidth, rtt_ms=a.latency, down_mbps=10 * a.bandwidth)
    tput = planmod.plan(dev, edg, net, objective="throughput")
    lat = planmod.plan(dev, edg, net)
    jpeg = next((c for c in tput.ranking if c.placement.encoding == "jpeg" and c.tiles is None), None)
    chosen = {"best for throughput": tput.best, "best for latency": lat.best, "ScissionLite (TL, float32)": tput.best_tl,
              "edge only, JPEG": jpeg}
    # each with its figures from the throughput plan
    chosen = {k: tput.ranking[tput.ranking.index(v)] for k, v in chosen.items() if v is not None}
    cuts = sorted({c.placement.cut for c in chosen.values() if c.placement.cut is not None})
    compile_cuts(b, [b.cuts[i] for i in cuts], tl="both")
    images = default_images(b)
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": b.name,
               "command": f"python benchmarks/throughput.py --bundle BUNDLE --profiles DIR --inflight {a.inflight} "
                          f"--requests {a.requests}",
               "inflight": a.inflight, "requests": a.requests, "images": images or "random tensors",
               "rows": []}
    with emu as tb, Harness(tb, b.path, requests=a.requests, images=images) as h:
        results["emulation"] = tb.describe()
        with h.serve_cuts(cuts, log=root / "edge.log"):
            for label, c in chosen.items():
                pl = c.placement
                for n in (1, a.inflight):
                    print(f"[throughput] {label}: {pl.label}, {n} in flight", flush=True)
                    s = h.run(pl, root / f"{pl.slug}-{n}.json", inflight=n)["summary"]
                    results["rows"].append({
                        "role": label, "placement": c.label, "inflight": n, "bottleneck": c.bottleneck,
                        "stages_ms": c.stages_ms, "predicted_fps": c.throughput_fps if n > 1 else 1e3 / c.total_ms,
                        "measured_fps": s["throughput_rps"], "predicted_latency_ms": c.total_ms,
                        "measured_latency_ms": s["total_ms"]["median"], "measured_latency_p90_ms": s["total_ms"]["p90"]})
    for row in results["rows"]:
        row["fps_error_pct"] = 100 * (row["measured_fps"] - row["predicted_fps"]) / row["predicted_fps"]
    out = HERE / "results"
    (out / "throughput.json").write_text(json.dumps(results, indent=1) + "\n")
    md = to_markdown(results)
    (out / "throughput.md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict) -> str:
    md = [f"# Throughput: {r['model']}, one frame in flight against {r['inflight']}", "",
          f"Command: `{r['command']}`  ", f"Date: {r['date']}  ", f"Emulation: {r['emulation']}. Inputs: {r['images']}. "
          f"{r['requests']} timed requests per row.", "",
          "Predicted frames/s: one in flight, 1 / the predicted latency; N in flight, 1 / the slowest stage "
          "(device, uplink, edge, reply), the plan's `--objective throughput`.", "",
          "| role | placement | in flight | bottleneck (predicted) | predicted frames/s | measured frames/s | error | "
          "predicted latency ms | measured median ms | measured p90 ms |",
          "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        md.append(f"| {x['role']} | {x['placement']} | {x['inflight']} | {x['bottleneck']} "
                  f"({x['stages_ms'][x['bottleneck']]:.1f} ms) | {x['predicted_fps']:.2f} | {x['measured_fps']:.2f} | "
                  f"{x['fps_error_pct']:+.1f}% | {x['predicted_latency_ms']:.1f} | {x['measured_latency_ms']:.1f} | "
                  f"{x['measured_latency_p90_ms']:.1f} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
