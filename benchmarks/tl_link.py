"""The trained transfer layers end to end on a slow link: the pool TL against a learned one, measured
against predicted.

Takes the bundles benchmarks/transfer_layers.py kept (`--keep DIR`): at one cut (by default the
earliest the run measured), the pool TL and a learned TL (`--learned KIND`, or from the run's
results JSON the learned TL with the fewest int8+zstd bytes among those within 1 pt of the
control). On the testbed (root; loopback otherwise, said in the results) with the uplink at
`--bandwidth` Mbit/s: each bundle is benched as the device and as the edge, planned for the link,
then each row (the pool TL sending float32, as the paper does, and int8+zstd; the learned TL with
int8+zstd and raw) is served and run on the same ELPV images, every side on ONNX Runtime float32.
Writes benchmarks/results/{name}.{json,md}.

    python benchmarks/tl_link.py --keep /tmp/tl/inspect --results benchmarks/results/transfer-layers.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from elpv_models import tl_folder, version

HERE = Path(__file__).resolve().parent
ROWS = (("pool", "raw"), ("pool", "int8+zstd"), ("learned", "int8+zstd"), ("learned", "raw"))


def best_learned(results: dict, cut: str) -> str:
    """The learned TL at ``cut`` with the fewest int8+zstd bytes within 1 pt of the control (the
    issue's bar); where none is, the one closest to the control."""
    rows = [r for r in results["rows"] if r["cut"] == cut and r["tl"] != "pool" and r["encoding"] == "int8+zstd"]
    if not rows:
        raise SystemExit(f"tl_link: the results have no learned TL with int8+zstd at {cut}; give --learned KIND")
    near = [r for r in rows if r["vs_control"]["diff_pts"] >= -1.0]
    return (min(near, key=lambda r: r["bytes"]) if near else max(rows, key=lambda r: r["vs_control"]["diff_pts"]))["tl"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", required=True, help="the folder benchmarks/transfer_layers.py --keep wrote")
    ap.add_argument("--results", help="that run's results JSON, to take the cut and the best learned TL from")
    ap.add_argument("--cut", help="the Keras layer cut after (default: the run's first cut)")
    ap.add_argument("--learned", help="the learned TL kind, e.g. pool+bottleneck:16 (default: the best in --results)")
    ap.add_argument("--bandwidth", type=float, default=10.0, help="uplink Mbit/s (default 10)")
    ap.add_argument("--latency", type=float, default=28.0, help="one-way latency ms (default 28)")
    ap.add_argument("--device-quota", type=float, default=0.2, help="the device's share of a core (default 0.2)")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--emulation", default="auto", choices=("auto", "testbed", "loopback"))
    ap.add_argument("--name", default="tl-link")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    results = json.loads(Path(a.results).read_text()) if a.results else None
    cut = a.cut or (results["cuts"][0]["cut"] if results else None)
    if not cut:
        ap.error("give --cut LAYER or --results JSON")
    learned = a.learned or (best_learned(results, cut) if results else None)
    if not learned:
        ap.error("give --learned KIND or --results JSON")
    bundles = {"pool": Path(a.keep) / tl_folder(cut, "pool"), "learned": Path(a.keep) / tl_folder(cut, learned)}
    for k, p in bundles.items():
        if not (p / "manifest.json").is_file():
            ap.error(f"no kept {k} bundle at {p}: run benchmarks/transfer_layers.py --keep {a.keep} first")
    res = measure(a, cut, learned, bundles)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{a.name}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def measure(a, cut: str, learned: str, bundles: dict) -> dict:
    from tlcut.bundle import Bundle
    from tlcut.lab import testbed as tbm
    from tlcut.lab.harness import Harness, pick
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.placement import Placement

    Emu, why = pick(a.emulation)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    cfg = tbm.Config(bandwidth_mbps=a.bandwidth, latency_ms=a.latency, device_quota=a.device_quota)
    t0 = time.perf_counter()
    rows, described, machine = [], None, None
    with Emu(cfg, log=say) as tb:
        described = tb.describe()
        net = planmod.Network(up_mbps=a.bandwidth, rtt_ms=a.latency, down_mbps=10 * a.bandwidth,
                              source=f"{tb.kind} ({tb.state.delay_method})")
        for which, path in bundles.items():
            b = Bundle.open(path)
            c = b.cut(cut)
            compile_cuts(b, [c], tl="on")
            work = Path(a.out) / f"{a.name}-{which}"
            work.mkdir(parents=True, exist_ok=True)
            with Harness(tb, path, requests=a.requests, images="elpv") as h:
                for role in ("device", "edge"):
                    say(f"[tl-link] bench {which} TL as the {role}")
                    h.bench(role, work / f"profile-{role}.json", 20)
                dev = planmod.load_profile(work / "profile-device.json", "device")
                edg = planmod.load_profile(work / "profile-edge.json", "edge")
                machine = dev["machine"]
                plan = planmod.plan(dev, edg, net, planmod.Constraints(), bundle=b)
                h.serve_cuts([c.index], log=work / "edge.log", whole=False)
                for kind, enc in ROWS:
                    if kind != which:
                        continue
                    pl = Placement.resolve(b, cut, True, enc)
                    d = plan.best_of(lambda d: d.placement == pl and d.tiles is None)
                    if d is None:
                        raise SystemExit(f"tl_link: the plan has no deployment for {pl.label}")
                    say(f"[tl-link] run {which} TL ({pl.tl_kind}), {enc}")
                    rec = h.run(pl, work / f"run-{enc.replace('+', '-')}.json")
                    s = rec["summary"]
                    m = s["total_ms"]["median"]
                    rows.append({"tl": "pool" if which == "pool" else learned, "kind": which, "encoding": enc,
                                 "placement": d.label, "predicted_ms": d.total_ms, "measured_ms": m,
                                 "error_pct": 100 * (m - d.total_ms) / d.total_ms,
                                 "measured_p90_ms": s["total_ms"]["p90"], "predicted_bytes": d.upload_bytes,
                                 "measured_bytes": s.get("payload_bytes"),
                                 "predicted_components_ms": d.components_ms,
                                 "measured_components_ms": {k: s[f"{k}_ms"]["median"] for k in ("device", "transfer", "edge")},
                                 "requests": s["requests"]})
                    say(json.dumps({k: rows[-1][k] for k in ("tl", "encoding", "predicted_ms", "measured_ms")}))
    pool = next(r for r in rows if r["kind"] == "pool" and r["encoding"] == "raw")
    best = next(r for r in rows if r["kind"] == "learned" and r["encoding"] == "int8+zstd")
    return {"model": "InspectNet (trained on ELPV, benchmarks/transfer_layers.py)", "cut": cut, "learned": learned,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "emulation": described,
            "emulation_kind": Emu.__name__, "bandwidth_mbps": a.bandwidth, "latency_ms": a.latency,
            "device_quota_cpus": a.device_quota, "machine": machine, "versions": {m: version(m) for m in ("onnxruntime", "numpy", "zstandard")},
            "command": "python " + " ".join(sys.argv), "rows": rows,
            "learned_vs_pool_measured": pool["measured_ms"] / best["measured_ms"],
            "learned_vs_pool_predicted": pool["predicted_ms"] / best["predicted_ms"],
            "seconds": round(time.perf_counter() - t0, 1)}


def markdown(r: dict) -> str:
    lines = [f"# Transfer layers end to end: {r['cut']}, {r['bandwidth_mbps']:g} Mbit/s", "",
             f"{r['model']}; pool TL against the learned {r['learned']}. Emulation: {r['emulation']}. {r['date']}.",
             f"Command: `{r['command']}`", "",
             "| TL | wire | bytes (predicted / measured median) | predicted median (ms) | measured median (ms) | error | "
             "measured p90 (ms) | measured device / transfer / edge (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for x in r["rows"]:
        mc = x["measured_components_ms"]
        lines.append(f"| {x['tl']} | {x['encoding']} | {x['predicted_bytes']} / {x['measured_bytes']} | "
                     f"{x['predicted_ms']:.1f} | {x['measured_ms']:.1f} | {x['error_pct']:+.1f}% | "
                     f"{x['measured_p90_ms']:.1f} | {mc['device']:.1f} / {mc['transfer']:.1f} / {mc['edge']:.1f} |")
    lines += ["", f"Learned TL (int8+zstd) over the pool TL (float32, the paper's): "
                  f"{r['learned_vs_pool_measured']:.2f}x measured, {r['learned_vs_pool_predicted']:.2f}x predicted."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
