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
from dataclasses import asdict, dataclass
from pathlib import Path

from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, ENCODINGS, SPLIT, TL_CHOICES, Placement
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
         accuracy: dict | None = None, objective: str = "latency") -> dict:
    """Every candidate with its predicted components; the best that meets the constraints."""
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
            for enc in ENCODINGS:
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
    inp = device["input"]
    up = inp["bytes"] + hdr
    cands.append(_cand(Placement(EDGE), None, up, {
        "device": 0.0, "device_tl": 0.0, "serialize": inp["serialize"]["median"], "latency": net.rtt_ms,
        "transfer": net.up_ms(up), "deserialize": edge["input"]["deserialize"]["median"], "edge_tl": 0.0,
        "edge": edge["full"]["median"], "reply": reply_ms}))
    cands.append(_cand(Placement(DEVICE), None, 0, {**{k: 0.0 for k in COMPONENTS}, "device": device["full"]["median"]}))

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
        "speedup_vs_device": dev_only["total_ms"] / best["total_ms"],
        "speedup_tl_vs_plain": (best_plain["total_ms"] / best_tl["total_ms"]) if best_tl and best_plain else None,
        "ranking": ranking,
    }


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
    """Each candidate's accuracy and drop against device only. Lossless placements (no TL, raw
    wire) compute exactly what the whole model computes: a drop of 0, known. The rest have what
    `tlcut eval` recorded in the bundle, or unknown: never assumed lossless."""
    base = (measured.get("device only") or {}).get("float32", {}).get("accuracy")
    for c in cands:
        lossless = not c["tl"] and c["placement"]["encoding"] == "raw"
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
    """Predicted latency per cut, stacked by component, without and with the TL (Figures 5 and 6)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TlcutError("--plot needs matplotlib; install it with `pip install 'tlcut[plot]'`") from None
    cuts = [c for c in result["ranking"] if c["where"] == SPLIT and c["placement"]["encoding"] == "raw"]
    groups = {"no TL (Scission)": sorted((c for c in cuts if not c["tl"]), key=lambda c: c["cut"]),
              "with TL (ScissionTL)": sorted((c for c in cuts if c["tl"]), key=lambda c: c["cut"])}
    stacks = [("device", ("device",), "#4c72b0"), ("TL", ("device_tl", "edge_tl"), "#dd8452"),
              ("(de)serialize", ("serialize", "deserialize"), "#937860"), ("latency", ("latency", "reply"), "#8c8c8c"),
              ("transfer", ("transfer",), "#c44e52"), ("edge", ("edge",), "#55a868")]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(cuts) * 0.06 + 4), 7), sharex=True, sharey=True)
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
    axes[-1].set_xlabel("cut index")
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    net = result["network"]
    fig.suptitle(f"uplink {net['up_mbps']:g} Mbit/s, RTT {net['rtt_ms']:g} ms", fontsize=9)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
