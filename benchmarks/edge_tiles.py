"""Tiles at the edge on the testbed: one edge against two and three nodes sharing the early layers.

    python benchmarks/edge_tiles.py [--bundle B] [--requests 30]

The device sends the camera's image as a JPEG (tlcut's choice for DenseNet169 on this link in
`tlcut demo`) to an edge under a CPU quota. With tiles, the edge (the coordinator) runs one band of
the segment input -> cut B itself and sends the others to edge nodes in its namespace, each under
the same quota, then runs the tail after cut B. For each candidate B and node count: the planner's
prediction (`tlcut plan --tiles`) against the median measured through `tlcut run`, and the speedup
over one edge, measured and predicted. Runs as root (the testbed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CANDIDATES = ["pool1", "pool2_pool", "conv3_block6_concat", "conv3_block12_concat", "pool3_pool"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="DenseNet169")
    ap.add_argument("--bundle", help="reuse this bundle (else exported into --work)")
    ap.add_argument("--work", default="/tmp/tlcut-edge-tiles")
    ap.add_argument("--cuts", default=",".join(CANDIDATES), help="candidate ends of the tiled segment (layers)")
    ap.add_argument("--nodes", default="2,3", help="node counts to tile over (the coordinator is one of them)")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quota", type=float, default=0.5, help="CPUs of the edge and of each node")
    ap.add_argument("--bandwidth", type=float, default=57.0)
    ap.add_argument("--latency", type=float, default=28.0)
    ap.add_argument("--out", default=str(HERE / "results" / "edge-tiles"))
    ap.add_argument("--report", metavar="JSON", help="only re-write the report of an earlier run's summary.json")
    a = ap.parse_args()
    if a.report:
        r = json.loads(Path(a.report).read_text())
        (Path(a.report).parent / "summary.md").write_text(report(r) + "\n")
        print(report(r))
        return 0

    from tlcut.bundle import Bundle, write_json_atomic
    from tlcut.lab import testbed as tbm
    from tlcut.lab.harness import Harness
    from tlcut.placement import EDGE, Placement
    from tlcut.runtime.run import default_images
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.tiles import write_tiles

    why = tbm.available()
    if why:
        print(f"edge_tiles: {why}", file=sys.stderr)
        return 2
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.bundle:
        b = Bundle.open(a.bundle)
    else:
        from tlcut.toolchain.export import export

        b = export(a.model, work / "bundle", progress=print) if not (work / "bundle").exists() else Bundle.open(work / "bundle")
    nodes = [int(n) for n in a.nodes.split(",")]
    cuts = [b.cut(c) for c in a.cuts.split(",")]
    compile_cuts(b, cuts, tl="off")
    tiles = {}
    for c in cuts:
        for n in nodes:
            d = work / f"tiles-{c.index}-{n}"
            if not (d / "tiles.json").exists():
                write_tiles(b, "input", str(c.index), [1.0] * n, d, force=True)
            tiles[(c.index, n)] = {**json.loads((d / "tiles.json").read_text()), "_path": str(d)}
    images = default_images(b)
    cfg = tbm.Config(bandwidth_mbps=a.bandwidth, latency_ms=a.latency, device_quota=0.2, edge_quota=a.quota,
                     nodes=max(nodes) - 1, node_quota=a.quota)
    with tbm.Testbed(cfg, log=print) as tb, Harness(tb, b.path, requests=a.requests, warmup=a.warmup,
                                                    images=images) as h:
        s = tb.state
        for role in ("device", "edge"):
            f = work / f"profile-{role}.json"
            if not f.exists():
                h.bench(role, f, 20)
        dev, edge = (planmod.load_profile(work / f"profile-{r}.json", r) for r in ("device", "edge"))
        net = planmod.Network(up_mbps=a.bandwidth, rtt_ms=a.latency, down_mbps=10 * a.bandwidth,
                              source=f"testbed ({s.delay_method})")
        plan = planmod.plan(dev, edge, net, tiles=list(tiles.values()))
        write_json_atomic(out / "plan.json", {**plan.to_json(), "ranking": [c.to_json() for c in plan.ranking
                                                                             if c.placement.where != "split"][:40]})
        jpeg = [c for c in plan.ranking if c.placement.where == "edge" and c.placement.encoding == "jpeg"]
        one = next(c for c in jpeg if c.tiles is None)
        q = one.placement.quality
        runs = [("one edge", one, None)]
        for (ci, n), t in tiles.items():
            c = next(x for x in jpeg if x.tiles and x.tiles["folder"] == t["_path"] and x.placement.quality == q)
            runs.append((f"{n} nodes, tiles to cut {ci} ({b.cuts[ci].layer})", c, t))
        rows = []
        for label, c, t in runs:
            print(f"[edge_tiles] {label}: {c.label}", flush=True)
            serve = ["--cut", "input"]
            try:
                if t is not None:
                    n = len(t["bands"])
                    for k in range(1, n):
                        h.serve("--cut", "input", "--tiles", t["_path"], "--band", k, role=f"node{k - 1}",
                                bind=tb.node_endpoint(k - 1), log=work / f"node{k - 1}.log", wait=False)
                    workers = ",".join(["local", *(tb.node_endpoint(k - 1) for k in range(1, n))])
                    serve += ["--tiles", t["_path"], "--workers", workers, "--worker-timeout", "60"]
                h.serve(*serve, log=work / "edge.log")
                sm = h.run(Placement(EDGE, encoding="jpeg", quality=q), work / f"run-{len(rows)}.json")["summary"]
            finally:
                h.stop()
            rows.append({"setup": label, "placement": c.label, "nodes": len(t["bands"]) if t else 1,
                         "to_cut": t["to"]["cut"] if t else None, "predicted_ms": c.total_ms,
                         "predicted_edge_ms": c.components_ms["edge"], "measured_ms": sm["total_ms"]["median"],
                         "measured_min_ms": sm["total_ms"]["min"], "measured_p90_ms": sm["total_ms"]["p90"],
                         "measured_edge_ms": sm["edge_ms"]["median"],
                         "error_pct": 100 * (sm["total_ms"]["median"] - c.total_ms) / c.total_ms,
                         "halo_work": sum(x["work_fraction"] for x in t["bands"]) if t else 1.0,
                         "tiles": (c.tiles or {}).get("predicted_ms")})
        described = tb.describe()
    base = rows[0]
    for r in rows:
        r["speedup_measured"] = base["measured_ms"] / r["measured_ms"]
        r["speedup_predicted"] = base["predicted_ms"] / r["predicted_ms"]
        r["edge_speedup_measured"] = base["measured_edge_ms"] / r["measured_edge_ms"]
        r["edge_speedup_predicted"] = base["predicted_edge_ms"] / r["predicted_edge_ms"]
    tiers = None
    tf = HERE / "results" / "demo-DenseNet169-tiers3" / "summary.json"
    if tf.exists() and a.model == "DenseNet169":
        tiers = json.loads(tf.read_text())
    result = {"command": "python benchmarks/edge_tiles.py " + " ".join(sys.argv[1:]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": b.name,
              "testbed": described, "machine": dev["machine"], "requests": a.requests, "rows": rows,
              "images": images, "seconds": round(time.perf_counter() - t0, 1),
              "three_tiers_demo": tiers and {"file": str(tf.relative_to(HERE.parent)), "date": tiers["date"],
                                             "rows": tiers["rows"], "testbed": tiers["testbed"]["described"]}}
    write_json_atomic(out / "summary.json", result)
    (out / "summary.md").write_text(report(result) + "\n")
    print(report(result))
    return 0


def report(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Tiles at the edge: {r['model']} on the testbed", "",
             f"Command: `{r['command']}` (as root)  ",
             f"Date: {r['date']}; {m['platform']}, {m['processor']}; python {m['python']}, onnxruntime {m['onnxruntime']}, "
             f"numpy {m['numpy']}; one thread per process.  ",
             f"Emulation: {r['testbed']}. {r['requests']} timed requests per row (after warm-up), inputs: {r['images']}.",
             "",
             "The device sends the image as a JPEG. *one edge* runs the whole model; with tiles the edge runs band 0 "
             "of the segment input -> cut B itself and the other bands on the nodes (the same CPU quota each), then "
             "the tail after cut B. *halo work* is the bands' summed share of the segment's work (1 = no recomputation). "
             "Predicted: `tlcut plan --tiles` from the profiles benched as device and edge in this testbed; the "
             "nodes' links are loopback inside the edge's namespace and count nothing in the prediction.", "",
             "| setup | nodes | halo work | predicted edge (ms) | measured edge (ms) | edge speedup meas. / pred. | "
             "predicted total (ms) | measured median (ms) | min-p90 | error | speedup meas. / pred. |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['setup']} | {x['nodes']} | {x['halo_work']:.2f} | {x['predicted_edge_ms']:.1f} | "
                     f"{x['measured_edge_ms']:.1f} | {x['edge_speedup_measured']:.2f}x / {x['edge_speedup_predicted']:.2f}x | "
                     f"{x['predicted_ms']:.1f} | {x['measured_ms']:.1f} | {x['measured_min_ms']:.1f}-{x['measured_p90_ms']:.1f} | "
                     f"{x['error_pct']:+.1f}% | {x['speedup_measured']:.2f}x / {x['speedup_predicted']:.2f}x |")
    rows = r["rows"]
    errs = [x["error_pct"] for x in rows]
    best_p = min(rows, key=lambda x: x["predicted_ms"])
    best_m = min(rows, key=lambda x: x["measured_ms"])
    lines += ["", f"Prediction errors run from {min(errs):+.1f}% to {max(errs):+.1f}%, the one-edge row ({errs[0]:+.1f}%) "
                  "included: the error is common to every row, so the speedup columns, ratios to the one-edge row, "
                  "compare the tiles' effect with the prediction. It comes from the edge's profile: benched "
                  f"back to back under the quota, the one edge's time is predicted {rows[0]['predicted_edge_ms']:.1f} ms, "
                  f"while the served requests took {rows[0]['measured_edge_ms']:.1f} ms of edge time between "
                  "idle gaps; why the quota costs more back to back was not isolated.",
              f"The planner's pick among these: {best_p['setup']} ({best_p['predicted_ms']:.1f} ms predicted); the fastest "
              f"measured: {best_m['setup']} ({best_m['measured_ms']:.1f} ms). The edge and its nodes together use "
              f"{max(x['nodes'] for x in rows)} x the quota, with the 0.2-CPU device, on this 2-core machine; the "
              "halo work column is why later cuts pay less: their bands recompute most of the map."]
    t = r.get("three_tiers_demo")
    if t:
        lines += ["", f"Beside it, from `tlcut demo --tiers 3` ({t['file']}, {t['date']}, a separate run on the same uplink "
                      f"and the same 0.5-CPU edge quota: {t['testbed']}):", "",
                  "| placement | what runs where | predicted (ms) | measured median (ms) |", "|---|---|---:|---:|"]
        for x in t["rows"]:
            lines.append(f"| {x['placement']} | {x['choice']} | {x['predicted_ms']:.1f} | {x['measured_ms']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
