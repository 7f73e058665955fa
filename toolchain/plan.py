"""`tlcut plan`: rank every way to run the model over the link (ScissionTL's ranking).

For each cut, with and without the TL, the predicted end-to-end latency of one request is::

    device head + DeviceTL + serialize                      (device profile)
  + round-trip latency + upload bytes / uplink bandwidth    (network)
  + deserialize + EdgeTL + edge tail                        (edge profile)
  + serialize result + result bytes / downlink + deserialize (the reply)

plus the two plans without a cut: everything on the device, and everything on the edge (the
input image crosses). Upload bytes include the 80-byte wire header, and the link carries them with
TCP/IP framing (1514 bytes on the wire per 1448 of payload), which a shaper counts. Every figure is a median from
the profiles; the plan says so rather than pretending to percentiles it cannot add up.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tlcut.errors import TlcutError
from tlcut.placement import CUT_ENCODINGS, DEVICE, EDGE, SPLIT, TL_CHOICES, Placement
from tlcut.runtime import protocol
from tlcut.toolchain import bench

FORMAT = "tlcut-plan"
DEFAULT_BANDWIDTH_MBPS = 57.0  # the paper's 5G uplink
DEFAULT_LATENCY_MS = 28.0
COMPONENTS = ("device", "device_tl", "serialize", "latency", "transfer", "deserialize", "edge_tl", "edge", "reply")


#: Link bytes per payload byte for TCP over IPv4 with timestamps on Ethernet (MTU 1500): each
#: 1514-byte frame carries 1448 payload bytes. A shaper (tc tbf, a 5G uplink) counts the frames.
TCP_ETHERNET_OVERHEAD = 1514 / 1448


@dataclass
class Network:
    up_mbps: float
    rtt_ms: float
    down_mbps: float
    source: str = "flags"
    wire_overhead: float = TCP_ETHERNET_OVERHEAD

    def up_ms(self, nbytes: int) -> float:
        return nbytes * self.wire_overhead * 8 / (self.up_mbps * 1e6) * 1e3

    def down_ms(self, nbytes: int) -> float:
        return nbytes * self.wire_overhead * 8 / (self.down_mbps * 1e6) * 1e3


@dataclass
class Constraints:
    min_cut: int | None = None
    max_device_ms: float | None = None
    max_upload_bytes: int | None = None
    tl: str = "both"
    max_accuracy_drop: float | None = None  # points below device only, as `tlcut eval` measured
    max_latency_ms: float | None = None  # a bound on one frame's latency (with --objective throughput)


def network_from_args(bandwidth=None, latency=None, down_bandwidth=None, csv_path=None,
                      device_name="device", edge_name="edge", wire_overhead=None) -> Network:
    """Flags, or a Scission CSV (source,destination,ping_ms,bandwidth_mbps); flags override the CSV."""
    up, rtt, down, source = DEFAULT_BANDWIDTH_MBPS, DEFAULT_LATENCY_MS, None, "default (5G uplink)"
    if csv_path:
        rows = read_network_csv(csv_path)
        fwd = rows.get((device_name, edge_name))
        if fwd is None:
            pairs = ", ".join(f"{a}->{b}" for a, b in rows) or "none"
            raise TlcutError(f"'{csv_path}' has no row {device_name},{edge_name},...; it has {pairs} "
                             "(name the hosts with --device-name/--edge-name)")
        rtt, up = fwd
        back = rows.get((edge_name, device_name))
        down = back[1] if back else None
        source = str(csv_path)
    if bandwidth is not None:
        up, source = bandwidth, "flags"
    if latency is not None:
        rtt, source = latency, "flags"
    if down_bandwidth is not None:
        down = down_bandwidth
    if up <= 0:
        raise TlcutError(f"bandwidth must be positive, got {up} Mbit/s")
    if rtt < 0:
        raise TlcutError(f"latency cannot be negative, got {rtt} ms")
    if down is not None and down <= 0:
        raise TlcutError(f"downlink bandwidth must be positive, got {down} Mbit/s")
    if wire_overhead is not None and wire_overhead < 1:
        raise TlcutError(f"--wire-overhead is link bytes per payload byte and cannot be below 1, got {wire_overhead}")
    return Network(up_mbps=up, rtt_ms=rtt, down_mbps=down if down is not None else 10 * up, source=source,
                   wire_overhead=wire_overhead or TCP_ETHERNET_OVERHEAD)


def read_network_csv(path) -> dict[tuple[str, str], tuple[float, float]]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TlcutError(f"cannot read network file '{path}': {e.strerror}") from None
    rows = {}
    for n, rec in enumerate(csv.reader(text.splitlines()), 1):
        if not rec or rec[0].strip().startswith("#"):
            continue
        if n == 1 and not _is_number(rec[-1]):
            continue  # header
        if len(rec) != 4:
            raise TlcutError(f"{path}:{n}: expected source,destination,ping_ms,bandwidth_mbps, got {len(rec)} fields")
        try:
            ping, bw = float(rec[2]), float(rec[3])
        except ValueError:
            raise TlcutError(f"{path}:{n}: ping and bandwidth must be numbers, got {rec[2]!r}, {rec[3]!r}") from None
        rows[(rec[0].strip(), rec[1].strip())] = (ping, bw)
    if not rows:
        raise TlcutError(f"network file '{path}' has no rows; write source,destination,ping_ms,bandwidth_mbps")
    return rows


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_profile(path, role: str) -> dict:
    try:
        p = json.loads(Path(path).read_text())
    except OSError as e:
        raise TlcutError(f"cannot read profile '{path}': {e.strerror}; make it with `tlcut bench BUNDLE --role {role} -o {path}`") from None
    except ValueError:
        raise TlcutError(f"profile '{path}' is not JSON; make it with `tlcut bench BUNDLE --role {role} -o {path}`") from None
    if not isinstance(p, dict) or p.get("format") != bench.FORMAT:
        raise TlcutError(f"'{path}' is not a tlcut profile; make one with `tlcut bench BUNDLE --role {role} -o {path}`")
    if p.get("version") != bench.VERSION:
        raise TlcutError(f"profile '{path}' has version {p.get('version')}, this tlcut reads {bench.VERSION}; bench again")
    if p.get("role") != role:
        raise TlcutError(f"profile '{path}' was measured as the {p.get('role')}, but is given as --{role}")
    p["_path"] = str(path)
    return p


OBJECTIVES = ("latency", "throughput")


def plan(device: dict, edge: dict, net: Network, cons: Constraints | None = None,
         accuracy: dict | None = None, objective: str = "latency", tiles: list | None = None,
         tiles_link: Network | None = None) -> dict:
    """Every candidate with its predicted components; the best that meets the constraints.

    ``tiles`` (manifests of `tlcut tiles`) add, for every placement that sends what a tiles folder
    starts from, the same placement with that segment run as bands on the folder's nodes
    (``tiled_edge_ms``)."""
    cons = cons or Constraints()
    if device["model_sha256"] != edge["model_sha256"]:
        raise TlcutError(
            f"the profiles are of different models ({device['_path']}: {device['model']} {device['model_sha256'][:12]}, "
            f"{edge['_path']}: {edge['model']} {edge['model_sha256'][:12]}); bench both from the same bundle"
        )
    if len(device["cuts"]) != len(edge["cuts"]):
        raise TlcutError("the profiles list different cuts; bench both from the same bundle")
    n = len(device["cuts"])
    if cons.min_cut is not None and not 0 <= cons.min_cut < n:
        raise TlcutError(f"--min-cut {cons.min_cut} is outside the model's cuts 0..{n - 1}")
    if cons.tl not in TL_CHOICES:
        raise TlcutError(f"--tl must be one of {', '.join(TL_CHOICES)}, got '{cons.tl}'")

    hdr = protocol.HEADER.size
    out_bytes = edge["output"]["bytes"]
    reply_ms = edge["output"]["serialize"]["median"] + net.down_ms(out_bytes + hdr) + device["output"]["deserialize"]["median"]
    cands = []
    for d, e in zip(device["cuts"], edge["cuts"]):
        for tl in (False, True):
            if tl and not d["tl"]:
                continue
            sfx = "_tl" if tl else ""
            for enc in CUT_ENCODINGS:
                if enc == "raw":
                    ser, de = d["serialize" + sfx]["median"], e["deserialize" + sfx]["median"]
                    nbytes = d["tl_bytes"] if tl else d["bytes"]
                else:  # profiles from before encodings were benched simply offer none
                    dv, ev = d.get("encodings" + sfx, {}).get(enc), e.get("encodings" + sfx, {}).get(enc)
                    if not dv or not ev:
                        continue
                    ser, de, nbytes = dv["serialize"]["median"], ev["deserialize"]["median"], dv["bytes"]
                up = nbytes + hdr
                comp = {
                    "device": d["head"]["median"], "device_tl": d["device_tl"]["median"] if tl else 0.0,
                    "serialize": ser, "latency": net.rtt_ms, "transfer": net.up_ms(up), "deserialize": de,
                    "edge_tl": e["edge_tl"]["median"] if tl else 0.0, "edge": e["tail"]["median"], "reply": reply_ms,
                }
                cands.append(_cand(Placement(SPLIT, d["index"], tl, enc), d.get("layer"), up, comp))
    for p, nbytes, ser, de in _edge_only_options(device["input"], edge["input"]):
        up = nbytes + hdr
        cands.append(_cand(p, None, up, {
            "device": 0.0, "device_tl": 0.0, "serialize": ser, "latency": net.rtt_ms, "transfer": net.up_ms(up),
            "deserialize": de, "edge_tl": 0.0, "edge": edge["full"]["median"], "reply": reply_ms}))
    cands.append(_cand(Placement(DEVICE), None, 0, {**{k: 0.0 for k in COMPONENTS}, "device": device["full"]["median"]}))
    for t in tiles or []:
        if t.get("model_sha256") != edge["model_sha256"]:
            raise TlcutError(f"the tiles of {t.get('model')} are of another model than the profiles; run `tlcut tiles` on "
                             "the bundle the profiles were benched from")
        start = None if t["from"]["cut"] == "input" else int(t["from"]["cut"])
        pred = tiled_edge_ms(edge, t, tiles_link)
        for c in list(cands):
            # what the edge receives must be where the tiles start: the input, or cut A without the TL
            starts_here = (c["where"] == EDGE and start is None) or \
                (c["where"] == SPLIT and not c["tl"] and start is not None and c["cut"] == start)
            if not starts_here:
                continue
            comp = {**c["components_ms"], "edge": pred["total_ms"]}
            tc = _cand(Placement.from_json(c["placement"]), c["layer"], c["upload_bytes"], comp)
            tc["name"] = f"{c['name']}, tiles to cut {t['to']['cut']} on {len(t['bands'])} nodes"
            tc["tiles"] = {"folder": t.get("_path"), "to": t["to"]["cut"], "nodes": len(t["bands"]),
                           "weights": t["weights"], "predicted_ms": pred}
            cands.append(tc)

    _accuracy(cands, accuracy or {})
    for c in cands:
        c["allowed"], c["why_not"] = _allowed(c, cons)
    if objective not in OBJECTIVES:
        raise TlcutError(f"--objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
    key = (lambda c: c["total_ms"]) if objective == "latency" else (lambda c: (-c["throughput_fps"], c["total_ms"]))
    ranking = sorted(cands, key=key)
    allowed = [c for c in ranking if c["allowed"]]
    if not allowed:
        raise TlcutError("no plan meets the constraints (" + _describe(cons) + "); relax one of them")
    best = allowed[0]
    dev_only = next(c for c in cands if c["where"] == DEVICE)

    def best_of(pred):
        m = [c for c in allowed if pred(c)]
        return m[0] if m else None

    # the paper's static choices: ScissionLite (TL) and Scission (no TL), both sending float32
    best_tl = best_of(lambda c: c["tl"] and c["placement"]["encoding"] == "raw")
    best_plain = best_of(lambda c: c["where"] == SPLIT and not c["tl"] and c["placement"]["encoding"] == "raw")
    return {
        "format": FORMAT, "version": 1, "model": device["model"], "model_sha256": device["model_sha256"],
        "device_profile": device["_path"], "edge_profile": edge["_path"], "network": asdict(net),
        "constraints": asdict(cons), "statistic": "median", "objective": objective, "accuracy_source": (accuracy or {}).get("_source"),
        "best": best, "best_tl": best_tl, "best_plain": best_plain, "device_only": dev_only,
        "edge_only": next(c for c in cands if c["where"] == EDGE),
        "edge_only_best": best_of(lambda c: c["where"] == EDGE),
        "speedup_vs_device": dev_only["total_ms"] / best["total_ms"],
        "speedup_tl_vs_plain": (best_plain["total_ms"] / best_tl["total_ms"]) if best_tl and best_plain else None,
        "ranking": ranking,
    }


def tiled_edge_ms(edge: dict, tiles: dict, link: Network | None = None) -> dict:
    """The edge's compute when the segment of ``tiles`` runs as bands: the slowest band (its share of
    the segment's profiled time, halo recomputation included, over its node's speed, plus sending its
    rows and getting its output back over ``link``; None: nodes on the edge's host, nothing counted),
    then the tail after the segment. A node's weight in the tiles is its speed relative to the edge
    that was benched (1: as fast)."""
    from tlcut.toolchain.tiles import predict_tiled_ms

    n = len(edge["cuts"])
    a = -1 if tiles["from"]["cut"] == "input" else int(tiles["from"]["cut"])
    b = int(tiles["to"]["cut"])
    seg = _segment_ms(edge, a, b, n)
    bands = predict_tiled_ms(tiles["bands"], tiles["weights"], segment_ms=seg,
                             bandwidth_bps=link.up_mbps * 1e6 if link else None, latency_ms=link.rtt_ms if link else 0.0)
    tail = _segment_ms(edge, b, n, n)
    return {"segment_untiled_ms": seg, "bands_ms": bands["total_ms"], "slowest_band": bands["slowest"],
            "tail_ms": tail, "total_ms": bands["total_ms"] + tail, "per_band": bands["bands"]}


def _edge_only_options(dev_in: dict, edge_in: dict):
    """(placement, payload bytes, device encode ms, edge decode ms) for each way the input can cross:
    float32, and what the profiles measured of uint8 pixels and JPEG per quality (bytes: the device's images)."""
    yield Placement(EDGE), dev_in["bytes"], dev_in["serialize"]["median"], edge_in["deserialize"]["median"]
    theirs = {(e["encoding"], e["quality"]): e for e in edge_in.get("encodings", [])}
    for d in dev_in.get("encodings", []):
        e = theirs.get((d["encoding"], d["quality"]))
        if e:
            yield (Placement(EDGE, encoding=d["encoding"], quality=d["quality"]), d["bytes"], d["serialize"]["median"],
                   e["deserialize"]["median"])


def _cand(p: Placement, layer, upload, comp) -> dict:
    dev = comp["device"] + comp["device_tl"] + comp["serialize"]
    # With frames pipelined (`tlcut run --inflight`), each stage works on a different frame at once:
    # the rate is set by the slowest stage. The propagation delay is not a stage: it delays, it
    # does not limit the rate.
    stages = {"device": dev, "uplink": comp["transfer"], "edge": comp["deserialize"] + comp["edge_tl"] + comp["edge"],
              "reply": comp["reply"]}
    slowest = max(stages, key=stages.get)
    return {"name": p.label, "placement": p.to_json(), "where": p.where, "cut": p.cut, "layer": layer, "tl": p.tl,
            "upload_bytes": upload, "device_ms": dev, "components_ms": comp, "total_ms": sum(comp.values()),
            "stages_ms": stages, "bottleneck": slowest,
            "throughput_fps": 1e3 / stages[slowest] if stages[slowest] > 0 else float("inf")}


def _allowed(c: dict, cons: Constraints) -> tuple[bool, str | None]:
    if cons.tl == "on" and c["where"] == SPLIT and not c["tl"]:
        return False, "--tl on"
    if cons.tl == "off" and c["tl"]:
        return False, "--tl off"
    if cons.min_cut is not None and c["where"] != DEVICE:
        if c["cut"] is None or c["cut"] < cons.min_cut:
            return False, f"before --min-cut {cons.min_cut}"
    if cons.max_device_ms is not None and c["device_ms"] > cons.max_device_ms:
        return False, f"device {c['device_ms']:.1f} ms > --max-device-ms"
    if cons.max_upload_bytes is not None and c["upload_bytes"] > cons.max_upload_bytes:
        return False, f"uploads {c['upload_bytes']} B > --max-upload-bytes"
    if cons.max_latency_ms is not None and c["total_ms"] > cons.max_latency_ms:
        return False, f"latency {c['total_ms']:.1f} ms > --max-latency-ms"
    if cons.max_accuracy_drop is not None:
        if c["accuracy_drop_pts"] is None:
            return False, "accuracy unknown (measure it with `tlcut eval`)"
        if c["accuracy_drop_pts"] > cons.max_accuracy_drop:
            return False, f"accuracy {c['accuracy_drop_pts']:.2f} pt below device only > --max-accuracy-drop"
    return True, None


def _accuracy(cands: list[dict], measured: dict) -> None:
    """Each candidate's accuracy and drop against device only. Lossless placements (no TL; float32,
    or the uint8 pixels of a camera image) compute exactly what the whole model computes: a drop of
    0, known. The rest have what `tlcut eval` recorded in the bundle, or unknown: never assumed lossless."""
    base = (measured.get("device only") or {}).get("float32", {}).get("accuracy")
    for c in cands:
        lossless = Placement.from_json(c["placement"]).lossless
        acc = (measured.get(c["name"]) or {}).get("float32", {}).get("accuracy")
        if lossless and acc is None:
            acc = base
        c["lossless"] = lossless
        c["accuracy"] = acc
        c["accuracy_drop_pts"] = 0.0 if lossless else (100 * (base - acc) if acc is not None and base is not None else None)


def _describe(cons: Constraints) -> str:
    parts = [f"{k}={v}" for k, v in asdict(cons).items() if v is not None and not (k == "tl" and v == "both")]
    return ", ".join(parts) or "none"


def format_table(result: dict, top: int = 10) -> str:
    net = result["network"]
    lines = [f"{result['model']}: uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms, "
             f"downlink {net['down_mbps']:g} Mbit/s (medians, ms)"]
    hdr = ("rank", "placement", "layer", "upload KiB", "device", "network", "edge", "total", "frames/s", "acc. drop")
    rows = [hdr]
    shown = [c for c in result["ranking"] if c["allowed"]][:top]
    for i, c in enumerate(shown, 1):
        comp = c["components_ms"]
        netms = comp["latency"] + comp["transfer"] + comp["reply"] + comp["deserialize"]
        edge = comp["edge"] + comp["edge_tl"]
        drop = c.get("accuracy_drop_pts")
        rows.append((str(i), c["name"], c["layer"] or "-", f"{c['upload_bytes'] / 1024:.1f}", f"{c['device_ms']:.2f}",
                     f"{netms:.2f}", f"{edge:.2f}", f"{c['total_ms']:.2f}", f"{c['throughput_fps']:.1f}",
                     "unknown" if drop is None else f"{drop:+.2f} pt"))
    w = [max(len(r[k]) for r in rows) for k in range(len(hdr))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[k].rjust(w[k]) if k in (0, 3, 4, 5, 6, 7, 8, 9) else r[k].ljust(w[k]) for k in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    b = result["best"]
    if result.get("objective") == "throughput":
        lines.append(f"best for throughput: {b['name']}, {b['throughput_fps']:.1f} frames/s pipelined (bottleneck: "
                     f"{b['bottleneck']}, {b['stages_ms'][b['bottleneck']]:.2f} ms), {b['total_ms']:.2f} ms a frame")
    lines.append(f"best: {b['name']} ({b['layer'] or '-'}), {b['total_ms']:.2f} ms predicted; "
                 f"{result['speedup_vs_device']:.2f}x faster than device only ({result['device_only']['total_ms']:.2f} ms)")
    if result["speedup_tl_vs_plain"]:
        lines.append(f"best with TL {result['best_tl']['name']} is {result['speedup_tl_vs_plain']:.2f}x faster than "
                     f"the best without ({result['best_plain']['name']}, {result['best_plain']['total_ms']:.2f} ms)")
    skipped = sum(not c["allowed"] for c in result["ranking"])
    if skipped:
        lines.append(f"{skipped} candidates excluded by the constraints ({_describe(Constraints(**result['constraints']))})")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Predicted latency per cut, stacked by component, without and with the TL (the paper's
    Figures 5 and 6), and below them every option at once: each cut in each wire encoding, against
    the edge-only ways to send the input (float32, uint8, JPEG) and device only."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("--plot needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    splits = [c for c in result["ranking"] if c["where"] == SPLIT]
    cuts = [c for c in splits if c["placement"]["encoding"] == "raw"]
    groups = {"no TL (Scission)": sorted((c for c in cuts if not c["tl"]), key=lambda c: c["cut"]),
              "with TL (ScissionTL)": sorted((c for c in cuts if c["tl"]), key=lambda c: c["cut"])}
    stacks = [("device", ("device",), "#4c72b0"), ("TL", ("device_tl", "edge_tl"), "#dd8452"),
              ("(de)serialize", ("serialize", "deserialize"), "#937860"), ("latency", ("latency", "reply"), "#8c8c8c"),
              ("transfer", ("transfer",), "#c44e52"), ("edge", ("edge",), "#55a868")]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(cuts) * 0.06 + 4), 10), sharex=True)
    ymax = max(c["total_ms"] for c in cuts)
    for ax, (title, rows) in zip(axes, groups.items()):
        x = [c["cut"] for c in rows]
        bottom = [0.0] * len(rows)
        for label, keys, color in stacks:
            h = [sum(c["components_ms"][k] for k in keys) for c in rows]
            ax.bar(x, h, bottom=bottom, color=color, label=label, width=0.85)
            bottom = [b + v for b, v in zip(bottom, h)]
        for key, style in (("device_only", "--"), ("edge_only", ":")):
            ax.axhline(result[key]["total_ms"], color="k", ls=style, lw=1, label=result[key]["name"])
        if rows:
            b = min(rows, key=lambda c: c["total_ms"] if c["allowed"] else float("inf"))
            ax.plot([b["cut"]], [b["total_ms"]], marker="v", color="k", ms=8, ls="none", label=f"best: {b['name']}")
        ax.set_title(f"{result['model']}: {title}")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_ylim(0, ymax * 1.1)
    ax = axes[2]
    series: dict[str, list] = {}
    for c in splits:
        series.setdefault(("TL" if c["tl"] else "no TL") + ", " + c["placement"]["encoding"], []).append(c)
    for name, rows in sorted(series.items()):
        rows.sort(key=lambda c: c["cut"])
        ax.plot([c["cut"] for c in rows], [c["total_ms"] for c in rows], lw=1.2, ls="-" if "no TL" not in name else "--",
                label=f"cut K, {name}")
    flat = [c for c in result["ranking"] if c["where"] != SPLIT]
    for c, color in zip(flat, plt.cm.Dark2.colors):
        ax.axhline(c["total_ms"], color=color, ls=":", lw=1.4, label=c["name"])
    b = result["best"]
    ax.plot([b["cut"] if b["cut"] is not None else 0], [b["total_ms"]], marker="v", color="k", ms=9, ls="none",
            label=f"best: {b['name']}")
    ax.set_title("every placement: each cut in each wire encoding, and the input sent whole")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_ylim(0, min(ymax, max(c["total_ms"] for c in flat)) * 1.1)
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1].set_xlabel("cut index")
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    net = result["network"]
    fig.suptitle(f"uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms", fontsize=9)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# -- three tiers: device | edge | cloud ---------------------------------------------------------
TIERS = ("device", "edge", "cloud")


@dataclass
class TierConstraints:
    """Scission's constraints over tiers. ``must``/``must_not`` map a cut index (the layer that
    produces it) to tiers; upload caps are bytes a tier sends on per request; time caps are the
    tier's own compute (ms, or percent of the request's total)."""

    must: dict = field(default_factory=dict)  # cut index -> tier it must run on
    must_not: dict = field(default_factory=dict)  # cut index -> tiers it must not run on
    max_upload_bytes: dict = field(default_factory=dict)  # tier -> bytes
    max_time_ms: dict = field(default_factory=dict)  # tier -> ms
    max_time_pct: dict = field(default_factory=dict)  # tier -> percent of the total


def _tier_of(k: int, a: int, b: int, n: int) -> str:
    return "device" if k <= a else "edge" if k <= b or b == n else "cloud"


def _segment_ms(p: dict, a: int, b: int, n: int) -> float:
    """A host's time for cuts (a, b] (a = -1: from the input; b = n: to the output), from the prefix
    sums of its profile: a part run as its own session pays one call, like a head or a tail."""
    if a < 0 and b >= n:
        return p["full"]["median"]
    if a < 0:
        return p["cuts"][b]["head"]["median"]
    if b >= n:
        return p["cuts"][a]["tail"]["median"]
    ha, hb = p["cuts"][a]["head"]["median"], p["cuts"][b]["head"]["median"]
    call = max(0.0, ha + p["cuts"][a]["tail"]["median"] - p["full"]["median"])
    return max(hb - ha, 0.0) + call


def _crossings(sender: dict, receiver: dict, k: int, tl_choice: str):
    """(tl, encoding, bytes, sender ms, receiver ms) for each way cut k's tensor (k = -1: the input)
    can cross between two hosts."""
    if k < 0:
        yield False, "raw", sender["input"]["bytes"], sender["input"]["serialize"]["median"], \
            receiver["input"]["deserialize"]["median"]
        return
    s, r = sender["cuts"][k], receiver["cuts"][k]
    for tl in (False, True):
        if (tl and not s["tl"]) or (tl_choice == "on" and not tl and s["tl"]) or (tl_choice == "off" and tl):
            continue
        sfx = "_tl" if tl else ""
        tl_ms = (s["device_tl"]["median"], r["edge_tl"]["median"]) if tl else (0.0, 0.0)
        yield tl, "raw", s["tl_bytes"] if tl else s["bytes"], tl_ms[0] + s["serialize" + sfx]["median"], \
            tl_ms[1] + r["deserialize" + sfx]["median"]
        for enc in CUT_ENCODINGS[1:]:
            sv, rv = s.get("encodings" + sfx, {}).get(enc), r.get("encodings" + sfx, {}).get(enc)
            if sv and rv:
                yield tl, enc, sv["bytes"], tl_ms[0] + sv["serialize"]["median"], tl_ms[1] + rv["deserialize"]["median"]


def plan_tiers(device: tuple[str, dict], edges: list[tuple[str, dict]], clouds: list[tuple[str, dict]],
               hops: dict, cons: TierConstraints | None = None, tl: str = "both", top: int = 50) -> dict:
    """Every pair of cuts (device | edge | cloud) on every choice of edge and cloud host, each
    crossing with its own TL and wire encoding; the two-tier placements (no cloud) are among them.

    ``hops`` maps (source, destination) host names to Network objects (RTT, bandwidths). Each pair
    takes, per crossing, the cheapest TL/encoding its upload cap allows; where a time cap then fails,
    the pair's other crossings are tried. Predicted latency adds every tier's compute, each
    crossing's encode, round trip, transfer and decode, and the reply back along the chain."""
    cons = cons or TierConstraints()
    dname, dev = device
    n = len(dev["cuts"])
    for name, p in [*edges, *clouds]:
        if p["model_sha256"] != dev["model_sha256"] or len(p["cuts"]) != n:
            raise TlcutError(f"profile of host '{name}' is of another model than the device's; bench every host from the same bundle")
    for k, tiers in [*((k, [t]) for k, t in cons.must.items()), *cons.must_not.items()]:
        if not 0 <= int(k) < n:
            raise TlcutError(f"a tier constraint names cut {k}; the model's cuts are 0..{n - 1}")
        bad = [t for t in tiers if t not in TIERS]
        if bad:
            raise TlcutError(f"unknown tier '{bad[0]}'; use device, edge or cloud")

    def hop(src, dst) -> Network:
        h = hops.get((src, dst))
        if h is None:
            raise TlcutError(f"the network has no row {src},{dst},...; add one (source,destination,ping_ms,bandwidth_mbps)")
        return h

    hdr = protocol.HEADER.size
    out_bytes = dev["output"]["bytes"] + hdr
    ranked = []
    for ename, edge in edges:
        h1 = hop(dname, ename)
        pairs = [(a, n, None, None, None) for a in range(-1, n)]  # two tiers: the edge runs to the output
        for cname, cloud in clouds:
            h2 = hop(ename, cname)
            pairs += [(a, b, cname, cloud, h2) for a in range(-1, n) for b in range(a + 1, n)]
        for a, b, cname, cloud, h2 in pairs:
            c = _tier_candidate(dev, edge, cloud, a, b, n, h1, h2, out_bytes, hdr, cons, tl)
            if c:
                c["hosts"] = {"device": dname, "edge": ename, **({"cloud": cname} if cname else {})}
                ranked.append(c)
    devonly = {"cuts": [n - 1, n - 1], "crossings": [], "tiers_ms": {"device": dev["full"]["median"], "edge": 0.0, "cloud": 0.0},
               "components_ms": {"device": dev["full"]["median"]}, "total_ms": dev["full"]["median"],
               "upload_bytes": {}, "hosts": {"device": dname}, "name": "device only"}
    devonly["allowed"], devonly["why_not"] = _tier_allowed(devonly, n - 1, n, n, cons)
    ranked.append(devonly)
    ranked.sort(key=lambda c: c["total_ms"])
    allowed = [c for c in ranked if c["allowed"]]
    if not allowed:
        raise TlcutError("no placement over the tiers meets the constraints; relax one of them")
    best_two = next((c for c in allowed if "cloud" not in c["hosts"]), None)
    return {"format": FORMAT + "-tiers", "version": 1, "model": dev["model"], "best": allowed[0], "best_two_tiers": best_two,
            "hops": {f"{s}->{d}": asdict(v) for (s, d), v in hops.items()}, "candidates": len(ranked),
            "ranking": allowed[:top], "excluded": len(ranked) - len(allowed)}


def _tier_candidate(dev, edge, cloud, a, b, n, h1, h2, out_bytes, hdr, cons, tl_choice):
    def options(sender, receiver, k, hop, tier):
        cap = cons.max_upload_bytes.get(tier)
        opts = [(snd + hop.rtt_ms + hop.up_ms(nb + hdr) + rcv, t, e, nb + hdr, snd, rcv)
                for t, e, nb, snd, rcv in _crossings(sender, receiver, k, tl_choice) if cap is None or nb + hdr <= cap]
        return sorted(opts, key=lambda o: o[0])

    first = options(dev, edge, a, h1, "device")
    second = options(edge, cloud, b, h2, "edge") if cloud is not None else [None]
    if not first or not second:
        return None
    fallback = None
    for o1 in first[:4]:
        for o2 in second[:4]:
            c = _tier_total(dev, edge, cloud, a, b, n, h1, h2, out_bytes, o1, o2)
            c["allowed"], c["why_not"] = _tier_allowed(c, a, b, n, cons)
            if c["allowed"]:
                return c
            fallback = fallback or c
    return fallback


def _tier_total(dev, edge, cloud, a, b, n, h1, h2, out_bytes, o1, o2) -> dict:
    last = cloud if cloud is not None else edge
    dev_ms = _segment_ms(dev, -1, a, n) if a >= 0 else 0.0
    edge_ms = _segment_ms(edge, a, b, n)
    cloud_ms = _segment_ms(cloud, b, n, n) if cloud is not None else 0.0
    reply = last["output"]["serialize"]["median"] + h1.down_ms(out_bytes) + dev["output"]["deserialize"]["median"]
    comp = {"device": dev_ms, "cross_1": o1[0] - h1.rtt_ms, "latency_1": h1.rtt_ms, "edge": edge_ms}
    crossings = [{"cut": a if a >= 0 else None, "tl": o1[1], "encoding": o1[2], "bytes": o1[3]}]
    if cloud is not None:
        comp.update(cross_2=o2[0] - h2.rtt_ms, latency_2=h2.rtt_ms, cloud=cloud_ms)
        # the edge forwards the reply: decode, encode, and the hop back
        reply += edge["output"]["deserialize"]["median"] + edge["output"]["serialize"]["median"] + h2.down_ms(out_bytes)
        crossings.append({"cut": b, "tl": o2[1], "encoding": o2[2], "bytes": o2[3]})
    comp["reply"] = reply
    tiers = {"device": dev_ms + o1[4], "edge": edge_ms + o1[5] + (o2[4] if o2 else 0.0),
             "cloud": cloud_ms + (o2[5] if o2 else 0.0)}
    name = _tier_name(crossings)
    return {"name": name, "cuts": [a, b], "crossings": crossings, "components_ms": comp, "tiers_ms": tiers,
            "total_ms": sum(comp.values()), "upload_bytes": {"device": o1[3], **({"edge": o2[3]} if o2 else {})}}


def _tier_name(crossings) -> str:
    """``device > cut 5 (TL, int8) > edge > cut 40 > cloud``: what runs where, and what crosses."""
    def x(c):
        extra = [s for s in ("TL" if c["tl"] else "", c["encoding"] if c["encoding"] != "raw" else "") if s]
        return f"{'input' if c['cut'] is None else 'cut ' + str(c['cut'])}{' (' + ', '.join(extra) + ')' if extra else ''}"
    parts = ["device", x(crossings[0]), "edge"]
    if len(crossings) > 1:
        parts += [x(crossings[1]), "cloud"]
    return " > ".join(parts)


def _tier_allowed(c: dict, a: int, b: int, n: int, cons: TierConstraints) -> tuple[bool, str | None]:
    for k, t in cons.must.items():
        if _tier_of(int(k), a, b, n) != t:
            return False, f"cut {k} must run on the {t}"
    for k, ts in cons.must_not.items():
        if _tier_of(int(k), a, b, n) in ts:
            return False, f"cut {k} must not run on the {_tier_of(int(k), a, b, n)}"
    for t, cap in cons.max_upload_bytes.items():
        if c["upload_bytes"].get(t, 0) > cap:
            return False, f"the {t} uploads {c['upload_bytes'][t]} B > its cap {cap}"
    for t, cap in cons.max_time_ms.items():
        if c["tiers_ms"].get(t, 0.0) > cap:
            return False, f"the {t} computes {c['tiers_ms'][t]:.1f} ms > its cap {cap:g} ms"
    for t, pct in cons.max_time_pct.items():
        if c["total_ms"] > 0 and 100 * c["tiers_ms"].get(t, 0.0) / c["total_ms"] > pct:
            return False, f"the {t} takes {100 * c['tiers_ms'][t] / c['total_ms']:.0f}% of the total > its cap {pct:g}%"
    return True, None


def format_tiers(result: dict, top: int = 10) -> str:
    hops = ", ".join(f"{k} {v['up_mbps']:g} Mbit/s {v['rtt_ms']:g} ms" for k, v in result["hops"].items())
    lines = [f"{result['model']}: {result['candidates']} placements over three tiers ({hops}); medians, ms",
             f"{'rank':>4}  {'hosts':<22} {'device':>7} {'edge':>7} {'cloud':>7} {'total':>8}  placement"]
    for i, c in enumerate(result["ranking"][:top], 1):
        hosts = "/".join(c["hosts"].values())
        t = c["tiers_ms"]
        lines.append(f"{i:>4}  {hosts:<22} {t['device']:7.2f} {t['edge']:7.2f} {t['cloud']:7.2f} {c['total_ms']:8.2f}  {c['name']}")
    b, two = result["best"], result["best_two_tiers"]
    lines.append(f"best: {b['name']} on {'/'.join(b['hosts'].values())}, {b['total_ms']:.2f} ms predicted")
    if two and two is not b:
        lines.append(f"best with two tiers: {two['name']}, {two['total_ms']:.2f} ms")
    if result["excluded"]:
        lines.append(f"{result['excluded']} placements excluded by the constraints")
    return "\n".join(lines)
