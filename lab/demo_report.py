"""What `tlcut demo` runs and says: the rows (tlcut's choice, each baseline on ONNX Runtime float32
and on its placement's best engine), the cuts worth int8 halves, the summary table and the one
sentence that says why the winner wins, from the measured components."""

from __future__ import annotations

from tlcut.placement import DEVICE, EDGE, SPLIT

CHOICE = "tlcut's choice"
PAPER = "ONNX Runtime float32"
#: The baselines: (name, which placements it takes), each sending what the paper's choice sends.
BASELINES = (
    ("Scission (best without TL)", lambda p: p.where == SPLIT and not p.tl and p.encoding == "raw"),
    ("ScissionLite (best with TL)", lambda p: p.where == SPLIT and p.tl and p.encoding == "raw"),
    ("device only", lambda p: p.where == DEVICE),
    ("edge only, float32", lambda p: p.where == EDGE and p.encoding == "raw"),
    ("edge only, uint8", lambda p: p.where == EDGE and p.encoding == "uint8"),
    ("edge only, JPEG", lambda p: p.where == EDGE and p.encoding == "jpeg"),
)


def is_paper_engine(e) -> bool:
    """ONNX Runtime float32, or the one engine an old single-configuration profile held."""
    return e.backend in (None, "onnxrt") and (e.precision or "float32") == "float32"


def engine_words(d, side: str) -> str | None:
    """``openvino int8``: the engine that runs ``d``'s part on ``side``; None where that side runs nothing."""
    e = d.engines_used.get(side)
    return None if e is None else e.words()


def rows_to_run(plan) -> dict:
    """{row label: Deployment}: tlcut's choice, then each baseline on ONNX Runtime float32 (the
    paper's engine picks the placement) and the same placement on its best engine. A baseline
    the constraints rule out (edge only under --min-cut) is left out."""
    rows = {CHOICE: plan.best}
    for name, pred in BASELINES:
        paper = plan.best_of(lambda d: d.tiles is None and pred(d.placement)
                             and all(is_paper_engine(e) for e in d.engines_used.values()))
        placement = paper.placement if paper else None
        best = plan.best_of(lambda d: d.tiles is None and (d.placement == placement if placement else pred(d.placement)))
        if paper:
            rows[f"{name}, {PAPER}"] = paper
        if best:
            rows[f"{name}, best engine"] = best
    return rows


def int8_cuts(plan, min_cut: int | None, least: int = 2, most: int = 3) -> list[int]:
    """The cuts worth int8 halves, from a float32 plan: ``min_cut`` where given, the best with the
    TL and without, then the next best split cuts until there are ``least`` (the best with and
    without the TL are often one cut); at most ``most``, as int8 compiles take minutes. The whole
    int8 model comes with any of them, for device only and edge only."""
    splits = [d for d in plan.allowed if d.placement.where == SPLIT and d.tiles is None]
    out = [] if min_cut is None else [min_cut]
    for tl in (True, False):
        d = next((d for d in splits if d.placement.tl == tl), None)
        if d is not None:
            out.append(d.placement.cut)
    out = list(dict.fromkeys(out))
    for d in splits:
        if len(out) >= least:
            break
        if d.placement.cut not in out:
            out.append(d.placement.cut)
    return out[:most]


def crosses(bundle, d) -> str | None:
    """What crosses the link, for the table: the cut's layer, or "input, NCHW" where the cut is
    only the input in another layout (a layer's name there would mislead)."""
    if d.placement.where != SPLIT:
        return None
    cut = bundle.cuts[d.placement.cut]
    shape = list(bundle.inputs[0].get("shape") or [])
    if shape and sorted(cut.shape) == sorted(shape) and list(cut.shape) != shape and cut.layout:
        return f"input, {cut.layout}"
    if shape and list(cut.shape) == shape and cut.index == 0:
        return "input"
    return d.layer


def summary_rows(bundle, rows: dict, runs: dict, fidelity: dict | None = None) -> list[dict]:
    """``fidelity``: {Deployment: its fidelity row, None where unknown} (demo.measure_fidelity)."""
    out, first = [], {}
    for label, d in rows.items():
        s = runs[label]["summary"]
        measured = s["total_ms"]["median"]
        r = {"placement": label, "choice": d.label_without_engines, "layer": crosses(bundle, d),
             "device_engine": engine_words(d, "device"), "edge_engine": engine_words(d, "edge"),
             "predicted_ms": d.total_ms, "measured_ms": measured, "measured_p90_ms": s["total_ms"]["p90"],
             "error_pct": 100 * (measured - d.total_ms) / d.total_ms, "payload_bytes": d.upload_bytes,
             "measured_device_ms": s["device_ms"]["median"], "measured_transfer_ms": s["transfer_ms"]["median"],
             "measured_edge_ms": s["edge_ms"]["median"], "predicted_components_ms": d.components_ms,
             "requests": s["requests"], "same_as": first.get(d),
             "fidelity": _fid((fidelity or {}).get(d))}
        first.setdefault(d, label)
        out.append(r)
    return out


def _fid(row: dict | None) -> dict | None:
    """What the table shows of a fidelity row: exact, measured (top-1 agreement, cosine) or estimated."""
    if not row:
        return None
    return {k: row[k] for k in ("status", "top1", "cosine", "cosine_min", "max_rel_error") if k in row} | (
        {"images": row["images"]["n"]} if isinstance(row.get("images"), dict) else {})


def fidelity_words(f: dict | None) -> str:
    if f is None:
        return "unknown"
    if f["status"] == "exact":
        return "exact"
    return f"{f['top1']:.0%} / {f['cosine']:.4f}" + (" (est.)" if f["status"] == "estimated" else "")


def speedups(rows: list[dict]) -> dict:
    by = {r["placement"]: r for r in rows}
    tl, plain = by.get(f"ScissionLite (best with TL), {PAPER}"), by.get(f"Scission (best without TL), {PAPER}")
    devo = by.get(f"device only, {PAPER}")
    s = {}
    if tl and devo:
        s["tl_vs_device_measured"] = devo["measured_ms"] / tl["measured_ms"]
        s["tl_vs_device_predicted"] = devo["predicted_ms"] / tl["predicted_ms"]
    if tl and plain:
        s["tl_vs_plain_measured"] = plain["measured_ms"] / tl["measured_ms"]
        s["tl_vs_plain_predicted"] = plain["predicted_ms"] / tl["predicted_ms"]
    choice = by[CHOICE]
    s["choice_vs"] = {x["placement"]: x["measured_ms"] / choice["measured_ms"] for x in rows
                      if x is not choice and x["same_as"] is None}
    return s


def _parts(r: dict) -> str:
    return (f"device {r['measured_device_ms']:.1f} + transfer {r['measured_transfer_ms']:.1f} + edge "
            f"{r['measured_edge_ms']:.1f} ms")


def _engines(r: dict) -> str:
    return ", ".join(f"{side} {r[f'{side}_engine']}" for side in ("device", "edge") if r[f"{side}_engine"])


def why(rows: list[dict]) -> str:
    """One sentence: the winner against the fastest other row, component by component (measured)."""
    w = next(r for r in rows if r["placement"] == CHOICE)
    others = [r for r in rows if r is not w and r["same_as"] is None]
    if not others:
        return f"tlcut's choice ({w['choice']}; {_engines(w)}) is the only placement run."
    b = min(others, key=lambda r: r["measured_ms"])
    comps = ("device", "transfer", "edge")
    gain = {c: b[f"measured_{c}_ms"] - w[f"measured_{c}_ms"] for c in comps}
    head = (f"tlcut's choice ({w['choice']}; {_engines(w)}) measured {w['measured_ms']:.1f} ms ({_parts(w)}) against "
            f"the best baseline, {b['placement']} ({b['choice']}; {_engines(b)}), at {b['measured_ms']:.1f} ms ({_parts(b)})")
    if b["measured_ms"] < w["measured_ms"]:
        return head + (f": the baseline was {100 * (w['measured_ms'] / b['measured_ms'] - 1):.1f}% faster, though "
                       f"predicted {b['predicted_ms']:.1f} ms against the choice's {w['predicted_ms']:.1f} ms.")
    main = max(comps, key=lambda c: gain[c])
    cost = [f"{-gain[c]:.1f} ms more {c}" for c in comps if gain[c] < -0.5]
    return head + (f": it wins on {main} time, {gain[main]:.1f} ms less"
                   + (f", for {' and '.join(cost)}" if cost else "") + ".")


def placement_note(rows: list[dict]) -> str | None:
    """Said plainly where the winner does not split, and where it is lossy, how far it moved the answers."""
    w = next(r for r in rows if r["placement"] == CHOICE)
    notes = [n for n in (_where_note(w), _lossy_note(w)) if n]
    return " ".join(notes) or None


def _lossy_note(w: dict) -> str | None:
    f = w.get("fidelity")
    if f is None:
        return ("tlcut's choice is lossy (a lossy wire or int8 halves) and its fidelity is unknown: nothing "
                "measured it (no real images, or a model whose output does not move); plan with --min-fidelity "
                "or --max-accuracy-drop to rule such choices out.")
    if f["status"] == "exact":
        return None
    return (f"tlcut's choice is lossy: its top-1 class agrees with the float32 model's on {f['top1']:.1%} of "
            f"{f.get('images', 'the')} test images, mean cosine {f['cosine']:.4f}"
            + (" (estimated from each side's own row)" if f["status"] == "estimated" else "")
            + "; `tlcut plan --min-fidelity F` rules out anything below F.")


def _where_note(w: dict) -> str | None:
    if w["device_engine"] is None:
        return (f"The best plan does not split: the device sends the picture ({w['choice']}) and the edge runs the "
                "whole model.")
    if w["edge_engine"] is None:
        return "The best plan does not offload: the device runs the whole model."
    return None


def format_summary(r: dict) -> str:
    t = r["testbed"]
    lines = [f"# tlcut demo: {r['model']}", "",
             f"Emulation: {t['described']}. {r['requests_per_plan']} timed requests per placement, "
             f"inputs: {r.get('images', 'random tensors')}. {r['date']}."
             + (f" Privacy constraint: no cut before {r['min_cut']} (edge only excluded)." if r.get("min_cut") is not None else ""),
             "", f"Engine configurations searched: {r.get('engines_searched') or 'as benched'}."
             + (f" {r['int8']}" if r.get("int8") else ""), "",
             "| placement | choice | device engine | edge engine | payload (bytes) | predicted median (ms) | "
             "measured median (ms) | error | measured p90 (ms) | measured device / transfer / edge (ms) | "
             "fidelity: top-1 / cosine |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for x in r["rows"]:
        if x["same_as"]:
            own = x["placement"].endswith(", best engine") and x["same_as"] == x["placement"].replace(", best engine", f", {PAPER}")
            note = f"{PAPER} is its best engine" if own else f"the same as {x['same_as']}"
            lines.append(f"| {x['placement']} | {note} | | | | | | | | | |")
            continue
        lines.append(f"| {x['placement']} | {x['choice']} ({x['layer'] or '-'}) | {x['device_engine'] or '-'} | "
                     f"{x['edge_engine'] or '-'} | {x['payload_bytes']} | {x['predicted_ms']:.1f} | "
                     f"{x['measured_ms']:.1f} | {x['error_pct']:+.1f}% | {x['measured_p90_ms']:.1f} | "
                     f"{x['measured_device_ms']:.1f} / {x['measured_transfer_ms']:.1f} / {x['measured_edge_ms']:.1f} | "
                     f"{fidelity_words(x.get('fidelity'))} |")
    s = r["speedups"]
    lines += ["", "Fidelity: agreement with the float32 model on the same test images, without labels (`tlcut "
              "fidelity`): the share whose top-1 class is the float32 model's, and the mean cosine of the logits; "
              "exact where nothing lossy runs; (est.) the worse of the two sides' rows where their engines differ. "
              "Random weights give near-tied classes, so top-1 agreement is a harsh test here.", r["why"]]
    if r.get("placement_note"):
        lines.append(r["placement_note"])
    if "tl_vs_plain_measured" in s:
        lines.append(f"TL over no-TL on {PAPER} (ScissionLite over Scission): {s['tl_vs_plain_measured']:.2f}x measured, "
                     f"{s['tl_vs_plain_predicted']:.2f}x predicted.")
    if "tl_vs_device_measured" in s:
        lines.append(f"TL over device only on {PAPER}: {s['tl_vs_device_measured']:.2f}x measured, "
                     f"{s['tl_vs_device_predicted']:.2f}x predicted.")
    if s.get("choice_vs"):
        lines.append("tlcut's choice, measured median against each (>1: the choice is faster): "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in s["choice_vs"].items()) + ".")
    return "\n".join(lines)
