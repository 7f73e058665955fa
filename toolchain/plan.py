"""`tlcut plan`: rank every way to run the model over the link (ScissionLite's ranking).

For each cut, with and without the TL, the predicted end-to-end latency of one request is::

    device head + DeviceTL + serialize                      (device profile)
  + round-trip latency + upload bytes / uplink bandwidth    (network)
  + deserialize + EdgeTL + edge tail                        (edge profile)
  + serialize result + result bytes / downlink + deserialize (the reply)

plus the two plans without a cut: everything on the device, and everything on the edge (the
input image crosses). Upload bytes include the 80-byte wire header, and the link carries them with
TCP/IP framing (1514 bytes on the wire per 1448 of payload), which a shaper counts. Every figure is a median from
the profiles; the plan says so rather than pretending to percentiles it cannot add up.

Each figure comes from one engine configuration per side: the plan searches every pair the two
profiles hold (backend x precision x threads, `tlcut bench --engines`), so a candidate is a
placement with the engines that run it. An int8 engine is a lossy choice, constrained like a lossy
wire encoding (``--max-accuracy-drop``, ``--min-fidelity``).

The result is a ``tlcut.deployment.Plan``; the three-tier search is plan_tiers.py, the table and
the plot plan_report.py.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

from tlcut import encodings
from tlcut.accuracy import accuracy_key, accuracy_rows
from tlcut.deployment import Deployment, Plan
from tlcut.errors import TlcutError
from tlcut.placement import CUT_ENCODINGS, DEVICE, EDGE, SPLIT, TL_CHOICES, Placement
from tlcut.runtime import protocol
from tlcut.toolchain.profile import Config, Profile, as_profile

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
    min_fidelity: float | None = None  # least top-1 agreement with the float32 model (0..1), as recorded


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


def load_profile(path, role: str) -> Profile:
    """The profile at ``path`` (version 1 or 2), measured as ``role``."""
    return Profile.load(path, role)


OBJECTIVES = ("latency", "throughput")


def plan(device, edge, net: Network, cons: Constraints | None = None,
         accuracy: list | dict | None = None, objective: str = "latency", tiles: list | None = None,
         tiles_link: Network | None = None, bundle=None, pareto: bool = False) -> Plan:
    """Every candidate with its predicted components; the best that meets the constraints.

    ``device``/``edge``: profiles (``Profile`` or a profile's JSON); each pair of their engine
    configurations is searched (an int8 configuration at the cuts it has int8 halves of). ``tiles``
    (manifests of `tlcut tiles`) add, for every placement that sends what a tiles folder starts
    from, the same placement with that segment run as bands on the folder's nodes
    (``tiled_edge_ms``), on the edge's default configuration. ``bundle``: where recorded fidelity
    is read (``fidelity_of``), and named as where ``accuracy`` (its ``Bundle.accuracy``
    rows; or a table keyed by label, as bundles held before rows) was read. ``pareto``: also the non-dominated set (``pareto_front``)."""
    cons = cons or Constraints()
    dp, ep = as_profile(device, "device"), as_profile(edge, "edge")
    if dp.model_sha256 != ep.model_sha256:
        raise TlcutError(
            f"the profiles are of different models ({dp.path}: {dp.model} {dp.model_sha256[:12]}, "
            f"{ep.path}: {ep.model} {ep.model_sha256[:12]}); bench both from the same bundle"
        )
    if dp.cut_count != ep.cut_count:
        raise TlcutError("the profiles list different cuts; bench both from the same bundle")
    n = dp.cut_count
    if cons.min_cut is not None and not 0 <= cons.min_cut < n:
        raise TlcutError(f"--min-cut {cons.min_cut} is outside the model's cuts 0..{n - 1}")
    if cons.tl not in TL_CHOICES:
        raise TlcutError(f"--tl must be one of {', '.join(TL_CHOICES)}, got '{cons.tl}'")
    if objective not in OBJECTIVES:
        raise TlcutError(f"--objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")

    engines = dp.engines + ep.engines
    detail = 0 if len(dp.configs) == len(ep.configs) == 1 else 2 if len({e.threads for e in engines}) > 1 else 1
    hdr = protocol.HEADER.size
    dev_io = dp.default.figures
    cands = []
    for dc in dp.configs:
        for ec in ep.configs:
            cands += _splits(dc, ec, net, hdr)
    for ec in ep.configs:
        if ec.full is None:
            continue
        reply_ms = _reply_ms(dev_io, ec.figures, net, hdr)
        for p, nbytes, ser, de in _edge_only_options(dev_io["input"], ec.figures["input"]):
            up = nbytes + hdr
            cands.append(Deployment(p, {
                "device": 0.0, "device_tl": 0.0, "serialize": ser, "latency": net.rtt_ms, "transfer": net.up_ms(up),
                "deserialize": de, "edge_tl": 0.0, "edge": ec.full["median"], "reply": reply_ms}, up, edge=ec.engine))
    for dc in dp.configs:
        if dc.full is not None:
            cands.append(Deployment(Placement(DEVICE), {**{k: 0.0 for k in COMPONENTS}, "device": dc.full["median"]}, 0,
                                    device=dc.engine))
    _add_tiles(cands, ep, tiles, tiles_link)
    for c in cands:
        c.engine_detail = detail

    _accuracy(cands, measured_accuracy(accuracy))
    _fidelity(cands, bundle)
    for c in cands:
        c.allowed, c.why_not = _allowed(c, cons)
    key = (lambda c: c.total_ms) if objective == "latency" else (lambda c: (-c.throughput_fps, c.total_ms))
    ranking = sorted(cands, key=key)
    allowed = [c for c in ranking if c.allowed]
    if not allowed:
        raise TlcutError("no plan meets the constraints (" + describe_constraints(cons) + "); relax one of them")
    return Plan(dp.model, dp.model_sha256, asdict(net), ranking, allowed[0], asdict(cons), objective,
                dp.path, ep.path, _accuracy_source(accuracy, bundle), pareto=pareto_front(allowed) if pareto else None)


def _reply_ms(dev: dict, edge: dict, net: Network, hdr: int) -> float:
    return edge["output"]["serialize"]["median"] + net.down_ms(edge["output"]["bytes"] + hdr) + \
        dev["output"]["deserialize"]["median"]


def _splits(dc: Config, ec: Config, net: Network, hdr: int) -> list[Deployment]:
    """Each cut both configurations can run, with and without the TL, in each wire encoding."""
    device, edge = dc.figures, ec.figures
    reply_ms = _reply_ms(device, edge, net, hdr)
    theirs = ec.cuts
    out = []
    for d in device["cuts"]:
        e = theirs.get(d["index"])
        if e is None:
            continue
        kind = d.get("tl_kind")  # the TL the bundle holds trained at the cut, as bench measured it (absent: pool)
        for tl in (False, True):
            if tl and not (d["tl"] and e["tl"] and kind == e.get("tl_kind")):
                continue  # profiles of bundles with different TLs at the cut: neither is known to run
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
                    if encodings.get(enc).measured:  # its size depends on the content: real images only
                        sized = next((x for x in (dv, ev) if x.get("measured")), None)
                        if sized is None:
                            continue
                        nbytes = sized["bytes"]
                up = nbytes + hdr
                comp = {
                    "device": d["head"]["median"], "device_tl": d["device_tl"]["median"] if tl else 0.0,
                    "serialize": ser, "latency": net.rtt_ms, "transfer": net.up_ms(up), "deserialize": de,
                    "edge_tl": e["edge_tl"]["median"] if tl else 0.0, "edge": e["tail"]["median"], "reply": reply_ms,
                }
                out.append(Deployment(Placement(SPLIT, d["index"], tl, enc, tl_kind=kind if tl else None), comp, up, d.get("layer"),
                                      device=dc.engine, edge=ec.engine))
    return out


def _add_tiles(cands: list[Deployment], ep: Profile, tiles: list | None, link: Network | None) -> None:
    """Beside each placement whose edge runs the default configuration and sends where a tiles
    folder starts, the same placement with that segment run as bands."""
    edge = ep.default.figures
    for t in tiles or []:
        if t.get("model_sha256") != ep.model_sha256:
            raise TlcutError(f"the tiles of {t.get('model')} are of another model than the profiles; run `tlcut tiles` on "
                             "the bundle the profiles were benched from")
        start = None if t["from"]["cut"] == "input" else int(t["from"]["cut"])
        pred = tiled_edge_ms(edge, t, link)
        for c in list(cands):
            # what the edge receives must be where the tiles start: the input, or cut A without the TL
            p = c.placement
            if c.tiles is not None or c.edge != ep.default.engine:  # bands of bands: the same deployment again
                continue
            starts_here = (p.where == EDGE and start is None) or \
                (p.where == SPLIT and not p.tl and start is not None and p.cut == start)
            if not starts_here:
                continue
            comp = {**c.components_ms, "edge": pred["total_ms"]}
            cands.append(Deployment(p, comp, c.upload_bytes, c.layer,
                                    {"folder": t.get("_path"), "to": t["to"]["cut"], "nodes": len(t["bands"]),
                                     "weights": t["weights"], "predicted_ms": pred}, c.device, c.edge))


#: What ``--min-fidelity`` bounds: the share of inputs whose top-1 class agrees with the float32 model's.
FIDELITY_METRIC = "top1"


def fidelity_of(bundle, d: Deployment) -> float | None:
    """The one place the plan reads fidelity: what `tlcut fidelity` or `tlcut compile` recorded in
    ``bundle`` for this deployment (toolchain/fidelity.py). None: unknown (no bundle, nothing
    recorded, or the recorded halves changed since)."""
    if bundle is None:
        return None
    from tlcut.runtime.backends import DEFAULT
    from tlcut.toolchain import fidelity as fid

    def side(e):
        return e.backend or DEFAULT, e.precision or "float32"

    row = fid.deployment_fidelity(bundle, d.placement, side(d.device), side(d.edge))
    return None if not row else row.get(FIDELITY_METRIC)


def _fidelity(cands: list[Deployment], bundle) -> None:
    for c in cands:
        f = fidelity_of(bundle, c)
        c.fidelity = f if f is not None else (1.0 if c.lossless else None)


def pareto_front(cands: list[Deployment]) -> list[Deployment]:
    """The candidates no other is at least as good as on every objective and better on one:
    latency, upload bytes, device time, accuracy drop and fidelity lost (each 0 when lossless,
    unknown counted as worst: never assumed lossless). Sorted lexicographically, a candidate's
    dominators all come before it, and a dominated one is dominated by one in the front too."""
    def objectives(c):
        drop = c.accuracy_drop_pts if c.accuracy_drop_pts is not None else float("inf")
        lost = 1.0 - c.fidelity if c.fidelity is not None else float("inf")
        return c.total_ms, c.upload_bytes, c.device_ms, drop, lost

    front: list[tuple] = []
    for k, c in sorted(((objectives(c), c) for c in cands), key=lambda kc: kc[0]):
        if not any(all(x <= y for x, y in zip(f, k)) and f != k for f, _ in front):
            front.append((k, c))
    return [c for _, c in front]


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
    seg = segment_ms(edge, a, b, n)
    bands = predict_tiled_ms(tiles["bands"], tiles["weights"], segment_ms=seg,
                             bandwidth_bps=link.up_mbps * 1e6 if link else None, latency_ms=link.rtt_ms if link else 0.0)
    tail = segment_ms(edge, b, n, n)
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


def _allowed(c: Deployment, cons: Constraints) -> tuple[bool, str | None]:
    p = c.placement
    if cons.tl == "on" and p.where == SPLIT and not p.tl:
        return False, "--tl on"
    if cons.tl == "off" and p.tl:
        return False, "--tl off"
    if cons.min_cut is not None and p.where != DEVICE:
        if p.cut is None or p.cut < cons.min_cut:
            return False, f"before --min-cut {cons.min_cut}"
    if cons.max_device_ms is not None and c.device_ms > cons.max_device_ms:
        return False, f"device {c.device_ms:.1f} ms > --max-device-ms"
    if cons.max_upload_bytes is not None and c.upload_bytes > cons.max_upload_bytes:
        return False, f"uploads {c.upload_bytes} B > --max-upload-bytes"
    if cons.max_latency_ms is not None and c.total_ms > cons.max_latency_ms:
        return False, f"latency {c.total_ms:.1f} ms > --max-latency-ms"
    if cons.max_accuracy_drop is not None:
        if c.accuracy_drop_pts is None:
            return False, "accuracy unknown (measure it with `tlcut eval`)"
        if c.accuracy_drop_pts > cons.max_accuracy_drop:
            return False, f"accuracy {c.accuracy_drop_pts:.2f} pt below device only > --max-accuracy-drop"
    if cons.min_fidelity is not None:
        if c.fidelity is None:
            return False, "fidelity unknown (not recorded in the bundle for this placement and precision)"
        if c.fidelity < cons.min_fidelity:
            return False, f"fidelity {c.fidelity:.3f} < --min-fidelity"
    return True, None


def measured_accuracy(records) -> dict[tuple, dict]:
    """What `tlcut eval` recorded, by ``accuracy_key``: ``Bundle.accuracy`` rows, or a table keyed by
    label (bundles before rows; there ``+ TL`` is pool)."""
    return {accuracy_key(r): r for r in accuracy_rows(records or [])}


def _accuracy_source(records, bundle) -> str | None:
    if isinstance(records, dict) and records.get("_source"):
        return records["_source"]
    return str(bundle.path) if records is not None and bundle is not None else None


def accuracy_of(measured: dict, placement: Placement, precision: str | None) -> float | None:
    """The one place the plan reads accuracy: what `tlcut eval` recorded for ``placement`` (its TL's
    kind included) at ``precision`` (None: the sides differ, which eval never runs), from
    ``measured_accuracy``; None: never measured."""
    row = measured.get(accuracy_key({**placement.identity, "precision": precision or "mixed"}))
    return None if row is None else row.get("accuracy")


def _accuracy(cands: list[Deployment], measured: dict) -> None:
    """Each candidate's accuracy and drop against device only. Lossless candidates (no TL; float32,
    or the uint8 pixels of a camera image; every engine at float32) compute exactly what the whole
    model computes: a drop of 0, known. The rest have what `tlcut eval` recorded in the bundle
    (for its placement, TL kind included, at the precision both sides ran), or unknown: never
    assumed lossless. A segment run as bands computes what it computes untiled: the placement's."""
    base = accuracy_of(measured, Placement(DEVICE), "float32")
    for c in cands:
        lossless = c.placement.lossless and c.precision == "float32"
        acc = accuracy_of(measured, c.placement, c.precision)
        if lossless and acc is None:
            acc = base
        c.lossless = lossless
        c.accuracy = acc
        c.accuracy_drop_pts = 0.0 if lossless else (100 * (base - acc) if acc is not None and base is not None else None)


def describe_constraints(cons: Constraints) -> str:
    parts = [f"{k}={v}" for k, v in asdict(cons).items() if v is not None and not (k == "tl" and v == "both")]
    return ", ".join(parts) or "none"


def segment_ms(p: dict, a: int, b: int, n: int) -> float:
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
