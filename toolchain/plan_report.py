"""What `tlcut plan` prints and draws: the ranking as a table, the stacked-latency plot, the tiers table."""

from __future__ import annotations

from pathlib import Path

from tlcut.deployment import Plan, TierPlan
from tlcut.errors import TlcutError
from tlcut.placement import SPLIT
from tlcut.toolchain.plan import Constraints, describe_constraints


UNMEASURED = ("?: not measured. `tlcut eval BUNDLE --cut K --encoding E` records accuracy on the test split,\n"
              "   `tlcut fidelity BUNDLE` agreement with float32 without labels; `tlcut plan --accuracy BUNDLE` reads both")


def format_table(result: Plan, top: int = 10) -> str:
    net = result.network
    lines = [f"{result.model}: uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms, "
             f"downlink {net['down_mbps']:g} Mbit/s (medians, ms)"]
    hdr = ("rank", "placement", "layer", "upload KiB", "device", "network", "edge", "total", "frames/s", "acc. drop")
    rows = [hdr]
    shown = result.allowed[:top]
    for i, c in enumerate(shown, 1):
        comp = c.components_ms
        netms = comp["latency"] + comp["transfer"] + comp["reply"] + comp["deserialize"]
        edge = comp["edge"] + comp["edge_tl"]
        drop = c.accuracy_drop_pts
        rows.append((str(i), c.label, c.layer or "-", f"{c.upload_bytes / 1024:.1f}", f"{c.device_ms:.2f}",
                     f"{netms:.2f}", f"{edge:.2f}", f"{c.total_ms:.2f}", f"{c.throughput_fps:.1f}",
                     "?" if drop is None else f"{drop:+.2f} pt"))
    w = [max(len(r[k]) for r in rows) for k in range(len(hdr))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[k].rjust(w[k]) if k in (0, 3, 4, 5, 6, 7, 8, 9) else r[k].ljust(w[k]) for k in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    if any(c.accuracy_drop_pts is None for c in shown):
        lines.append(UNMEASURED)
    b = result.best
    if result.objective == "throughput":
        lines.append(f"best for throughput: {b.label}, {b.throughput_fps:.1f} frames/s pipelined (bottleneck: "
                     f"{b.bottleneck}, {b.stages_ms[b.bottleneck]:.2f} ms), {b.total_ms:.2f} ms a frame")
    lines.append(f"best: {b.label} ({b.layer or '-'}), {b.total_ms:.2f} ms predicted; "
                 f"{result.speedup_vs_device:.2f}x faster than device only ({result.device_only.total_ms:.2f} ms)")
    lines += _tl_worth(result)
    skipped = sum(not c.allowed for c in result.ranking)
    if skipped:
        why = describe_constraints(Constraints(**result.constraints))
        lines.append(f"{skipped} candidates excluded by the constraints ({why})")
    return "\n".join(lines)


def _faster(tl, plain) -> str:
    r = plain.total_ms / tl.total_ms
    return f"{r:.2f}x faster than" if r >= 1 else f"{1 / r:.2f}x slower than"


def _tl_worth(result: Plan) -> list[str]:
    """What the TL is worth, over the same candidates the table ranks; then, where it differs, the
    paper's comparison over a float32 wire, which the demo and the benchmarks run."""
    out = []
    tl, plain = result.best_with_tl, result.best_without_tl
    if tl and plain:
        out.append(f"best with TL, {tl.label} ({tl.total_ms:.2f} ms), is {_faster(tl, plain)} the best without, "
                   f"{plain.label} ({plain.total_ms:.2f} ms), both as ranked above")
    ftl, fplain = result.best_tl, result.best_plain
    if ftl and fplain and (ftl, fplain) != (tl, plain):
        out.append(f"splits on a float32 wire (ScissionLite against Scission): {ftl.label} ({ftl.total_ms:.2f} ms) "
                   f"is {_faster(ftl, fplain)} {fplain.label} ({fplain.total_ms:.2f} ms)")
    return out


EXCLUDED = "0.75"  # what the constraints exclude is drawn hollow in this grey, never as a candidate
MARKERS = "os^Dvx*+"
# one colour per wire encoding: the splits in one set, the input sent whole (edge only) in another
SPLIT_COLOURS = {"raw": "tab:blue", "float16": "tab:orange", "int8": "tab:green", "int8+zstd": "tab:brown",
                 "int4+zstd": "tab:pink"}
EDGE_COLOURS = {"raw": "tab:purple", "uint8": "tab:red", "jpeg": "tab:olive"}


def flat_style(c) -> tuple[str, str]:
    """One colour and line style per kind of placement that does not split, the same in every plot:
    device only black dashed, edge only one colour per input encoding, dotted."""
    if c.placement.where != SPLIT and c.placement.offloads:
        return EDGE_COLOURS.get(c.placement.encoding, "tab:cyan"), ":"
    return "k", "--"


def _flat(result: Plan) -> list:
    """Each placement that does not split once: its best-ranked candidate (one line each)."""
    seen, out = set(), []
    for c in result.ranking:
        key = (c.placement, c.tiles is not None)
        if c.placement.where != SPLIT and key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _hline(ax, c, lw=1.2) -> None:
    color, ls = flat_style(c) if c.allowed else (EXCLUDED, ":")
    ax.axhline(c.total_ms, color=color, ls=ls, lw=lw, label=c.label + ("" if c.allowed else " (excluded)"))


def _bars(ax, rows, stacks) -> None:
    """Stacked components of each allowed cut; an excluded cut only as a hollow grey outline."""
    ok = [c for c in rows if c.allowed]
    bottom = [0.0] * len(ok)
    for label, keys, color in stacks:
        h = [sum(c.components_ms[k] for k in keys) for c in ok]
        ax.bar([c.placement.cut for c in ok], h, bottom=bottom, color=color, label=label, width=0.85)
        bottom = [b + v for b, v in zip(bottom, h)]
    out = [c for c in rows if not c.allowed]
    if out:
        ax.bar([c.placement.cut for c in out], [c.total_ms for c in out], width=0.85, fill=False,
               edgecolor=EXCLUDED, hatch="//", label="excluded by the constraints")


def _same_as(series: dict) -> dict:
    """For each series, the names of the others with exactly its totals (drawn over one another)."""
    key = {n: tuple((c.placement.cut, round(c.total_ms, 6)) for c in rows) for n, rows in series.items()}
    return {n: [m for m in series if m != n and key[m] == key[n]] for n in series}


def plot(result: Plan, path) -> None:
    """Predicted latency per cut, stacked by component, without and with the TL (the paper's
    Figures 5 and 6), and below them every option at once: each cut in each wire encoding, against
    the edge-only ways to send the input (float32, uint8, JPEG) and device only. What the
    constraints exclude is hollow grey, so that nothing below the best marker looks like a candidate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("--plot needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    splits = [c for c in result.ranking if c.placement.where == SPLIT]
    # one engine pair per cut: the one the best split runs (the Pareto plot shows the engines)
    pair = next(((c.device, c.edge) for c in result.allowed if c.placement.where == SPLIT),
                next(((c.device, c.edge) for c in splits), None))
    splits = [c for c in splits if (c.device, c.edge) == pair]
    cuts = [c for c in splits if c.placement.encoding == "raw"]
    groups = {"no TL (Scission)": sorted((c for c in cuts if not c.placement.tl), key=lambda c: c.placement.cut),
              "with TL (ScissionLite)": sorted((c for c in cuts if c.placement.tl), key=lambda c: c.placement.cut)}
    stacks = [("device", ("device",), "#4c72b0"), ("TL", ("device_tl", "edge_tl"), "#dd8452"),
              ("(de)serialize", ("serialize", "deserialize"), "#937860"), ("latency", ("latency", "reply"), "#8c8c8c"),
              ("transfer", ("transfer",), "#c44e52"), ("edge", ("edge",), "#55a868")]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(cuts) * 0.06 + 4) + 3.5, 10), sharex=True)
    ymax = max((c.total_ms for c in cuts), default=1.0)
    flat = _flat(result)
    for ax, (title, rows) in zip(axes, groups.items()):
        _bars(ax, rows, stacks)
        for d in (result.device_only, result.edge_only):
            if d is not None:
                _hline(ax, d, lw=1)
        ok = [c for c in rows if c.allowed]
        if ok:
            b = min(ok, key=lambda c: c.total_ms)
            ax.plot([b.placement.cut], [b.total_ms], marker="v", color="k", ms=8, ls="none", label=f"best: {b.label}")
        ax.set_title(f"{result.model}: {title}")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_ylim(0, ymax * 1.1)
    ax = axes[2]
    series: dict[str, list] = {}
    for c in splits:
        series.setdefault(("TL" if c.placement.tl else "no TL") + ", " + c.placement.encoding, []).append(c)
    for rows in series.values():
        rows.sort(key=lambda c: c.placement.cut)
    same, excluded = _same_as(series), False
    for k, (name, rows) in enumerate(sorted(series.items())):
        enc = rows[0].placement.encoding
        e = list(SPLIT_COLOURS).index(enc) if enc in SPLIT_COLOURS else len(SPLIT_COLOURS) + k
        ls = "--" if name.startswith("no TL") else "-"
        out = [c for c in rows if not c.allowed]
        if out:
            ax.plot([c.placement.cut for c in out], [c.total_ms for c in out], lw=0.8, ls=ls, color=EXCLUDED,
                    marker=MARKERS[e % len(MARKERS)], mfc="none", ms=4, label=None if excluded else "excluded by the constraints")
            excluded = True
        ok = [c for c in rows if c.allowed]
        if ok:
            note = f" (same totals as {', '.join(same[name])})" if same[name] else ""
            # markers at staggered cuts, so that a line drawn over another still shows its own
            ax.plot([c.placement.cut for c in ok], [c.total_ms for c in ok], lw=1.2, ls=ls, color=SPLIT_COLOURS.get(enc, "tab:gray"),
                    marker=MARKERS[e % len(MARKERS)], ms=4, mfc="none", markevery=(k % 3, 3) if len(ok) > 12 else None,
                    label=f"cut K, {name}{note}")
    for c in flat:
        _hline(ax, c, lw=1.4)
    b = result.best
    ax.plot([b.placement.cut if b.placement.cut is not None else 0], [b.total_ms], marker="v", color="k", ms=9, ls="none",
            label=f"best: {b.label}")
    ax.set_title("every placement: each cut in each wire encoding, and the input sent whole")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_ylim(0, min(ymax, max((c.total_ms for c in flat), default=ymax)) * 1.1)
    axes[-1].set_xlabel("cut index")
    for a in axes:  # beside the plot, where it hides no bar or line
        a.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    net = result.network
    fig.suptitle(f"uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms", fontsize=9)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def format_tiers(result: TierPlan, top: int = 10) -> str:
    hops = ", ".join(f"{k} {v['up_mbps']:g} Mbit/s {v['rtt_ms']:g} ms" for k, v in result.hops.items())
    lines = [f"{result.model}: {result.candidates} placements over three tiers ({hops}); medians, ms",
             f"{'rank':>4}  {'hosts':<22} {'device':>7} {'edge':>7} {'cloud':>7} {'total':>8}  placement"]
    for i, c in enumerate(result.ranking[:top], 1):
        hosts = "/".join(c.hosts.values())
        t = c.tiers_ms
        lines.append(f"{i:>4}  {hosts:<22} {t['device']:7.2f} {t['edge']:7.2f} {t['cloud']:7.2f} {c.total_ms:8.2f}  {c.label}")
    b, two = result.best, result.best_two_tiers
    lines.append(f"best: {b.label} on {'/'.join(b.hosts.values())}, {b.total_ms:.2f} ms predicted")
    if two and two is not b:
        lines.append(f"best with two tiers: {two.label}, {two.total_ms:.2f} ms")
    if result.excluded:
        lines.append(f"{result.excluded} placements excluded by the constraints")
    return "\n".join(lines)


def _fidelity_words(c) -> str:
    return "?" if c.fidelity is None else f"{c.fidelity:.3f}"


def format_pareto(result: Plan) -> str:
    """The non-dominated candidates (``plan --pareto``), fastest first: what each trades for its latency."""
    front = result.pareto or []
    lines = [f"{result.model}: {len(front)} candidates on the Pareto front of {len(result.allowed)} allowed "
             "(latency, upload bytes, device time, accuracy drop, fidelity; medians, ms)"]
    hdr = ("deployment", "total", "upload KiB", "device", "acc. drop", "fidelity")
    rows = [hdr] + [(c.label, f"{c.total_ms:.2f}", f"{c.upload_bytes / 1024:.1f}", f"{c.device_ms:.2f}",
                     "?" if c.accuracy_drop_pts is None else f"{c.accuracy_drop_pts:+.2f} pt", _fidelity_words(c))
                    for c in sorted(front, key=lambda c: c.total_ms)]
    w = [max(len(r[k]) for r in rows) for k in range(len(hdr))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[k].ljust(w[k]) if k == 0 else r[k].rjust(w[k]) for k in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    if any(c.accuracy_drop_pts is None or c.fidelity is None for c in front):
        lines.append(UNMEASURED)
    return "\n".join(lines)


def plot_pareto(result: Plan, path) -> None:
    """Every allowed candidate's latency against its upload bytes, coloured by device time, a
    triangle where lossy; the Pareto front boxed, the fastest ten of it labelled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("--plot needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    allowed, front = result.allowed, sorted(result.pareto or [], key=lambda c: c.total_ms)
    fig, ax = plt.subplots(figsize=(10, 6.5))
    vmax = max(c.device_ms for c in allowed) or 1.0
    for lossless, marker in ((True, "o"), (False, "^")):
        cs = [c for c in allowed if bool(c.lossless) == lossless]
        if cs:
            sc = ax.scatter([c.total_ms for c in cs], [c.upload_bytes / 1024 + 0.01 for c in cs], c=[c.device_ms for c in cs],
                            cmap="viridis", vmin=0, vmax=vmax, marker=marker, s=16, alpha=0.6,
                            label="lossless" if lossless else "lossy (wire encoding, TL or int8 engine)")
    fig.colorbar(sc, ax=ax, label="device time (ms)")
    # the front is over five objectives, so no line: a front member may sit above another here
    ax.plot([c.total_ms for c in front], [c.upload_bytes / 1024 + 0.01 for c in front], "ks", ms=7, mfc="none",
            label="Pareto front (latency, upload, device time, accuracy, fidelity)")
    for c in front[:10]:
        ax.annotate(c.label, (c.total_ms, c.upload_bytes / 1024 + 0.01), fontsize=6, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("upload per request (KiB)")
    net = result.network
    ax.set_title(f"{result.model}: every allowed deployment, uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms",
                 fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
