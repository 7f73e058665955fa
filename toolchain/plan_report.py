"""What `tlcut plan` prints and draws: the ranking as a table, the stacked-latency plot, the tiers table."""

from __future__ import annotations

from pathlib import Path

from tlcut.deployment import Plan, TierPlan
from tlcut.errors import TlcutError
from tlcut.placement import SPLIT
from tlcut.toolchain.plan import Constraints, describe_constraints


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
                     "unknown" if drop is None else f"{drop:+.2f} pt"))
    w = [max(len(r[k]) for r in rows) for k in range(len(hdr))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[k].rjust(w[k]) if k in (0, 3, 4, 5, 6, 7, 8, 9) else r[k].ljust(w[k]) for k in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    b = result.best
    if result.objective == "throughput":
        lines.append(f"best for throughput: {b.label}, {b.throughput_fps:.1f} frames/s pipelined (bottleneck: "
                     f"{b.bottleneck}, {b.stages_ms[b.bottleneck]:.2f} ms), {b.total_ms:.2f} ms a frame")
    lines.append(f"best: {b.label} ({b.layer or '-'}), {b.total_ms:.2f} ms predicted; "
                 f"{result.speedup_vs_device:.2f}x faster than device only ({result.device_only.total_ms:.2f} ms)")
    if result.speedup_tl_vs_plain:
        lines.append(f"best with TL {result.best_tl.label} is {result.speedup_tl_vs_plain:.2f}x faster than "
                     f"the best without ({result.best_plain.label}, {result.best_plain.total_ms:.2f} ms)")
    skipped = sum(not c.allowed for c in result.ranking)
    if skipped:
        why = describe_constraints(Constraints(**result.constraints))
        lines.append(f"{skipped} candidates excluded by the constraints ({why})")
    return "\n".join(lines)


def plot(result: Plan, path) -> None:
    """Predicted latency per cut, stacked by component, without and with the TL (the paper's
    Figures 5 and 6), and below them every option at once: each cut in each wire encoding, against
    the edge-only ways to send the input (float32, uint8, JPEG) and device only."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("--plot needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    splits = [c for c in result.ranking if c.placement.where == SPLIT]
    # one engine pair per cut: the one the best split runs (the Pareto plot shows the engines)
    pair = next(((c.device, c.edge) for c in result.allowed if c.placement.where == SPLIT), None)
    splits = [c for c in splits if (c.device, c.edge) == pair]
    cuts = [c for c in splits if c.placement.encoding == "raw"]
    groups = {"no TL (Scission)": sorted((c for c in cuts if not c.placement.tl), key=lambda c: c.placement.cut),
              "with TL (ScissionTL)": sorted((c for c in cuts if c.placement.tl), key=lambda c: c.placement.cut)}
    stacks = [("device", ("device",), "#4c72b0"), ("TL", ("device_tl", "edge_tl"), "#dd8452"),
              ("(de)serialize", ("serialize", "deserialize"), "#937860"), ("latency", ("latency", "reply"), "#8c8c8c"),
              ("transfer", ("transfer",), "#c44e52"), ("edge", ("edge",), "#55a868")]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(cuts) * 0.06 + 4), 10), sharex=True)
    ymax = max(c.total_ms for c in cuts)
    for ax, (title, rows) in zip(axes, groups.items()):
        x = [c.placement.cut for c in rows]
        bottom = [0.0] * len(rows)
        for label, keys, color in stacks:
            h = [sum(c.components_ms[k] for k in keys) for c in rows]
            ax.bar(x, h, bottom=bottom, color=color, label=label, width=0.85)
            bottom = [b + v for b, v in zip(bottom, h)]
        for d, style in ((result.device_only, "--"), (result.edge_only, ":")):
            ax.axhline(d.total_ms, color="k", ls=style, lw=1, label=d.label)
        if rows:
            b = min(rows, key=lambda c: c.total_ms if c.allowed else float("inf"))
            ax.plot([b.placement.cut], [b.total_ms], marker="v", color="k", ms=8, ls="none", label=f"best: {b.label}")
        ax.set_title(f"{result.model}: {title}")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_ylim(0, ymax * 1.1)
    ax = axes[2]
    series: dict[str, list] = {}
    for c in splits:
        series.setdefault(("TL" if c.placement.tl else "no TL") + ", " + c.placement.encoding, []).append(c)
    for name, rows in sorted(series.items()):
        rows.sort(key=lambda c: c.placement.cut)
        ax.plot([c.placement.cut for c in rows], [c.total_ms for c in rows], lw=1.2, ls="-" if "no TL" not in name else "--",
                label=f"cut K, {name}")
    flat = [c for c in result.ranking if c.placement.where != SPLIT]
    for c, color in zip(flat, plt.cm.Dark2.colors):
        ax.axhline(c.total_ms, color=color, ls=":", lw=1.4, label=c.label)
    b = result.best
    ax.plot([b.placement.cut if b.placement.cut is not None else 0], [b.total_ms], marker="v", color="k", ms=9, ls="none",
            label=f"best: {b.label}")
    ax.set_title("every placement: each cut in each wire encoding, and the input sent whole")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_ylim(0, min(ymax, max(c.total_ms for c in flat)) * 1.1)
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1].set_xlabel("cut index")
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
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
    return "unknown" if c.fidelity is None else f"{c.fidelity:.3f}"


def format_pareto(result: Plan) -> str:
    """The non-dominated candidates (``plan --pareto``), fastest first: what each trades for its latency."""
    front = result.pareto or []
    lines = [f"{result.model}: {len(front)} candidates on the Pareto front of {len(result.allowed)} allowed "
             "(latency, upload bytes, device time, accuracy drop, fidelity; medians, ms)"]
    hdr = ("deployment", "total", "upload KiB", "device", "acc. drop", "fidelity")
    rows = [hdr] + [(c.label, f"{c.total_ms:.2f}", f"{c.upload_bytes / 1024:.1f}", f"{c.device_ms:.2f}",
                     "unknown" if c.accuracy_drop_pts is None else f"{c.accuracy_drop_pts:+.2f} pt", _fidelity_words(c))
                    for c in sorted(front, key=lambda c: c.total_ms)]
    w = [max(len(r[k]) for r in rows) for k in range(len(hdr))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[k].ljust(w[k]) if k == 0 else r[k].rjust(w[k]) for k in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
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
