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
         say=print) -> dict:
    from tlcut.bundle import write_json_atomic
    from tlcut.lab import testbed as tbm
    from tlcut.placement import EDGE
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
    with Emu(cfg, log=say) as tb, Harness(tb, bpath, requests=requests, warmup=warmup, images=images) as h:
        # 3. bench as device and as edge, inside the emulation -------------------------------------
        for role in ("device", "edge"):
            step(3, f"bench all cuts as the {role} ({tb.kind})")
            h.bench(role, out / f"profile-{role}.json", bench_iterations)
        # 4. plan ----------------------------------------------------------------------------------
        step(4, f"plan for uplink {bandwidth:g} Mbit/s, latency {latency:g} ms")
        net = planmod.Network(up_mbps=bandwidth, rtt_ms=latency, down_mbps=10 * bandwidth,
                              source=f"{tb.kind} ({tb.state.delay_method})")
        dev = planmod.load_profile(out / "profile-device.json", "device")
        edg = planmod.load_profile(out / "profile-edge.json", "edge")
        plan = planmod.plan(dev, edg, net, planmod.Constraints(min_cut=min_cut))
        plan.save(out / "plan.json")
        plan_report.plot(plan, out / "plan.png")
        say(plan_report.format_table(plan, top=8))

        def edge_only(encoding):
            return plan.best_of(lambda d: d.placement.where == EDGE and d.placement.encoding == encoding and d.tiles is None)
        chosen = {"tlcut's choice": plan.best, "best with TL (ScissionLite)": plan.best_tl,
                  "best without TL (Scission)": plan.best_plain, "device only": plan.device_only,
                  "edge only, float32": edge_only("raw"), "edge only, uint8": edge_only("uint8"),
                  "edge only, JPEG": edge_only("jpeg")}
        chosen = {k: v for k, v in chosen.items() if v is not None}  # the privacy constraint removes edge only
        # 5. compile the halves of the chosen cuts -------------------------------------------------
        cut_ids = sorted({c.placement.cut for c in chosen.values() if c.placement.cut is not None})
        step(5, f"compile cuts {cut_ids}")
        compile_cuts(b, [b.cuts[i] for i in cut_ids], tl="both")
        # 6. serve and run -------------------------------------------------------------------------
        step(6, f"serve on the edge, run {len(chosen)} placements x {requests} requests on the device")
        h.serve_cuts(cut_ids, log=out / "edge.log")
        runs = h.run_all({label: c.placement for label, c in chosen.items()}, out,
                         say=lambda label, pl: say(f"[demo 6/{STEPS}]   {label}: {pl.label}"))
    # 7. the table -------------------------------------------------------------------------------
    step(7, "summary")
    rows = []
    for label, c in chosen.items():
        s = runs[label]["summary"]
        measured = s["total_ms"]["median"]
        rows.append({"placement": label, "choice": c.label, "layer": c.layer, "predicted_ms": c.total_ms,
                     "measured_ms": measured, "measured_p90_ms": s["total_ms"]["p90"],
                     "error_pct": 100 * (measured - c.total_ms) / c.total_ms,
                     "payload_bytes": c.upload_bytes, "measured_device_ms": s["device_ms"]["median"],
                     "measured_transfer_ms": s["transfer_ms"]["median"], "measured_edge_ms": s["edge_ms"]["median"],
                     "predicted_components_ms": c.components_ms, "requests": s["requests"]})
    by = {r["placement"]: r for r in rows}
    tl, plain, devo = by.get("best with TL (ScissionLite)"), by.get("best without TL (Scission)"), by["device only"]
    speed = {}
    if tl:
        speed["tl_vs_device_measured"] = devo["measured_ms"] / tl["measured_ms"]
        speed["tl_vs_device_predicted"] = devo["predicted_ms"] / tl["predicted_ms"]
        if plain:
            speed["tl_vs_plain_measured"] = plain["measured_ms"] / tl["measured_ms"]
            speed["tl_vs_plain_predicted"] = plain["predicted_ms"] / tl["predicted_ms"]
    choice = by["tlcut's choice"]
    speed["choice_vs"] = {x["placement"]: x["measured_ms"] / choice["measured_ms"] for x in rows if x is not choice}
    result = {
        "model": b.name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "testbed": {"bandwidth_mbps": bandwidth, "latency_ms": latency, "latency_method": tb.state.delay_method,
                    "device_quota_cpus": device_quota, "device_cpus": cfg.device_cpus, "edge_cpus": cfg.edge_cpus,
                    "emulation": tb.kind, "described": tb.describe()},
        "machine": dev["machine"], "requests_per_plan": requests, "min_cut": min_cut, "rows": rows, "speedups": speed,
        "images": images or "random tensors (elpv-dataset not installed, or the input is not an image)",
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(out / "summary.json", result)
    table = format_summary(result)
    (out / "summary.md").write_text(table + "\n")
    say(table)
    say(f"[demo] results in {out}/ (summary.md, summary.json, plan.png, plan.json, profiles, runs) "
        f"in {result['seconds']:.0f} s")
    return result


STEPS = 7


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
    """Make the results folder; (start time, the step printer both demos number their steps with)."""
    out.mkdir(parents=True, exist_ok=True)
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


def format_summary(r: dict) -> str:
    t = r["testbed"]
    lines = [f"# tlcut demo: {r['model']}", "",
             f"Emulation: {t['described']}. {r['requests_per_plan']} timed requests per placement, "
             f"inputs: {r.get('images', 'random tensors')}. {r['date']}."
             + (f" Privacy constraint: no cut before {r['min_cut']} (edge only excluded)." if r.get("min_cut") is not None else ""),
             "",
             "| placement | choice | payload (bytes) | predicted median (ms) | measured median (ms) | error | measured p90 (ms) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['placement']} | {x['choice']} ({x['layer'] or '-'}) | {x['payload_bytes']} | {x['predicted_ms']:.1f} | "
                     f"{x['measured_ms']:.1f} | {x['error_pct']:+.1f}% | {x['measured_p90_ms']:.1f} |")
    s = r["speedups"]
    lines.append("")
    if "tl_vs_plain_measured" in s:
        lines.append(f"TL over no-TL (Scission): {s['tl_vs_plain_measured']:.2f}x measured, {s['tl_vs_plain_predicted']:.2f}x predicted.")
    if "tl_vs_device_measured" in s:
        lines.append(f"TL over device only: {s['tl_vs_device_measured']:.2f}x measured, {s['tl_vs_device_predicted']:.2f}x predicted.")
    if s.get("choice_vs"):
        choice = next(x for x in r["rows"] if x["placement"] == "tlcut's choice")
        lines.append(f"tlcut's choice ({choice['choice']}), measured median against each (>1: the choice is faster): "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in s["choice_vs"].items()) + ".")
    return "\n".join(lines)

