"""What adapting costs the device: CPU per request of `tlcut run --adapt` against a static device
on the same placement, with an edge on loopback.

    python benchmarks/adaptive_overhead.py --bundle DIR --plan PLAN [--rounds 3] [--requests 100]

The adaptive device keeps the plan's Pareto set loaded and starts on the plan's best; over
loopback it stays there, so both rows run the same placement and the difference is the policy,
its pings and its sockets; the policy's own share is timed apart. On the testbed's 0.2-CPU device
each millisecond of CPU is about five of wall time once the quota is spent. Rounds alternate static
and adaptive; the results file gives the median and the range over rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from adaptive import cpu_s  # (this folder's; the process's CPU, every thread)

HERE = Path(__file__).resolve().parent


def timed_policy(policy) -> list:
    """The policy's two methods timed in this thread's CPU (every call, into the list returned): what
    the policy itself costs, apart from the sockets and engines the adaptive device keeps."""
    spent = [0.0]
    for name in ("next_placement", "observe"):
        f = getattr(policy, name)

        def timed(*a, _f=f, **k):
            t = time.thread_time()
            try:
                return _f(*a, **k)
            finally:
                spent[0] += time.thread_time() - t
        setattr(policy, name, timed)
    return spent


def measure(dev, xs, n: int, policy_s: list | None = None) -> dict:
    for x in xs[:3]:
        dev.infer(x)
    if policy_s:
        policy_s[0] = 0.0
    c0, w0, device_ms, where = cpu_s(), time.perf_counter(), [], set()
    for i in range(n):
        _, rec = dev.infer(xs[i % len(xs)])
        device_ms.append(rec["device_ms"])
        where.add(rec.get("placement"))
    return {"cpu_ms": (cpu_s() - c0) / n * 1e3, "wall_ms": (time.perf_counter() - w0) / n * 1e3,
            "device_ms": float(np.median(device_ms)), "placements": sorted(p for p in where if p),
            "policy_ms": policy_s[0] / n * 1e3 if policy_s else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--plan", required=True, help="a plan of the bundle (tlcut plan); its Pareto set is kept loaded")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--port", type=int, default=5977)
    a = ap.parse_args()
    if a.rounds < 1 or a.requests < 1:
        ap.error("--rounds and --requests must be at least 1")

    from tlcut.bundle import Bundle
    from tlcut.deployment import Plan
    from tlcut.runtime import run as rt
    from tlcut.runtime.adapt import AdaptiveDevice, engine_kw
    from tlcut.runtime.policy import LinkEstimate, Policy
    from tlcut.runtime.client import EdgeUnavailable, wait_for_edge
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.bench import machine_info
    from tlcut.toolchain.compile import compile_cuts

    from tlcut.errors import TlcutError

    try:
        b = Bundle.open(a.bundle)
        plan = Plan.load(a.plan, b)
    except (TlcutError, OSError, ValueError) as e:
        print(f"adaptive_overhead.py: {e}", file=sys.stderr)
        return 2
    cands = planmod.pareto_front(plan.allowed)
    if plan.best not in cands:
        cands.append(plan.best)
    cut_ids = sorted({c.placement.cut for c in cands if c.placement.cut is not None})
    # the candidates' float32 halves, as benchmarks/adaptive.py compiles them (a demo's bundle holds
    # only the halves its rows ran); int8 ones must be there already (`tlcut compile --precision int8`)
    compile_cuts(b, [b.cuts[i] for i in cut_ids], tl="both")
    cuts = [str(i) for i in cut_ids]
    cuts += ["input"] if any(c.placement.cut is None and c.placement.offloads for c in cands) else []
    ep = f"tcp://127.0.0.1:{a.port}"
    edge = subprocess.Popen([sys.executable, "-m", "tlcut", "serve", str(b.path), "--tl", "both", "--bind", ep,
                             "--threads", "1", *sum((["--cut", c] for c in cuts), [])], stdout=subprocess.DEVNULL)
    kw = dict(timeout_s=10, retries=1, fallback=True, threads=1)
    xs = rt.inputs(b, rt.default_images(b), 8, seed=1)
    rounds = []
    try:
        try:  # the edge loading its halves; one that exits says why on stderr, above
            wait_for_edge(ep, 600, process=edge)
        except EdgeUnavailable as e:
            died = f"the edge (tlcut serve) exited with status {edge.returncode} before answering; its error is above"
            print(f"adaptive_overhead.py: {died if edge.poll() is not None else e}", file=sys.stderr)
            return 1
        for r in range(a.rounds):
            # the static row on the plan's best with its own device engine, as the adaptive one runs it
            with rt.Device(b, plan.best.placement, edge=ep, **{**kw, **engine_kw(plan.best)}) as d:
                static = measure(d, xs, a.requests)
            pol = Policy(cands, LinkEstimate(plan.network["up_mbps"], plan.network["rtt_ms"]), start=plan.best)
            with AdaptiveDevice(b, pol, edge=ep, **kw) as ad:
                ad.warm(xs[0])
                adaptive = measure(ad, xs, a.requests, timed_policy(pol))
            rounds.append({"static": static, "adaptive": adaptive})
            print(f"[overhead] round {r + 1}: CPU per request static {static['cpu_ms']:.3f} ms, "
                  f"adaptive {adaptive['cpu_ms']:.3f} ms, its policy {adaptive['policy_ms']:.3f} ms "
                  f"({', '.join(adaptive['placements'])})", flush=True)
    finally:
        edge.terminate()
        edge.wait()
    if any(r["adaptive"]["placements"] != [plan.best.label] for r in rounds):
        print("adaptive_overhead.py: the adaptive run left the plan's best, so the rows ran different "
              "placements and compare nothing; run it again on an idle machine", file=sys.stderr)
        return 1

    def summary(key, row):
        v = [r[row][key] for r in rounds]
        return {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v))}

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": f"python benchmarks/adaptive_overhead.py --bundle B --plan P --rounds {a.rounds} "
                      f"--requests {a.requests}",
           "machine": machine_info(1),
           "model": b.name, "placement": plan.best.label, "candidates": len(cands), "rounds": rounds,
           "summary": {row: {k: summary(k, row) for k in ("cpu_ms", "wall_ms", "device_ms")}
                       for row in ("static", "adaptive")}}
    s = res["summary"]
    extra = [r["adaptive"]["cpu_ms"] - r["static"]["cpu_ms"] for r in rounds]
    md = [f"# What adapting costs the device: {b.name}", "", f"Command: `{res['command']}`  ", f"Date: {res['date']}  ",
          f"Machine: {res['machine']['processor']}, Python {res['machine']['python']}, ONNX Runtime "
          f"{res['machine']['onnxruntime']}; edge on loopback (`tlcut serve`, one thread), device one thread, "
          "no CPU quota.", "",
          f"Both rows run {plan.best.label}; the adaptive one keeps {len(cands)} candidates (the plan's Pareto set) "
          f"loaded. {a.rounds} rounds of {a.requests} requests, alternated; median (min-max) over rounds.", "",
          "| row | CPU ms per request | wall ms per request | device ms (median) |", "|---|---|---|---|"]
    for row in ("static", "adaptive"):
        md.append(f"| {row} | " + " | ".join(f"{s[row][k]['median']:.3f} ({s[row][k]['min']:.3f}-{s[row][k]['max']:.3f})"
                                            for k in ("cpu_ms", "wall_ms", "device_ms")) + " |")
    pol_ms = [r["adaptive"]["policy_ms"] for r in rounds]
    md += ["", f"Adaptive over static, CPU per request: {np.median(extra):+.3f} ms (rounds: "
           + ", ".join(f"{e:+.3f}" for e in extra) + f"). Of it, the policy (`next_placement` and `observe`, this "
           f"thread's CPU): {np.median(pol_ms):.3f} ms (rounds: " + ", ".join(f"{v:.3f}" for v in pol_ms) + ").", ""]
    out = HERE / "results" / "adaptive-overhead"
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
