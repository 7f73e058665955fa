"""A picture of a run over time: per-request latency, the placement used, the link estimate and,
where a trace was replayed, the link as it really was."""

from __future__ import annotations

from pathlib import Path

from tlcut.errors import TlcutError


def plot(records: list[dict], path, trace=None, title: str = "") -> None:
    """Three stacked panels on one time axis: latency (coloured by placement), the placement, and
    the link rate (the trace's, and the device's estimate)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("a timeline needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    if not records or "t_s" not in records[0]:
        raise TlcutError("a timeline needs an adaptive run's records (tlcut run --adapt)")
    t = [r["t_s"] for r in records]
    labels = list(dict.fromkeys(r["placement"] for r in records))
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 7), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 1.2, 2]})
    for lab in labels:
        pts = [(r["t_s"], r["total_ms"]) for r in records if r["placement"] == lab]
        ax1.scatter(*zip(*pts), s=8, color=colours[lab], label=lab)
    ax1.set_ylabel("latency (ms)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=7, loc="upper right")
    ax2.scatter(t, [labels.index(r["placement"]) for r in records], s=6,
                c=[colours[r["placement"]] for r in records])
    ax2.set_yticks(range(len(labels)), labels, fontsize=7)
    ax2.set_ylabel("placement")
    ax3.plot(t, [r.get("link_mbps_estimate") for r in records], color="k", lw=1, label="device's estimate")
    if trace:
        xs, ys = [], []
        for a, b in zip(trace, trace[1:] + [None]):
            xs += [a.t_s, b.t_s if b else max(t)]
            ys += [a.mbps, a.mbps]
        ax3.plot(xs, ys, color="tab:red", lw=1.5, label="trace")
    ax3.set_ylabel("uplink (Mbit/s)")
    ax3.set_xlabel("time (s)")
    ax3.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
