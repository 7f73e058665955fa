"""The plan `tlcut plan` writes and every later step reads: typed, with one load/save.

A ``Plan`` ranks ``Deployment`` candidates. A deployment is a Placement (where the work runs and
what crosses the link) with the figures the planner predicted for it and each side's engine
configuration; a ``TierPlan`` ranks ``TierDeployment`` chains over device | edge | cloud. compile,
run --adapt, the adaptive policy, the demo and the benchmarks read these types, never the JSON's
fields, and never a label: a label is for people, a deployment's identity is what it runs.

The JSON (``FORMAT``, ``VERSION``) keeps every figure the planner computed, so a reader that wants
them sees them; version 1 (before the engines were recorded) is read as "what bench profiled".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, SPLIT, Placement

FORMAT = "tlcut-plan"
VERSION = 2
#: Versions this tlcut reads: 1 wrote no engines.
READS = (1, 2)
TIERS_FORMAT = FORMAT + "-tiers"
TIERS_VERSION = 1


@dataclass(frozen=True)
class Engine:
    """One side's engine configuration; None: what `tlcut bench` profiled on that side."""

    backend: str | None = None
    precision: str | None = None
    threads: int | None = None

    def words(self, threads: bool = False) -> str:
        """``openvino int8`` (``, 2 threads`` with ``threads``): how a label and summary.json name it."""
        w = f"{self.backend or 'the profiled engine'} {self.precision or 'float32'}"
        n = self.threads
        return w + (f", {n} thread{'s' if n != 1 else ''}" if threads and n else "")

    @property
    def spec(self) -> str:
        """``openvino:int8:2``: the --engines entry that names this configuration."""
        return ":".join(str(x) for x in (self.backend, self.precision, self.threads) if x is not None)

    def given(self) -> dict:
        """The fields the plan names (backend, precision, threads), as keyword arguments or flags take them."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "Engine":
        d = d or {}
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


def _tiles_key(tiles: dict | None):
    return None if tiles is None else (tiles.get("folder"), tiles.get("to"), tiles.get("nodes"))


@dataclass(eq=False)
class Deployment:
    """One candidate of a two-tier plan. Equal deployments run the same: same placement, same
    tiles, same engines; the figures are predictions about it, not part of what it is."""

    placement: Placement
    components_ms: dict
    upload_bytes: int
    layer: str | None = None
    tiles: dict | None = None  # the edge runs a segment as bands: folder, to, nodes, weights, predicted_ms
    device: Engine = field(default_factory=Engine)
    edge: Engine = field(default_factory=Engine)
    lossless: bool | None = None
    accuracy: float | None = None
    accuracy_drop_pts: float | None = None
    allowed: bool = True
    why_not: str | None = None
    fidelity: float | None = None  # top-1 agreement with the float32 model, where measured (1: lossless)
    #: How much of the engines the label says: 0 nothing (one configuration profiled per side),
    #: 1 backend and precision, 2 threads too. For people only, like the label.
    engine_detail: int = 0

    @property
    def key(self) -> tuple:
        return self.placement, _tiles_key(self.tiles), self.device, self.edge

    def __eq__(self, other):
        return isinstance(other, Deployment) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    @property
    def engines_used(self) -> dict[str, Engine]:
        """The sides that run part of the model, with their engines (device only: the device's)."""
        w = self.placement.where
        return {k: e for k, e in (("device", self.device), ("edge", self.edge))
                if not ((k == "device" and w == EDGE) or (k == "edge" and w == DEVICE))}

    @property
    def precision(self) -> str | None:
        """The precision the model runs at, where every side that runs part of it agrees; None: mixed."""
        ps = {e.precision or "float32" for e in self.engines_used.values()}
        return ps.pop() if len(ps) == 1 else None

    @property
    def label_without_engines(self) -> str:
        if self.tiles is None:
            return self.placement.label
        return f"{self.placement.label}, tiles to cut {self.tiles['to']} on {self.tiles['nodes']} nodes"

    @property
    def label(self) -> str:
        """``cut 5 + TL, int8 wire; device openvino int8, edge openvino int8`` (the engines part only
        where the profiles held several configurations)."""
        if not self.engine_detail:
            return self.label_without_engines
        base = self.label_without_engines
        if self.placement.where == SPLIT and self.placement.encoding != "raw" and self.tiles is None:
            base += " wire"  # beside an engine's precision, "int8" alone would not say which
        return base + "; " + ", ".join(
            f"{side} {e.words(threads=self.engine_detail > 1)}" for side, e in self.engines_used.items())

    @property
    def total_ms(self) -> float:
        return sum(self.components_ms.values())

    @property
    def device_ms(self) -> float:
        c = self.components_ms
        return c["device"] + c["device_tl"] + c["serialize"]

    @property
    def stages_ms(self) -> dict:
        """With frames pipelined (`tlcut run --inflight`) each stage works on another frame at once,
        so the slowest sets the rate. The propagation delay is not a stage: it delays, it does not
        limit the rate."""
        c = self.components_ms
        return {"device": self.device_ms, "uplink": c["transfer"], "edge": c["deserialize"] + c["edge_tl"] + c["edge"],
                "reply": c["reply"]}

    @property
    def bottleneck(self) -> str:
        s = self.stages_ms
        return max(s, key=s.get)

    @property
    def throughput_fps(self) -> float:
        ms = self.stages_ms[self.bottleneck]
        return 1e3 / ms if ms > 0 else float("inf")

    def settings(self, side: str) -> dict:
        """What `tlcut run` (``side`` "device") or `tlcut serve` ("edge") takes from this candidate,
        keyed by flag destination: the placement for that side, and that side's engine where the
        plan recorded it (None fields are left to the flags)."""
        p = self.placement
        cut = {DEVICE: "device", EDGE: "input"}.get(p.where, str(p.cut))
        out = {"cut": cut, "tl": "on" if p.tl else "off"}
        if side == "device":
            out.update(encoding=p.encoding, jpeg_quality=p.quality)
        engine = self.device if side == "device" else self.edge
        out.update({k: v for k, v in engine.to_json().items() if v is not None})
        return out

    def to_json(self) -> dict:
        p = self.placement
        d = {"name": self.label, "placement": p.to_json(), "where": p.where, "cut": p.cut, "layer": self.layer,
             "tl": p.tl, "upload_bytes": self.upload_bytes, "device_ms": self.device_ms,
             "components_ms": self.components_ms, "total_ms": self.total_ms, "stages_ms": self.stages_ms,
             "bottleneck": self.bottleneck, "throughput_fps": self.throughput_fps}
        if self.tiles is not None:
            d["tiles"] = self.tiles
        d["engines"] = {"device": self.device.to_json(), "edge": self.edge.to_json()}
        d.update(lossless=self.lossless, accuracy=self.accuracy, accuracy_drop_pts=self.accuracy_drop_pts,
                 fidelity=self.fidelity, allowed=self.allowed, why_not=self.why_not)
        if self.engine_detail:
            d["engine_detail"] = self.engine_detail
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Deployment":
        eng = d.get("engines") or {}
        return cls(Placement.from_json(d["placement"]), dict(d["components_ms"]), d["upload_bytes"], d.get("layer"),
                   d.get("tiles"), Engine.from_json(eng.get("device")), Engine.from_json(eng.get("edge")),
                   d.get("lossless"), d.get("accuracy"), d.get("accuracy_drop_pts"), d.get("allowed", True),
                   d.get("why_not"), d.get("fidelity"), d.get("engine_detail", 0))


@dataclass
class Plan:
    """Every candidate ranked (by ``objective``) for one network, and the best that meets the constraints."""

    model: str
    model_sha256: str | None  # None: a plan written before it was recorded (accepted with a warning)
    network: dict  # up_mbps, rtt_ms, down_mbps, source, wire_overhead
    ranking: list[Deployment]
    best: Deployment
    constraints: dict = field(default_factory=dict)
    objective: str = "latency"
    device_profile: str | None = None
    edge_profile: str | None = None
    accuracy_source: str | None = None
    statistic: str = "median"
    #: With `plan --pareto`: the allowed candidates no other beats on every one of latency, upload
    #: bytes, device time, accuracy drop and fidelity (toolchain/plan.py ``pareto_front``).
    pareto: list[Deployment] | None = None

    @property
    def allowed(self) -> list[Deployment]:
        return [d for d in self.ranking if d.allowed]

    def best_of(self, pred) -> Deployment | None:
        return next((d for d in self.ranking if d.allowed and pred(d)), None)

    # the paper's static choices: ScissionLite (TL) and Scission (no TL), both sending float32 (the
    # baselines the benchmarks and the demo run); what the TL is worth over every option is below
    @property
    def best_tl(self) -> Deployment | None:
        return self.best_of(lambda d: d.placement.tl and d.placement.encoding == "raw")

    @property
    def best_plain(self) -> Deployment | None:
        return self.best_of(lambda d: d.placement.where == SPLIT and not d.placement.tl and d.placement.encoding == "raw")

    # what the TL is worth here: the best allowed candidate with it and without it, over every
    # encoding, engine and placement, as the table ranks them (device and edge only have no TL)
    @property
    def best_with_tl(self) -> Deployment | None:
        return self.best_of(lambda d: d.placement.tl)

    @property
    def best_without_tl(self) -> Deployment | None:
        return self.best_of(lambda d: not d.placement.tl)

    @property
    def speedup_with_tl(self) -> float | None:
        tl, plain = self.best_with_tl, self.best_without_tl
        return plain.total_ms / tl.total_ms if tl and plain else None

    @property
    def device_only(self) -> Deployment | None:
        return self.find(Placement(DEVICE))

    @property
    def edge_only(self) -> Deployment | None:
        """The model input sent as float32, on one edge."""
        return self.find(Placement(EDGE))

    @property
    def edge_only_best(self) -> Deployment | None:
        return self.best_of(lambda d: d.placement.where == EDGE)

    @property
    def speedup_vs_device(self) -> float | None:
        return self.device_only.total_ms / self.best.total_ms if self.device_only else None

    @property
    def speedup_tl_vs_plain(self) -> float | None:
        tl, plain = self.best_tl, self.best_plain
        return plain.total_ms / tl.total_ms if tl and plain else None

    def choose(self, choice: int | None = None) -> Deployment:
        """The best (``choice`` None), or the ``choice``-th allowed candidate, counted from 1 as
        `tlcut plan` prints its table."""
        if choice is None:
            return self.best
        ok = self.allowed
        if not 1 <= choice <= len(ok):
            raise TlcutError(f"--choice {choice}: the plan ranks {len(ok)} allowed candidates; give 1 to {len(ok)} "
                             "(`tlcut plan` prints them in order)")
        return ok[choice - 1]

    def find(self, placement: Placement, device: Engine | None = None, edge: Engine | None = None) -> Deployment | None:
        """The best-ranked candidate that runs ``placement`` on one edge (no tiles); with ``device``
        or ``edge``, on those engines only (a baseline on ONNX Runtime float32, say)."""
        return next((d for d in self.ranking if d.placement == placement and d.tiles is None
                     and device in (None, d.device) and edge in (None, d.edge)), None)

    def to_json(self) -> dict:
        def j(d):
            return d.to_json() if d is not None else None

        return {"format": FORMAT, "version": VERSION, "model": self.model, "model_sha256": self.model_sha256,
                "device_profile": self.device_profile, "edge_profile": self.edge_profile, "network": self.network,
                "constraints": self.constraints, "statistic": self.statistic, "objective": self.objective,
                "accuracy_source": self.accuracy_source, "best": j(self.best), "best_tl": j(self.best_tl),
                "best_plain": j(self.best_plain), "device_only": j(self.device_only), "edge_only": j(self.edge_only),
                "edge_only_best": j(self.edge_only_best), "speedup_vs_device": self.speedup_vs_device,
                "speedup_tl_vs_plain": self.speedup_tl_vs_plain, "ranking": [d.to_json() for d in self.ranking],
                **({"pareto": [d.to_json() for d in self.pareto]} if self.pareto is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        ranking = [Deployment.from_json(c) for c in d["ranking"]]
        return cls(d["model"], d.get("model_sha256"), d["network"], ranking, _same(Deployment.from_json(d["best"]), ranking),
                   d.get("constraints") or {}, d.get("objective", "latency"), d.get("device_profile"),
                   d.get("edge_profile"), d.get("accuracy_source"), d.get("statistic", "median"),
                   [_same(Deployment.from_json(c), ranking) for c in d["pareto"]] if "pareto" in d else None)

    def save(self, path) -> None:
        from tlcut.bundle import write_json_atomic

        write_json_atomic(Path(path), self.to_json())

    @classmethod
    def load(cls, path, bundle=None) -> "Plan":
        """A plan written by `tlcut plan -o`; with ``bundle``, only one made for the model in it."""
        d = _read(path, FORMAT, READS)
        try:
            plan = cls.from_json(d)
        except (KeyError, TypeError, ValueError, StopIteration):
            raise TlcutError(f"'{path}' is not a plan written by `tlcut plan -o`") from None
        if bundle is None:
            return plan
        if plan.model_sha256 is None:
            import sys

            print(f"tlcut: warning: plan '{path}' does not record its model's sha256; taking it as made for bundle "
                  f"'{bundle.path}' ({plan.model})", file=sys.stderr, flush=True)
        elif plan.model_sha256 != bundle.model_sha256:
            raise TlcutError(f"plan '{path}' was made for another model than bundle '{bundle.path}' ({plan.model}, "
                             f"sha256 {plan.model_sha256[:12]}, not {bundle.model_sha256[:12]}); bench and plan "
                             "again from this bundle")
        return plan


def _same(d, ranking):
    """The ranking's own object for ``d`` (so ``plan.best in plan.ranking`` by identity too)."""
    return next((r for r in ranking if r == d), d)


def _read(path, fmt: str, versions) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        d = None
    if not isinstance(d, dict) or d.get("format") not in (FORMAT, TIERS_FORMAT):
        raise TlcutError(f"'{path}' is not a plan written by `tlcut plan -o`")
    if d["format"] != fmt:
        what = "a three-tier plan (`tlcut plan --cloud`)" if d["format"] == TIERS_FORMAT else "a two-tier plan"
        raise TlcutError(f"'{path}' is {what}; this step reads a {'three' if fmt == TIERS_FORMAT else 'two'}-tier plan")
    if d.get("version") not in versions:
        raise TlcutError(f"plan '{path}' has format version {d.get('version')}, this tlcut reads "
                         f"{', '.join(map(str, versions))}; make it again with `tlcut plan ... -o {path}`")
    return d


# -- three tiers: device | edge | cloud ---------------------------------------------------------
@dataclass(eq=False)
class TierDeployment:
    """A chain over the tiers: the device runs to its crossing, the edge to the next crossing (or to
    the output), the cloud the rest. ``crossings`` holds each crossing as a placement (the first
    may send the input: edge only); no crossings: device only. ``cuts`` is [a, b], the last cut
    each of the device and the edge runs (a = -1: none; b = the cut count: the edge runs to the output)."""

    crossings: tuple[Placement, ...]
    cuts: tuple[int, int]
    hosts: dict
    components_ms: dict
    tiers_ms: dict
    upload_bytes: dict  # tier -> bytes it sends on
    allowed: bool = True
    why_not: str | None = None

    @property
    def key(self) -> tuple:
        return self.crossings, tuple(self.cuts), tuple(sorted(self.hosts.items()))

    def __eq__(self, other):
        return isinstance(other, TierDeployment) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    @property
    def placement(self) -> Placement:
        """What the device runs and sends."""
        return self.crossings[0] if self.crossings else Placement(DEVICE)

    @property
    def forward(self) -> Placement | None:
        """Where the edge hands on to the cloud (three tiers)."""
        return self.crossings[1] if len(self.crossings) > 1 else None

    @property
    def total_ms(self) -> float:
        return sum(self.components_ms.values())

    @property
    def label(self) -> str:
        """``device > cut 5 (TL, int8) > edge > cut 40 > cloud``: what runs where, and what crosses."""
        if not self.crossings:
            return "device only"

        def x(p):
            extra = [s for s in ("TL" if p.tl else "", p.encoding if p.encoding != "raw" else "") if s]
            return f"{'input' if p.cut is None else 'cut ' + str(p.cut)}{' (' + ', '.join(extra) + ')' if extra else ''}"
        parts = ["device", x(self.crossings[0]), "edge"]
        if len(self.crossings) > 1:
            parts += [x(self.crossings[1]), "cloud"]
        return " > ".join(parts)

    def to_json(self) -> dict:
        tiers = ("device", "edge")
        return {"name": self.label, "cuts": list(self.cuts),
                "crossings": [{"cut": p.cut, "tl": p.tl, "encoding": p.encoding, "bytes": self.upload_bytes[t]}
                              for p, t in zip(self.crossings, tiers)],
                "components_ms": self.components_ms, "tiers_ms": self.tiers_ms, "total_ms": self.total_ms,
                "upload_bytes": self.upload_bytes, "allowed": self.allowed, "why_not": self.why_not, "hosts": self.hosts}

    @classmethod
    def from_json(cls, d: dict) -> "TierDeployment":
        xs = tuple(Placement(EDGE) if x["cut"] is None else Placement(SPLIT, x["cut"], x["tl"], x["encoding"])
                   for x in d["crossings"])
        return cls(xs, tuple(d["cuts"]), d["hosts"], dict(d["components_ms"]), d["tiers_ms"], d["upload_bytes"],
                   d.get("allowed", True), d.get("why_not"))


@dataclass
class TierPlan:
    """The chains over the tiers that meet the constraints, best first (``top`` of them kept)."""

    model: str
    hops: dict  # "source->destination" -> the network of that hop
    ranking: list[TierDeployment]
    best: TierDeployment
    best_two_tiers: TierDeployment | None
    candidates: int
    excluded: int

    def to_json(self, top: int | None = None) -> dict:
        return {"format": TIERS_FORMAT, "version": TIERS_VERSION, "model": self.model, "best": self.best.to_json(),
                "best_two_tiers": self.best_two_tiers.to_json() if self.best_two_tiers else None, "hops": self.hops,
                "candidates": self.candidates, "ranking": [c.to_json() for c in self.ranking[:top]],
                "excluded": self.excluded}

    @classmethod
    def from_json(cls, d: dict) -> "TierPlan":
        ranking = [TierDeployment.from_json(c) for c in d["ranking"]]
        two = d.get("best_two_tiers")
        return cls(d["model"], d["hops"], ranking, _same(TierDeployment.from_json(d["best"]), ranking),
                   _same(TierDeployment.from_json(two), ranking) if two else None, d["candidates"], d["excluded"])

    def save(self, path, top: int | None = None) -> None:
        """``top``: keep the best so many (every pair of cuts on every host is megabytes)."""
        from tlcut.bundle import write_json_atomic

        write_json_atomic(Path(path), self.to_json(top))

    @classmethod
    def load(cls, path) -> "TierPlan":
        d = _read(path, TIERS_FORMAT, (TIERS_VERSION,))
        try:
            return cls.from_json(d)
        except (KeyError, TypeError, ValueError):
            raise TlcutError(f"'{path}' is not a plan written by `tlcut plan --cloud -o`") from None
