"""`tlcut plan --cloud`: rank every chain device | edge | cloud (Scission's ranking over tiers).

Each pair of cuts on each choice of edge and cloud host, each crossing with its own TL and wire
encoding, from the same profiles and arithmetic as the two-tier plan (toolchain/plan.py), on each
host's default engine configuration (toolchain/profile.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tlcut.deployment import TierDeployment, TierPlan
from tlcut.errors import TlcutError
from tlcut.placement import CUT_ENCODINGS, EDGE, SPLIT, Placement
from tlcut.runtime import backends, protocol
from tlcut.toolchain.plan import Network, segment_ms
from tlcut.toolchain.profile import as_profile

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
    device, edges, clouds = _one_engine(device), [_one_engine(e) for e in edges], [_one_engine(c) for c in clouds]
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
                c.hosts = {"device": dname, "edge": ename, **({"cloud": cname} if cname else {})}
                ranked.append(c)
    full = dev["full"]["median"]
    devonly = TierDeployment((), (n - 1, n - 1), {"device": dname}, {"device": full},
                             {"device": full, "edge": 0.0, "cloud": 0.0}, {})
    devonly.allowed, devonly.why_not = _tier_allowed(devonly, n - 1, n, n, cons)
    ranked.append(devonly)
    ranked.sort(key=lambda c: c.total_ms)
    allowed = [c for c in ranked if c.allowed]
    if not allowed:
        raise TlcutError("no placement over the tiers meets the constraints; relax one of them")
    best_two = next((c for c in allowed if "cloud" not in c.hosts), None)
    return TierPlan(dev["model"], {f"{s}->{d}": asdict(v) for (s, d), v in hops.items()}, allowed[:top], allowed[0],
                    best_two, len(ranked), len(ranked) - len(allowed))


def _one_engine(named: tuple) -> tuple[str, dict]:
    """A host's default engine configuration (profile.py): three tiers plan one engine per host."""
    name, p = named
    prof = as_profile(p)
    conf = prof.default
    if len(conf.figures["cuts"]) != prof.cut_count:
        raise TlcutError(f"profile of host '{name}' has no configuration with every cut; a three-tier plan needs one: "
                         f"bench with --engines {backends.DEFAULT}:float32")
    return name, {**conf.figures, "_path": prof.path}


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
            c.allowed, c.why_not = _tier_allowed(c, a, b, n, cons)
            if c.allowed:
                return c
            fallback = fallback or c
    return fallback


def _tier_total(dev, edge, cloud, a, b, n, h1, h2, out_bytes, o1, o2) -> TierDeployment:
    last = cloud if cloud is not None else edge
    dev_ms = segment_ms(dev, -1, a, n) if a >= 0 else 0.0
    edge_ms = segment_ms(edge, a, b, n)
    cloud_ms = segment_ms(cloud, b, n, n) if cloud is not None else 0.0
    reply = last["output"]["serialize"]["median"] + h1.down_ms(out_bytes) + dev["output"]["deserialize"]["median"]
    comp = {"device": dev_ms, "cross_1": o1[0] - h1.rtt_ms, "latency_1": h1.rtt_ms, "edge": edge_ms}
    crossings = [Placement(EDGE) if a < 0 else Placement(SPLIT, a, o1[1], o1[2])]
    if cloud is not None:
        comp.update(cross_2=o2[0] - h2.rtt_ms, latency_2=h2.rtt_ms, cloud=cloud_ms)
        # the edge forwards the reply: decode, encode, and the hop back
        reply += edge["output"]["deserialize"]["median"] + edge["output"]["serialize"]["median"] + h2.down_ms(out_bytes)
        crossings.append(Placement(SPLIT, b, o2[1], o2[2]))
    comp["reply"] = reply
    tiers = {"device": dev_ms + o1[4], "edge": edge_ms + o1[5] + (o2[4] if o2 else 0.0),
             "cloud": cloud_ms + (o2[5] if o2 else 0.0)}
    return TierDeployment(tuple(crossings), (a, b), {}, comp, tiers, {"device": o1[3], **({"edge": o2[3]} if o2 else {})})


def _tier_allowed(c: TierDeployment, a: int, b: int, n: int, cons: TierConstraints) -> tuple[bool, str | None]:
    for k, t in cons.must.items():
        if _tier_of(int(k), a, b, n) != t:
            return False, f"cut {k} must run on the {t}"
    for k, ts in cons.must_not.items():
        if _tier_of(int(k), a, b, n) in ts:
            return False, f"cut {k} must not run on the {_tier_of(int(k), a, b, n)}"
    for t, cap in cons.max_upload_bytes.items():
        if c.upload_bytes.get(t, 0) > cap:
            return False, f"the {t} uploads {c.upload_bytes[t]} B > its cap {cap}"
    for t, cap in cons.max_time_ms.items():
        if c.tiers_ms.get(t, 0.0) > cap:
            return False, f"the {t} computes {c.tiers_ms[t]:.1f} ms > its cap {cap:g} ms"
    for t, pct in cons.max_time_pct.items():
        if c.total_ms > 0 and 100 * c.tiers_ms.get(t, 0.0) / c.total_ms > pct:
            return False, f"the {t} takes {100 * c.tiers_ms[t] / c.total_ms:.0f}% of the total > its cap {pct:g}%"
    return True, None
