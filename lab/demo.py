"""`tlcut demo`: the whole pipeline on an emulated device, edge and 5G uplink, in one go.

export -> cuts -> bench (as device and as edge) -> plan -> compile -> serve and run the placements
a practitioner weighs (tlcut's choice, the paper's static choices: best cut with the TL and without,
both float32; device only; edge only with the input as float32, as the camera's uint8 pixels and
as a JPEG) on the same images -> one table of predicted against measured latency. Every step is a real tlcut verb, run as a user would run
it (lab/harness.py), so what is measured is what is shipped. As root it runs in the testbed (namespaces, tc, a
cgroup quota); without root on loopback (lab/loopback.py), and the results say which.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

from tlcut.errors import InternalError, TlcutError
from tlcut.lab.harness import Harness, check, pick, tlcut


def demo(model: str = "DenseNet169", out: str | None = None, *, bandwidth: float = 57.0, latency: float = 28.0,
         device_quota: float = 0.2, requests: int = 30, warmup: int = 3, bench_iterations: int = 20,
         bundle: str | None = None, input_shape=None, min_cut: int | None = None, emulation: str = "auto",
         engines: str | None = None, say=print) -> dict:
    """``engines``: the configurations to bench and plan over (`tlcut bench --engines`), e.g.
    onnxrt:float32 for the paper's single configuration; None: every one, int8 halves compiled for
    the few cuts the search needs."""
    from tlcut.bundle import Bundle, write_json_atomic
    from tlcut.lab import demo_report as rep
    from tlcut.lab import testbed as tbm
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain import plan_report
    from tlcut.runtime.run import default_images
    from tlcut.toolchain.compile import compile_cuts

    check_model(model, bundle)
    Emu, why = pick(emulation)
    if emulation == "auto" and why:
        say(f"[demo] no testbed ({why}): running on loopback with the link and the device emulated in user space")
    out = Path(out or f"results/demo-{model}")
    t_start, step = _start(out, say)

    # 1. export ----------------------------------------------------------------------------------
    b, bpath = _bundle(model, out, bundle, input_shape, step)
    # 2. cuts ------------------------------------------------------------------------------------
    step(2, f"{len(b.cuts)} cuts, the TL applies at {sum(c.tl for c in b.cuts)}")
    (out / "cuts.json").write_text(json.dumps([c.to_json() for c in b.cuts], indent=1))

    cfg = tbm.Config(bandwidth_mbps=bandwidth, latency_ms=latency, device_quota=device_quota)
    images = default_images(b)
    int8_note = None
    with Emu(cfg, log=say) as tb, Harness(tb, bpath, requests=requests, warmup=warmup, images=images) as h:
        net = planmod.Network(up_mbps=bandwidth, rtt_ms=latency, down_mbps=10 * bandwidth,
                              source=f"{tb.kind} ({tb.state.delay_method})")

        def bench_and_plan(spec, what):
            # 3. bench as device and as edge, inside the emulation; 4. plan over what was benched
            for role in ("device", "edge"):
                step(3, f"bench all cuts as the {role} ({tb.kind}), {what}")
                h.bench(role, out / f"profile-{role}.json", bench_iterations, engines=spec)
            step(4, f"plan for uplink {bandwidth:g} Mbit/s, latency {latency:g} ms ({what})")
            dev = planmod.load_profile(out / "profile-device.json", "device")
            edg = planmod.load_profile(out / "profile-edge.json", "edge")
            return planmod.plan(dev, edg, net, planmod.Constraints(min_cut=min_cut), bundle=b), dev

        if engines:
            plan, dev = bench_and_plan(engines, f"engines {engines}")
        else:
            plan, dev = bench_and_plan(float32_engines(), "every float32 engine")
            int8_note = _int8(b, bpath, plan, min_cut, images, step, say)
            if int8_note.startswith("int8 halves"):
                b = Bundle.open(bpath)  # as the compile left it: its manifest lists the int8 halves
                plan, dev = bench_and_plan(None, "every engine configuration")
        plan.save(out / "plan.json")
        plan_report.plot(plan, out / "plan.png")
        say(plan_report.format_table(plan, top=8))
        chosen = rep.rows_to_run(plan)
        # 5. compile the float32 halves of the chosen cuts ------------------------------------------
        cut_ids = sorted({c.placement.cut for c in chosen.values() if c.placement.cut is not None})
        step(5, f"compile cuts {cut_ids}")
        compile_cuts(b, [b.cuts[i] for i in cut_ids], tl="both")
        fidelity = measure_fidelity(bpath, chosen, images, say)
        # 6. serve and run, each deployment on its engines ------------------------------------------
        step(6, f"serve on the edge, run {len(set(chosen.values()))} deployments x {requests} requests on the device")
        runs = h.run_deployments(chosen, out, say=lambda label, d: say(f"[demo 6/{STEPS}]   {label}: {d.label}"))
    # 7. the table -------------------------------------------------------------------------------
    step(7, "summary")
    rows = rep.summary_rows(b, chosen, runs, fidelity)
    searched = sorted({e.words() for e in (*dev.engines, *planmod.load_profile(out / "profile-edge.json", "edge").engines)})
    result = {
        "model": b.name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "testbed": {"bandwidth_mbps": bandwidth, "latency_ms": latency, "latency_method": tb.state.delay_method,
                    "device_quota_cpus": device_quota, "device_cpus": cfg.device_cpus, "edge_cpus": cfg.edge_cpus,
                    "emulation": tb.kind, "described": tb.describe()},
        "machine": dev["machine"], "requests_per_plan": requests, "min_cut": min_cut, "engines": engines,
        "engines_searched": ", ".join(searched), "int8": int8_note, "rows": rows, "speedups": rep.speedups(rows),
        "why": rep.why(rows), "placement_note": rep.placement_note(rows),
        "images": images or "random tensors (elpv-dataset not installed, or the input is not an image)",
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(out / "summary.json", result)
    table = rep.format_summary(result)
    (out / "summary.md").write_text(table + "\n")
    say(table)
    say(f"[demo] results in {out}/ (summary.md, summary.json, plan.png, plan.json, profiles, runs) "
        f"in {result['seconds']:.0f} s")
    return result


def float32_engines() -> str:
    """Every backend that runs here, at float32: the first bench, before any int8 halves exist."""
    from tlcut.runtime import backends
    from tlcut.toolchain.bench_configs import why_not_here

    return ",".join(f"{n}:float32" for n in backends.names() if why_not_here(n) is None)


def measure_fidelity(bpath, chosen: dict, images, say) -> dict:
    """{Deployment: its fidelity row, or None where unknown} for each row the demo runs: what the
    bundle recorded, measured here (`tlcut fidelity`'s path, 32 test images) where a lossy row has
    none, so the table says how far each lossy choice moved the answers instead of assuming nothing."""
    from tlcut.bundle import Bundle
    from tlcut.placement import SPLIT
    from tlcut.runtime.backends import DEFAULT
    from tlcut.toolchain import fidelity as fid

    def side(e):
        return e.backend or DEFAULT, e.precision or "float32"

    def sides(d):
        return [side(e) for e in d.engines_used.values()]

    def known(b, d):
        return fid.deployment_fidelity(b, d.placement, side(d.device), side(d.edge))

    out = {}
    for d in dict.fromkeys(chosen.values()):
        b = Bundle.open(bpath)
        if known(b, d) is None and images == "elpv":
            p = d.placement
            for backend, precision in dict.fromkeys(sides(d)):
                try:
                    fid.measure(b, cuts=[b.cuts[p.cut]] if p.where == SPLIT else [], tl="on" if p.tl else "off",
                                engines=[backend], precisions=[precision], wire=[p.encoding],
                                whole=p.where != SPLIT, **({"jpeg_quality": (p.quality,)} if p.quality else {}))
                except TlcutError as e:
                    say(f"[demo] fidelity of {d.label}: unknown ({e})")
            b = Bundle.open(bpath)
        out[d] = known(b, d)
    return out


def _int8(b, bpath, plan, min_cut, images, step, say) -> str:
    """Compile int8 halves, calibrated on elpv, for the few cuts the float32 plan points at; what
    was done, or why not (random tensors are no calibration: int8 is then left out)."""
    from tlcut.lab.demo_report import int8_cuts

    if images != "elpv":
        note = ("int8 left out: its calibration needs real images (elpv-dataset is not installed, or the input is "
                "not an image), and scales from random tensors would mislead.")
        say(f"[demo] {note}")
        return note
    cuts = int8_cuts(plan, min_cut)
    step(4, f"compile int8 halves of cuts {cuts} and the whole int8 model, calibrated on elpv")
    check(subprocess.run(tlcut("compile", bpath, "--cuts", ",".join(map(str, cuts)) or "0", "--tl", "both",
                               "--precision", "int8", "--calib", "elpv")), "compile int8")
    return f"int8 halves of cuts {', '.join(map(str, cuts))} and the whole int8 model (calibrated on elpv)."


STEPS = 7
#: What a demo writes in its folder besides the bundle, removed before it runs again.
STALE = ("summary.md", "summary.json", "plan.json", "plan.png", "profile-*.json", "cuts.json", "run-*.json",
         "edge-*.log", "cloud-*.log")


def check_model(model: str, bundle) -> None:
    """A model that cannot be exported is one error line before anything is made: the export step
    would say the same from its own process, and the step's failure a second line under it."""
    if bundle or Path(model).is_file():
        return
    if Path(model).suffix or os.sep in model:
        raise TlcutError(f"model file '{model}' does not exist; give a .onnx/.keras/.h5 file or an architecture "
                         "name (list them with `tlcut export --list`)")
    from tlcut.models import zoo

    if model.lower() not in {n.lower() for n in zoo.names()}:
        from tlcut.toolchain.convert import load_keras

        load_keras(model)  # its own message, 'did you mean' included; raises before any Keras import
        raise InternalError(f"'{model}' is not in the zoo, yet load_keras took it")


def _start(out: Path, say):
    """Make the results folder, less an earlier run's results (a run that stops half way must not
    leave an old summary or old runs beside its new profiles); (start time, the step printer both
    demos number their steps with). The bundle stays: the next demo reuses it."""
    out.mkdir(parents=True, exist_ok=True)
    if any((out / f).exists() for f in ("summary.json", "profile-device.json", "bundle")):  # a demo's folder
        for pattern in STALE:
            for f in out.glob(pattern):
                f.unlink()
    t_start = time.perf_counter()

    def step(i, text):
        say(f"[demo {i}/{STEPS}] {text}  (t={time.perf_counter() - t_start:.0f} s)")
    return t_start, step


def _bundle(model, out: Path, bundle, input_shape, step):
    """The bundle to run: the one given, the one left in ``out`` by an earlier run, or a fresh export."""
    from tlcut.bundle import Bundle, manifest_path

    bpath = Path(bundle) if bundle else out / "bundle"
    if bundle or manifest_path(bpath).exists():
        b = Bundle.open(bpath)
        step(1, f"reusing bundle {bpath} ({b.name})")
    else:
        step(1, f"export {model} (random weights) -> {bpath}")
        check(subprocess.run(tlcut("export", model, "-o", bpath, *(["--input-shape", input_shape] if input_shape else []))),
               "export")
        b = Bundle.open(bpath)
    return b, bpath


def demo_tiers(model: str = "DenseNet169", out: str | None = None, *, bandwidth: float = 57.0, latency: float = 28.0,
               backbone: float = 1000.0, backbone_latency: float = 20.0, device_quota: float = 0.2,
               edge_quota: float | None = 0.5, requests: int = 30, warmup: int = 3, bench_iterations: int = 20,
               bundle: str | None = None, input_shape=None, command: str | None = None, say=print) -> dict:
    """`tlcut demo --tiers 3`: device | edge | cloud in the testbed's three namespaces.

    bench as each tier -> the three-tier plan (every pair of cuts, each crossing's TL and encoding)
    -> compile heads, middle parts and tails -> serve the cloud and a forwarding edge -> run the
    best three-tier placement, the best two-tier one and device only -> predicted against measured."""
    from tlcut.bundle import write_json_atomic
    from tlcut.lab import testbed as tbm
    from tlcut.runtime.run import default_images
    from tlcut.toolchain import plan as planmod
    from tlcut.toolchain.compile import compile_cuts, compile_middle
    from tlcut.toolchain.plan_report import format_tiers
    from tlcut.toolchain.plan_tiers import plan_tiers

    why = tbm.available()
    if why:
        raise TlcutError(f"--tiers 3 runs in the testbed's three namespaces: {why}; run as root (e.g. sudo)")
    check_model(model, bundle)
    out = Path(out or f"results/demo-{model}-tiers3")
    t_start, step = _start(out, say)

    b, bpath = _bundle(model, out, bundle, input_shape, step)
    step(2, f"{len(b.cuts)} cuts, the TL applies at {sum(c.tl for c in b.cuts)}")
    cfg = tbm.Config(bandwidth_mbps=bandwidth, latency_ms=latency, device_quota=device_quota, edge_quota=edge_quota,
                     cloud=True, backbone_mbps=backbone, backbone_ms=backbone_latency)
    images = default_images(b)
    with tbm.Testbed(cfg, log=say) as tb, Harness(tb, bpath, requests=requests, warmup=warmup, images=images) as h:
        s = tb.state
        for role in ("device", "edge", "cloud"):
            step(3, f"bench all cuts as the {role}")
            h.bench(role, out / f"profile-{role}.json", bench_iterations)
        step(4, f"three-tier plan: uplink {bandwidth:g} Mbit/s {latency:g} ms, backbone {backbone:g} Mbit/s "
                f"{backbone_latency:g} ms")
        src = f"testbed ({s.delay_method})"
        hops = {("device", "edge"): planmod.Network(up_mbps=bandwidth, rtt_ms=latency, down_mbps=10 * bandwidth, source=src),
                ("edge", "cloud"): planmod.Network(up_mbps=backbone, rtt_ms=backbone_latency, down_mbps=10 * backbone,
                                                   source=src)}
        prof = {r: planmod.load_profile(out / f"profile-{r}.json", "device" if r == "device" else "edge")
                for r in ("device", "edge", "cloud")}
        plan = plan_tiers(("device", prof["device"]), [("edge", prof["edge"])], [("cloud", prof["cloud"])], hops,
                          top=10**6)
        plan.save(out / "plan.json", top=50)  # all of them: megabytes
        say(format_tiers(plan, top=8))
        ranking = plan.ranking
        chosen = {"tlcut's choice": plan.best,
                  "best three tiers": next((c for c in ranking if "cloud" in c.hosts), None),
                  "best two tiers": next((c for c in ranking if set(c.hosts) == {"device", "edge"}), None),
                  "device only": next(c for c in ranking if not c.crossings)}
        chosen = {k: v for k, v in chosen.items() if v is not None}
        step(5, "compile the heads, middle parts and tails they need")
        for c in chosen.values():
            _compile_for(b, c, compile_cuts, compile_middle)
        step(6, f"serve and run {len(set(chosen.values()))} placements x {requests} requests")
        runs: dict = {}
        for label, c in chosen.items():
            if c in runs:
                continue
            say(f"[demo 6/{STEPS}]   {label}: {c.label}")
            runs[c] = _run_tiers(h, c, out)
    step(7, "summary")
    rows = []
    for label, c in chosen.items():
        sm = runs[c]["summary"]
        measured = sm["total_ms"]["median"]
        rows.append({"placement": label, "choice": c.label, "predicted_ms": c.total_ms, "measured_ms": measured,
                     "measured_p90_ms": sm["total_ms"]["p90"], "error_pct": 100 * (measured - c.total_ms) / c.total_ms,
                     "predicted_tiers_ms": c.tiers_ms, "predicted_components_ms": c.components_ms,
                     "upload_bytes": c.upload_bytes, "measured_device_ms": sm["device_ms"]["median"],
                     "measured_edge_ms": sm["edge_ms"]["median"], "measured_transfer_ms": sm["transfer_ms"]["median"],
                     "requests": sm["requests"]})
    result = {"model": b.name, "tiers": 3, "command": command, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "testbed": {"described": tb.describe(), "latency_method": s.delay_method, "bandwidth_mbps": bandwidth,
                          "latency_ms": latency, "backbone_mbps": backbone, "backbone_ms": backbone_latency,
                          "device_quota_cpus": device_quota, "edge_quota_cpus": edge_quota, "emulation": tb.kind},
              "machine": prof["device"]["machine"], "requests_per_plan": requests, "rows": rows,
              "images": images or "random tensors (elpv-dataset not installed, or the input is not an image)",
              "seconds": round(time.perf_counter() - t_start, 1)}
    write_json_atomic(out / "summary.json", result)
    table = format_tiers_summary(result)
    (out / "summary.md").write_text(table + "\n")
    say(table)
    say(f"[demo] results in {out}/ (summary.md, summary.json, plan.json, profiles, runs) in {result['seconds']:.0f} s")
    return result


def _compile_for(b, c, compile_cuts, compile_middle) -> None:
    """What chain ``c`` (a TierDeployment) runs: the head at the first crossing, the middle part to
    the second and the tail after it (or the tail after the only crossing)."""
    xs = c.crossings
    for x in xs:
        if x.cut is not None:
            compile_cuts(b, [b.cuts[x.cut]], tl="on" if x.tl else "off")
    if len(xs) == 2 and xs[0].cut is not None:
        compile_middle(b, b.cuts[xs[0].cut], b.cuts[xs[1].cut], tl="on" if xs[0].tl else "off", to_tl=xs[1].tl)


def _run_tiers(h: Harness, c, out: Path) -> dict:
    """Serve what chain ``c`` (a TierDeployment) needs (a cloud and a forwarding edge, or one edge),
    run the device, stop them."""
    s = h.emu.state
    xs = c.crossings
    slug = "-".join(f"{'input' if x.cut is None else x.cut}{'tl' if x.tl else ''}{x.encoding}" for x in xs) or "device"
    try:
        fwd = []
        if len(xs) == 2:
            tail = xs[1]
            h.serve("--cut", tail.cut, "--tl", "on" if tail.tl else "off", role="cloud", bind=s.cloud_bind,
                    log=out / f"cloud-{slug}.log", wait=False)
            fwd = ["--forward", s.cloud_endpoint, "--to", tail.cut, "--to-tl", "on" if tail.tl else "off",
                   "--forward-encoding", tail.encoding, "--forward-timeout", "60", "--forward-insecure"]
        device = ["--cut", "device"]
        if xs:
            head = xs[0]
            cut = "input" if head.cut is None else head.cut
            h.serve("--cut", cut, *(["--tl", "on" if head.tl else "off"] if head.cut is not None else []), *fwd,
                    log=out / f"edge-{slug}.log")
            device = ["--cut", cut, "--tl", "on" if head.tl else "off", "--encoding", head.encoding]
        return h.run(device, out / f"run-{slug}.json")
    finally:
        h.stop()


def format_tiers_summary(r: dict) -> str:
    t = r["testbed"]
    lines = [f"# tlcut demo --tiers 3: {r['model']}", "",
             f"Emulation: {t['described']}. {r['requests_per_plan']} timed requests per placement, "
             f"inputs: {r.get('images', 'random tensors')}. {r['date']}.", "",
             *([f"Command: `{r['command']}`  "] if r.get("command") else []),
             "Machine: {platform}, {processor}; python {python}, onnxruntime {onnxruntime}, numpy {numpy}; "
             "one thread per tier.".format(**r["machine"]), "",
             "| placement | what runs where | predicted device / edge / cloud (ms) | predicted median (ms) | "
             "measured median (ms) | error | measured p90 (ms) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for x in r["rows"]:
        pt = x["predicted_tiers_ms"]
        lines.append(f"| {x['placement']} | {x['choice']} | {pt['device']:.1f} / {pt['edge']:.1f} / {pt['cloud']:.1f} | "
                     f"{x['predicted_ms']:.1f} | {x['measured_ms']:.1f} | {x['error_pct']:+.1f}% | {x['measured_p90_ms']:.1f} |")
    by = {x["placement"]: x for x in r["rows"]}
    three, two = by.get("best three tiers"), by.get("best two tiers")
    if three and two:
        lines += ["", f"Best three tiers over best two tiers (>1: the cloud pays): {two['measured_ms'] / three['measured_ms']:.2f}x "
                      f"measured, {two['predicted_ms'] / three['predicted_ms']:.2f}x predicted."]
    return "\n".join(lines)
