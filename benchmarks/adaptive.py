"""A link that moves: tlcut's adaptive runtime against every static choice, over replayed traces.

    python benchmarks/adaptive.py [--model DenseNet169] [--traces stepped,5g-uplink,PATH.csv] [--speed 1]
                                  [--min-cut K] [--scission-space] [--candidates pareto|ranked]
                                  [--replay time|frames] [--fps 4] [--turn 8]
                                  [--bundle DIR --profiles DIR]

On the testbed as root (loopback emulation otherwise, stated in the results): bench both roles,
plan for the trace's first link, then for each trace run, over the same replayed trace: Scission's
static choice (best cut, no TL, float32), ScissionLite's (best cut with the TL, float32), tlcut's
static best (any encoding), device only, edge only (the input as float32, as uint8 pixels, as a
JPEG), and tlcut run --adapt over the plan's Pareto set (or, with --candidates ranked, its best
and the best at each of the trace's rates) and the statics, all on the same images. The
oracle of each phase (a span of the trace at one rate) is the static placement whose median was
lowest there, as measured. Each run is a worker in the device's namespace that loads and warms up
first, then starts on a signal with the trace replay, so both share one clock. With --replay
frames, each run instead serves --fps frames per second of each phase on that phase's link, all
rows loaded at once and taking turns of at most --turn frames (the order balanced): every row the
same frames on the same links, on the machine as it is then; and a control row runs the static
best's placement again, so the summary can say how far two runs of one placement fall apart (each
paired difference is given with its bootstrap interval). Writes
benchmarks/results/adaptive.{json,md}, and per trace (named by its file's stem, so a trace given as
a path works too) a timeline PNG and the adaptive run's per-request records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tlcut.stats import percentile_difference

HERE = Path(__file__).resolve().parent
TLCUT = [sys.executable, "-m", "tlcut"]
ADAPTIVE = "tlcut adaptive"
#: a frame replay's second run of the static best's placement: how far two runs of one placement
#: fall apart on this machine, which is the finest difference the adaptive row can be judged by
CONTROL = "control: the static best again"
NOT_CHOICES = (ADAPTIVE, CONTROL)


def worker(args: dict) -> None:
    """In the device's namespace: load, warm up, say ready, wait for go, run for the duration."""
    from tlcut.bundle import Bundle
    from tlcut.placement import Placement
    from tlcut.runtime import run as rt

    b = Bundle.open(args["bundle"])
    kw = dict(timeout_s=10, retries=1, fallback=True, insecure=True, threads=1, slowdown=args["slowdown"])
    if args["placement"] == "adaptive":
        from tlcut.deployment import Plan
        from tlcut.runtime.adapt import AdaptiveDevice
        from tlcut.runtime.policy import LinkEstimate, Policy

        plan = Plan.load(args["plan"], b)
        cands = [plan.ranking[i] for i in args["candidates"]]  # by rank in the plan saved for the workers
        net = plan.network
        dev = AdaptiveDevice(b, Policy(cands, LinkEstimate(net["up_mbps"], net["rtt_ms"])), edge=args["edge"], **kw)
    else:
        dev = rt.Device(b, Placement.from_json(args["placement"]), edge=args["edge"], **kw)
    xs = rt.inputs(b, args.get("images"), 8, seed=1)
    with dev:
        if args["placement"] == "adaptive":
            dev.warm(xs[0])  # every candidate once, as each static run warms its one placement
        for x in xs[:3]:
            dev.infer(x)
        print("ready", flush=True)
        sys.stdin.readline()
        t0 = time.perf_counter()
        cpu0 = cpu_s()
        recs, i = [], 0

        def one(phase=None):
            nonlocal i
            t = time.perf_counter() - t0
            _, rec = dev.infer(xs[i % len(xs)])
            rec.update(t_s=t, phase=phase)
            recs.append(rec)
            i += 1

        if args.get("frames"):  # "PHASE N": N frames of that phase, on its link, which the parent has set
            served = 0.0  # t_s counts serving time only: the rows take turns, and a row's wait is not its own
            print("turn", flush=True)
            for line in iter(sys.stdin.readline, ""):
                if line.strip() == "end":
                    break
                ph, n = map(int, line.split())
                t0 = time.perf_counter() - served
                for _ in range(n):
                    one(ph)
                if hasattr(dev, "settle"):
                    dev.settle()  # no probe of this row's crosses the link while another row is served
                served = time.perf_counter() - t0
                print("turn", flush=True)
        else:
            while time.perf_counter() - t0 < args["duration"]:
                one()
        report = dev.report()
        # the process's CPU, every thread: on a quota'd device, what a row spends between its
        # requests is taken from the quota its next head runs on
        report["cpu_ms_per_request"] = (cpu_s() - cpu0) * 1e3 / max(len(recs), 1)
    Path(args["out"]).write_text(json.dumps({"records": recs, "report": report}))


def cpu_s() -> float:
    """This process's CPU seconds, every thread (ZeroMQ's I/O thread too); adaptive_overhead.py's too."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start(tb, label, args):
    """A worker in the device's namespace, loading; it says ``ready`` once warmed up."""
    return tb.popen("device", [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(args)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def expect(p, label, want):
    """Read the worker's lines up to ``want``; a worker that ends first fails the benchmark."""
    for line in p.stdout:
        if line.strip() == want:
            return
    p.kill()
    raise SystemExit(f"worker for {label} ended before saying {want!r} (exit {p.wait()})")


def say(p, line="go"):
    p.stdin.write(line + "\n")
    p.stdin.flush()


def finish(p, label, args, timeout_s):
    p.wait(timeout_s)
    if p.returncode != 0:
        raise SystemExit(f"worker for {label} failed")
    return json.loads(Path(args["out"]).read_text())


def run_one(tb, label, args, steps, speed):
    """One row over the trace on the clock, alone."""
    from tlcut.lab.trace import Replayer, Step

    p = start(tb, label, args)
    expect(p, label, "ready")
    scaled = [Step(s.t_s / speed, s.mbps, s.ms) for s in steps]
    tb.set_link(scaled[0].mbps, scaled[0].ms)
    with Replayer(scaled, tb.set_link):
        say(p)
        return finish(p, label, args, args["duration"] + 120)


#: the pause before each row's turn in a frame replay: five of the testbed's 10 ms CPU quota
#: periods, so every turn starts on a full quota whatever the row before it did
TURN_GAP_S = 0.05


def turn_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` rows, one per round of turns, cycled (a Williams design): over a cycle every
    row takes every place alike and comes right after every other row alike. What a row's turn
    leaves behind falls on the row after it: device only leaves the edge and the link seconds idle,
    and, in a rotation, which keeps each row behind the same one, the adaptive row met a cold edge
    on every turn (its first frame of a turn waited 67.4-68.8 ms on the edge, median, where its
    others took 64.8-67.0, in the three --min-cut 5 frame replays with the pause:
    benchmarks/results/adaptive-turn-gap/after, adaptive-min-cut-5-runs/at-e6fd654-frames)."""
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    orders = [[(r + i) % n for r in first] for i in range(n)]
    return orders + [o[::-1] for o in orders] if n % 2 else orders


def run_frames(tb, jobs: dict, steps, frames, turn: int) -> dict:
    """Every row's frames of a phase on that phase's link, the rows taking turns of at most ``turn``
    frames, in an order that changes each round (``turn_orders``). The machine's speed drifts over
    minutes (device only alone measured 301 to 519 ms a phase across runs), so rows run one after
    another each met a different machine; and on this machine a row left idle a minute or more ran
    its next frame at about twice its time (its DAMON scheme pages out memory untouched for 60 s,
    which fits).

    Each turn starts after ``TURN_GAP_S`` of nothing: the rows share the device's CPU quota, and a
    row whose turn ended with the quota spent (device only runs flat out) left the next row's first
    head to wait for the quota's next period. The rotation used before kept each row behind the
    same one, so that cost fell on one row every turn (the adaptive one, behind device only): in a
    steady-link replay its first frame of a turn took 22.1 ms on the device (median) against 16.2
    for its other frames, the static best's 16.4; with the pause, 11.4 against 14.5, the static
    best's 14.7 (benchmarks/results/adaptive-turn-gap)."""
    procs = {label: start(tb, label, args) for label, args in jobs.items()}  # they load side by side
    for label, p in procs.items():
        expect(p, label, "ready")
        say(p)
        expect(p, label, "turn")
    labels, orders, k = list(procs), turn_orders(len(procs)), 0
    for ph, n in enumerate(frames):
        tb.set_link(steps[ph].mbps, steps[ph].ms)
        for done in range(0, n, turn):
            for label in (labels[i] for i in orders[k % len(orders)]):
                time.sleep(TURN_GAP_S)
                say(procs[label], f"{ph} {min(turn, n - done)}")
                expect(procs[label], label, "turn")
            k += 1
    for p in procs.values():
        say(p, "end")
    return {label: finish(p, label, jobs[label], 120) for label, p in procs.items()}


def draw(records, png, steps, speed, frames: bool, title: str) -> None:
    """The adaptive run's timeline, with the trace as that run met it: on the clock, or, in a frame
    replay, each phase from its first frame on the row's serving time (the trace's own clock would
    put the link's changes where this row's frames were not)."""
    from tlcut.lab import timeline
    from tlcut.lab.trace import Step

    if frames:
        first: dict = {}
        for r in records:
            first.setdefault(r["phase"], r["t_s"])
        shown = [Step(first[k], s.mbps, s.ms) for k, s in enumerate(steps) if k in first]
    else:
        shown = [Step(s.t_s / speed, s.mbps, s.ms) for s in steps]
    timeline.plot(records, png, trace=shown, title=title + (" (frame replay: time is the row's serving time)" if frames else ""))


def phases(steps, speed, duration):
    edges = [s.t_s / speed for s in steps] + [duration]
    return [(edges[i], edges[i + 1], steps[i].mbps) for i in range(len(steps)) if edges[i] < duration]


def oracles(phases: list[dict], table: dict) -> list[dict]:
    """Each phase with its oracle: the static row whose median was lowest there, as measured. A row
    with no request in a phase (one slow request spanned it) is not its oracle."""
    for i, p in enumerate(phases):
        rows = {k: v["phases"][i] for k, v in table.items() if k not in NOT_CHOICES and v["phases"][i]["n"]}
        p["placement"] = min(rows, key=lambda k: rows[k]["median"])
        p["median"] = rows[p["placement"]]["median"]
    return phases


def stats(recs):
    """Latency figures, and the median of each part of a request (where a tie is lost or won)."""
    a = np.array([r["total_ms"] for r in recs]) if recs else np.array([np.nan])
    parts = {k: float(np.median([r.get(f"{k}_ms", 0.0) for r in recs])) if recs else float("nan")
             for k in ("device", "transfer", "edge")}
    return {"n": len(recs), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(np.max(a)),
            "parts_ms": parts}


def samples(recs) -> dict:
    """Every request's parts (ms, in order) and phase: rows that tie can be compared request by request."""
    out = {k: [round(float(r.get(f"{k}_ms", 0.0)), 2) for r in recs] for k in ("total", "device", "transfer", "edge")}
    return {**out, "phase": [r.get("phase") for r in recs]}


DEFAULT_TRACES = "stepped,5g-uplink"
#: a trace with more phases than this (one of 1 s steps) gets no column per phase in the summary
MAX_PHASE_COLUMNS = 30


def trace_name(spec: str) -> str:
    """A shipped trace's name, or a trace file's stem: what the results' file names carry."""
    p = Path(spec)
    return p.stem if p.suffix or len(p.parts) > 1 else spec


def results_tag(a, traces: list[str]) -> str:
    """The results' file stem: other traces, or another speed, than the shipped pair's at 1x are
    another benchmark, and must not overwrite that one's committed results."""
    tag = "adaptive" + (f"-min-cut-{a.min_cut}" if a.min_cut is not None else "") + \
        ("-scission-space" if a.scission_space else "") + ("-frames" if a.replay == "frames" else "")
    if traces != DEFAULT_TRACES.split(","):
        tag += "-" + "-".join(traces)
    return tag + (f"-x{a.speed:g}" if a.speed != 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="DenseNet169")
    ap.add_argument("--bundle")
    ap.add_argument("--profiles", help="folder with profile-device.json and profile-edge.json to reuse")
    ap.add_argument("--traces", default=DEFAULT_TRACES,
                    help="shipped trace names or CSV paths (time_s,mbps,ms), separated by commas")
    ap.add_argument("--speed", type=float, default=1.0, help="replay traces this many times faster")
    ap.add_argument("--replay", choices=["time", "frames"], default="time",
                    help="time: each run for the trace's duration, the link moving on the clock (closed loop: a "
                         "faster placement serves more frames, and in slow phases too); frames: every run the same "
                         "frames, --fps per second of each phase, the link moving between them")
    ap.add_argument("--fps", type=float, default=4.0, help="with --replay frames: frames per second of trace")
    ap.add_argument("--turn", type=int, default=8,
                    help="with --replay frames: the most frames a row serves before the next row's turn")
    ap.add_argument("--min-cut", type=int)
    ap.add_argument("--scission-space", action="store_true",
                    help="placements of Scission's kind only (no TL, float32 on the wire): the static split the "
                         "paper would keep, against re-planning among the same placements")
    ap.add_argument("--candidates", choices=["pareto", "ranked"], default="pareto",
                    help="what the adaptive run keeps loaded besides the statics: the plan's Pareto set (default), "
                         "or its 4 best and the best at each of the trace's rates")
    ap.add_argument("--device-quota", type=float, default=0.2)
    ap.add_argument("--iterations", type=int, default=10, help="bench iterations")
    ap.add_argument("--report", metavar="JSON", help="no run: the oracles and the summary again from a results JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(json.loads(a.worker))
        return 0
    if a.report:
        return report(Path(a.report))
    if a.fps <= 0:
        ap.error(f"--fps must be above 0 (frames per second of trace), got {a.fps:g}")
    if a.turn < 1:
        ap.error(f"--turn must be at least 1 (frames a row serves in a turn), got {a.turn}")

    from tlcut.bundle import Bundle
    from tlcut.lab import testbed as tbm, trace
    from tlcut.lab.harness import Harness, pick
    from tlcut.placement import EDGE
    from tlcut.runtime.run import default_images
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    for r in ("device", "edge") if a.profiles else ():
        f = Path(a.profiles) / f"profile-{r}.json"
        configs = (json.loads(f.read_text()).get("configurations") or []) if f.is_file() else []
        if len(configs) > 1:  # the workers and the edge run one engine; so must the plan
            raise SystemExit(f"adaptive.py: {f} holds {len(configs)} engine configurations; it compares placements "
                             "on one per side: bench again with --engines onnxrt:float32, or leave out --profiles")
    root = Path(tempfile.mkdtemp(prefix="tlcut-adaptive-"))
    out = HERE / "results"
    traces = {trace_name(n): trace.load(n) for n in a.traces.split(",") if n.strip()}
    tag = results_tag(a, list(traces))
    b = Bundle.open(a.bundle) if a.bundle else export(a.model, root / "bundle", progress=print)
    first = next(iter(traces.values()))[0]
    cfg = tbm.Config(bandwidth_mbps=first.mbps, latency_ms=first.ms, device_quota=a.device_quota, port=5931)
    emu = pick()[0](cfg, log=print)
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": b.name,
               "command": "python benchmarks/adaptive.py" + (f" --min-cut {a.min_cut}" if a.min_cut is not None else "")
               + (f" --traces {a.traces}" if a.traces != DEFAULT_TRACES else "")
               + (f" --speed {a.speed:g}" if a.speed != 1 else "") + (" --scission-space" if a.scission_space else "")
               + (f" --candidates {a.candidates}" if a.candidates != "pareto" else "")
               + (f" --replay frames --fps {a.fps:g} --turn {a.turn}" if a.replay == "frames" else "")
               + (f" --bundle {a.bundle}" if a.bundle else "") + (f" --profiles {a.profiles}" if a.profiles else ""),
               "traces": {}, "turn": a.turn if a.replay == "frames" else None,
               "order": "balanced" if a.replay == "frames" else None}
    images = default_images(b)
    adaptive_records = {}
    with emu as tb, Harness(tb, b.path, images=images) as h:
        results["emulation"] = tb.describe()
        prof = Path(a.profiles) if a.profiles else root
        results["images"] = images or "random tensors"
        for role in ("device", "edge") if not a.profiles else ():
            h.bench(role, prof / f"profile-{role}.json", a.iterations)
        dev, edg = (planmod.load_profile(prof / f"profile-{r}.json", r) for r in ("device", "edge"))
        net = planmod.Network(up_mbps=first.mbps, rtt_ms=first.ms, down_mbps=10 * first.mbps)
        plan = planmod.plan(dev, edg, net, planmod.Constraints(min_cut=a.min_cut, tl="off" if a.scission_space else "both"))
        if a.scission_space:  # float32 on the wire only, as Scission sends it
            for c in plan.ranking:
                if c.placement.encoding != "raw":
                    c.allowed, c.why_not = False, "--scission-space"
            plan.best = plan.allowed[0]
        plan.save(root / "plan.json")
        statics = {"Scission (no TL, float32)": plan.best_plain, "ScissionLite (TL, float32)": plan.best_tl,
                   "tlcut static best": plan.best, "device only": plan.device_only}
        if a.scission_space:
            statics = {"Scission static (no TL, float32)": plan.best_plain, "device only": plan.device_only}
        if a.min_cut is None:
            def edge_only(enc):  # the first in the ranking, allowed or not
                return next((c for c in plan.ranking if c.placement.where == EDGE and c.placement.encoding == enc
                             and c.tiles is None), None)
            statics["edge only (float32 input)"] = plan.edge_only
            if not a.scission_space:
                statics["edge only (uint8 input)"] = edge_only("uint8")
                statics["edge only (JPEG input)"] = edge_only("jpeg")
        statics = {k: v for k, v in statics.items() if v is not None}
        ctl = next((k for k, v in statics.items() if v == plan.best), next(iter(statics)))  # what the control repeats
        from tlcut.runtime.adapt import choose_candidates

        rates = sorted({s.mbps for steps in traces.values() for s in steps})
        loaded = planmod.pareto_front(plan.allowed) if a.candidates == "pareto" else \
            choose_candidates(plan.allowed, first.ms, 4, rates)
        cands = list(dict.fromkeys([*loaded, *statics.values()]))
        cand_ranks = [plan.ranking.index(c) for c in cands]
        cand_names = [c.label for c in cands]  # for the results, which people read
        cuts = sorted({c.placement.cut for c in cands if c.placement.cut is not None})
        compile_cuts(b, [b.cuts[i] for i in cuts], tl="both")
        with h.serve_cuts(cuts, log=root / "edge.log"):
            for tname, steps in traces.items():
                duration = (steps[-1].t_s + 20) / a.speed
                ph = phases(steps, a.speed, duration)
                frames = [max(1, round((t1 - t0) * a.speed * a.fps)) for t0, t1, _ in ph] \
                    if a.replay == "frames" else None
                rows = [*statics.items(), (ADAPTIVE, None)]
                if frames:  # the static best's placement twice: the two runs' difference is the noise
                    rows.append((CONTROL, statics[ctl]))
                jobs = {label: {"bundle": str(b.path), "edge": tb.state.device_endpoint, "duration": duration,
                                "slowdown": tb.slowdown, "out": str(root / f"{tname}-{i}.json"),
                                "placement": c.placement.to_json() if c else "adaptive", "plan": str(root / "plan.json"),
                                "candidates": cand_ranks, "images": images, "frames": frames}
                        for i, (label, c) in enumerate(rows)}
                if frames:
                    print(f"[adaptive] {tname}: {', '.join(jobs)}, taking turns of {a.turn} frames at most")
                    runs = run_frames(tb, jobs, steps, frames, a.turn)
                else:
                    runs = {}
                    for label, args in jobs.items():
                        print(f"[adaptive] {tname}: {label}")
                        runs[label] = run_one(tb, label, args, steps, a.speed)
                table = {}
                for label, r in runs.items():
                    recs = r["records"]
                    table[label] = {"overall": {**stats(recs), "cpu_ms_per_request": r["report"].get("cpu_ms_per_request")},
                                    "phases": [
                        stats([x for x in recs if (x["phase"] == i if frames else t0 <= x["t_s"] < t1)])
                        for i, (t0, t1, _) in enumerate(ph)]}
                oracle = [{"phase": i, "from_s": t0, "to_s": t1, "mbps": mbps} for i, (t0, t1, mbps) in enumerate(ph)]
                results["traces"][tname] = {"phases": oracles(oracle, table), "table": table, "frames": frames,
                                            "statics": {k: v.label for k, v in statics.items()},
                                            "control": ctl if frames else None,
                                            "switches": runs[ADAPTIVE]["report"].get("switches", []),
                                            "candidates": cand_names,
                                            "requests": {label: samples(r["records"]) for label, r in runs.items()}}
                adaptive_records[tname] = runs[ADAPTIVE]["records"]
                (out / f"{tag}-{tname}-adaptive-records.json").write_text(
                    json.dumps(runs[ADAPTIVE], indent=0) + "\n")
                draw(runs[ADAPTIVE]["records"], out / f"{tag}-{tname}.png", steps, a.speed, bool(frames),
                     f"{b.name}, {tname} trace: tlcut run --adapt")
    (out / f"{tag}.json").write_text(json.dumps(results, indent=1) + "\n")
    md = to_markdown(results, tag, adaptive_records)
    (out / f"{tag}.md").write_text(md)
    print(md)
    return 0


def report(path: Path) -> int:
    """Recompute the oracles and rewrite the summary beside ``path`` (a results JSON of this command)."""
    try:
        r = json.loads(path.read_text())
        records = {}
        for tname, t in r["traces"].items():
            oracles(t["phases"], t["table"])
            beside = path.with_name(f"{path.stem}-{tname}-adaptive-records.json")
            if beside.exists():
                try:
                    records[tname] = json.loads(beside.read_text())["records"]
                except (ValueError, KeyError, TypeError) as e:
                    print(f"adaptive.py: {beside} is not the adaptive records this command wrote beside {path.name} "
                          f"({type(e).__name__}: {e}); restore it or move it away", file=sys.stderr)
                    return 2
        md = to_markdown(r, path.stem, records)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"adaptive.py: {path} is not a results file of this command ({type(e).__name__}: {e}); "
              "give the .json it wrote", file=sys.stderr)
        return 2
    path.write_text(json.dumps(r, indent=1) + "\n")
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


def from_records(t: dict, recs: list | None) -> str:
    """What the adaptive run's own records say: the requests it ran here in phases whose best static
    offloads (recoveries not yet made), those a raced side probe answered, and, in a frame replay,
    what every row took on the frame of its slowest request."""
    if not recs:
        return ""

    def phase(x):
        if x.get("phase") is not None:
            return x["phase"]
        return next((p["phase"] for p in t["phases"] if p["from_s"] <= x["t_s"] < p["to_s"]), None)

    def span(v):
        return f"{min(v):.1f}-{max(v):.1f} ms" if v else "none"
    offloads = {p["phase"] for p in t["phases"] if p.get("placement") != "device only"}
    here = [(phase(x), x["total_ms"]) for x in recs if x["placement"] == "device only" and phase(x) in offloads]
    by = Counter(ph for ph, _ in here)
    out = (f" Requests the adaptive run ran here in phases whose best static offloads: {len(here)} "
           f"({span([ms for _, ms in here])}{'; by phase ' if by else ''}"
           + ", ".join(f"{ph}: {n}" for ph, n in sorted(by.items())) + ").")
    if any("raced" in x for x in recs):
        won = [x["total_ms"] for x in recs if x.get("raced") == "edge"]
        out += f" Requests a raced side probe answered: {len(won)} ({span(won)})."
    req = t.get("requests") or {}
    if t.get("frames") and ADAPTIVE in req:
        i = int(np.argmax(req[ADAPTIVE]["total"]))
        x, ph = recs[i], req[ADAPTIVE]["phase"][i]
        k = sum(1 for p in req[ADAPTIVE]["phase"][:i] if p == ph)
        how = f"{x['placement']}" + (f", hedged after {x['hedge_ms']:.0f} ms" if x.get("hedged") and x.get("hedge_ms") else "")
        out += (f" Its slowest request is frame {i} (phase {ph}, the phase's frame {k}; {how}); on that frame: "
                + ", ".join(f"{label} {v['total'][i]:.1f}" for label, v in req.items() if label != ADAPTIVE
                            and i < len(v["total"])) + " ms.")
    return out


def to_markdown(r: dict, tag: str, records: dict | None = None) -> str:
    """``records``: each trace's adaptive records, where they are at hand."""
    def slowest(o):
        return f"{o['max']:.1f}" if "max" in o else "-"

    def first_of_turn(t, best):
        """The device's and the edge's time on each row's first frame of a turn against its others:
        turns that start unalike (behind a row that spent the CPU quota, or left the edge idle) show
        here."""
        req, frames, turn = t.get("requests"), t.get("frames"), r.get("turn")
        if not (req and frames and turn and best in req and ADAPTIVE in req):
            return ""
        first = np.array([j % turn == 0 for n in frames for j in range(n)])

        def split(label):
            d, e = np.array(req[label]["device"]), np.array(req[label]["edge"])
            f = first[:len(d)]
            return (f"{np.median(d[f]):.1f} / {np.median(e[f]):.1f} against "
                    f"{np.median(d[~f]):.1f} / {np.median(e[~f]):.1f}")
        return (f" Device / edge ms (median) on the first frame of a turn against the others: adaptive "
                f"{split(ADAPTIVE)}, best static {split(best)}.")

    def paired(t, best):
        """The adaptive row against the best static over the same frames, and the control against the
        run it repeats: each difference with its 95% bootstrap interval, frames resampled for both rows
        alike. That interval resamples frames, not runs; the control's own gap is what a second run of
        one placement moves (in the Scission-space run at b9fac37 it lay outside its interval)."""
        req = t.get("requests") or {}

        def diffs(x, y):
            a, b = np.array(req[x]["total"]), np.array(req[y]["total"])
            n = min(len(a), len(b))
            m, p = percentile_difference(a[:n], b[:n]), percentile_difference(a[:n], b[:n], q=99)
            fig = lambda d: f"{d['diff']:+.2f} ms [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], {d['verdict']}"  # noqa: E731
            return f"median {fig(m)}; p99 {fig(p)}; slowest {a[:n].max() - b[:n].max():+.1f} ms"
        if not (t.get("frames") and ADAPTIVE in req and best in req):
            return ""
        out = f" Frame by frame (95% bootstrap interval, the same frames resampled for both), adaptive less {best}: {diffs(ADAPTIVE, best)}."
        ctl = t.get("control")
        if CONTROL in req and ctl in req:
            out += f" The control ({ctl}'s placement run again) less {ctl}: {diffs(CONTROL, ctl)}."
        return out

    def parts(o, b):  # (results written before the parts were kept have none)
        if "parts_ms" not in o or "parts_ms" not in b:
            return ""
        words = lambda x: " / ".join(f"{x['parts_ms'][k]:.1f}" for k in ("device", "transfer", "edge"))  # noqa: E731
        cpu = (f" CPU per request, every thread of the device's process: adaptive {o['cpu_ms_per_request']:.3f} ms, "
               f"best static {b['cpu_ms_per_request']:.3f} ms." if o.get("cpu_ms_per_request") and b.get("cpu_ms_per_request") else "")
        return f" Median device / transfer / edge ms: adaptive {words(o)}, best static {words(b)}." + cpu

    md = [f"# A link that moves: {r['model']}", "", f"Command: `{r['command']}`  ", f"Date: {r['date']}  ",
          f"Emulation: {r['emulation']}. Inputs: {r.get('images', 'random tensors')}.  ",
          "Replay: " + ("by frames: every run serves the same frames, a phase's frames on that phase's link (set "
                        "between frames), so the medians weigh each phase alike in every row."
                        + (f" The rows are loaded at once and take turns of at most {r['turn']} frames, in an "
                           + ("order balanced over rounds (each row in each place, and after each other row, "
                              "alike)" if r.get("order") == "balanced" else "order that rotates")
                           + ", so each phase's rows meet the machine alike." if r.get("turn") else
                           " The rows ran one after another.")
                        if any(t.get("frames") for t in r["traces"].values()) else
                        "by time: each run lasts the trace, the link moving on the clock; a closed loop, so a "
                        "placement that is faster in a phase serves more requests there, and the overall "
                        "medians weigh the phases by each row's own counts."), ""]
    for tname, t in r["traces"].items():
        shown = t["phases"] if len(t["phases"]) <= MAX_PHASE_COLUMNS else []  # (a table people can read)
        md += [f"## Trace `{tname}`", "", f"Timeline of the adaptive run: `{tag}-{tname}.png`; its requests: "
               f"`{tag}-{tname}-adaptive-records.json`. Candidates kept loaded: " + ", ".join(t["candidates"]) + "."
               + ("" if shown else f" Each row's median in each of the {len(t['phases'])} phases, and each phase's "
                  f"oracle, are in `{tag}.json`, not in this table."), "",
               "| placement | requests | median ms | p99 ms | slowest ms |" + "".join(
                   f" phase {p['phase']} ({p['mbps']:g} Mbit/s) median |" for p in shown),
               "|---|---:|---:|---:|---:|" + "---:|" * len(shown)]
        for label, row in t["table"].items():
            # the placement a static row kept (the control: the one it repeats)
            o, what = row["overall"], t.get("statics", {}).get(t.get("control") if label == CONTROL else label)
            md.append(f"| {label}{f' ({what})' if what and what not in label else ''} | {o['n']} | {o['median']:.1f} | {o['p99']:.1f} | {slowest(o)} |"
                      + "".join(f" {p['median']:.1f} |" for p in row["phases"][:len(shown)]))
        if shown:
            md.append("| oracle (best static per phase, measured) | | | | |"
                      + "".join(f" {p['median']:.1f} ({p['placement']}) |" for p in shown))
        ad = t["table"][ADAPTIVE]
        within = [ad["phases"][i]["median"] <= 1.10 * p["median"] for i, p in enumerate(t["phases"])
                  if ad["phases"][i]["n"]]
        statics = {k: v["overall"] for k, v in t["table"].items() if k not in NOT_CHOICES}
        best = min(statics, key=lambda k: statics[k]["median"])  # the static choice a user would keep
        b, o = statics[best], ad["overall"]
        md += ["", f"Adaptive median within 10% of the oracle in {sum(within)} of {len(within)} phases. "
               f"Against the best static choice ({best}): median {o['median']:.1f} vs {b['median']:.1f} ms, "
               f"p99 {o['p99']:.1f} vs {b['p99']:.1f} ms, slowest request {slowest(o)} vs {slowest(b)} ms. "
               f"The lowest static p99 is {min(v['p99'] for v in statics.values()):.1f} ms "
               f"({min(statics, key=lambda k: statics[k]['p99'])})." + parts(o, b) + first_of_turn(t, best)
               + paired(t, best) + from_records(t, (records or {}).get(tname)), "",
               "Switches: " + ("; ".join(f"request {s['at']}: {s['old']} -> {s['new']}" for s in t["switches"]) or "none"), ""]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
