"""The adaptive runtime's policy: estimate the link from the device's own requests and re-rank the
loaded deployments with hysteresis and probing (``tlcut.runtime.adapt`` runs it on the device).

The candidates are the planner's (``tlcut.deployment.Deployment``: each placement's predicted
components, for the link it was planned on); this module only re-does the link part of their
arithmetic, so the runtime needs no toolchain code. ``LinkEstimate`` turns each offloaded request
into a goodput sample (the bytes it sent over the time its transfer took beyond the round trip) and
smooths them; ``Policy`` decides. A policy is one object with two methods, so another can replace it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from tlcut.deployment import Deployment
from tlcut.placement import DEVICE, EDGE

#: Link bytes per payload byte (TCP/IPv4 on Ethernet), as the planner counts them.
WIRE_OVERHEAD = 1514 / 1448


@dataclass
class LinkEstimate:
    """Uplink goodput (Mbit/s) and round trip (ms), smoothed in the log domain (a 57 -> 10 Mbit/s
    step is a ratio, not a difference)."""

    mbps: float
    rtt_ms: float
    alpha: float = 0.4
    jump: float = 1.5  # a well-timed sample off by more than this factor replaces the estimate
    samples: int = 0
    #: the round trip is the least of the last this many samples (BBR's min filter): queueing only
    #: ever adds to a sample, and one PING behind a payload, averaged in, made every transfer after
    #: it look like no time on the wire
    rtt_window: int = 3
    _rtts: list = field(default_factory=list, repr=False)

    def observe_transfer(self, payload_bytes: int, transfer_ms: float, fixed_ms: float = 0.0,
                         weight: float | None = None) -> float | None:
        """One request's goodput sample, blended with ``weight`` (default ``alpha``; 1 replaces the
        estimate); None where the payload was too small to tell the rate: it crossed within 5% of
        the request's transfer time, or within a round trip at a rate under the estimate."""
        wire_ms = transfer_ms - self.rtt_ms - fixed_ms
        if payload_bytes <= 0 or wire_ms <= 0.05 * transfer_ms:
            return None
        sample = payload_bytes * WIRE_OVERHEAD * 8 / (wire_ms * 1e3)
        if wire_ms < self.rtt_ms and sample < self.mbps:
            # crossed within a round trip: its time is mostly the round trip's jitter, and says only
            # that the link is at least this fast (cut 101's 6.7 KB kept the estimate at 2.2-10.4
            # Mbit/s on a 57 Mbit/s link, and every request counted as a sample, so one probe went
            # out in 80 frames: 79 of them on cut 101 at 360-579 ms where edge only took 190, at aea8554)
            return None
        w = self.alpha if weight is None else weight
        if wire_ms >= self.rtt_ms and abs(math.log(sample / self.mbps)) > math.log(self.jump):
            # a sample timed well (the payload took a round trip or more to cross) and far off is
            # the link moving, not noise: averaged in, it kept three requests on a placement the new
            # rate had made slow (a 5G level change)
            w = 1.0
        self.mbps = math.exp((1 - w) * math.log(self.mbps) + w * math.log(sample))
        self.samples += 1
        return sample

    def observe_bound(self, payload_bytes: int, waited_ms: float, fixed_ms: float = 0.0) -> float | None:
        """A request that got no reply within ``waited_ms``: its payload took longer, so the link is
        at most this fast. The estimate drops to that bound where it was above it."""
        wire_ms = waited_ms - self.rtt_ms - fixed_ms
        if payload_bytes <= 0 or wire_ms <= 0:
            return None
        bound = payload_bytes * WIRE_OVERHEAD * 8 / (wire_ms * 1e3)
        self.mbps = min(self.mbps, bound)
        return bound

    def observe_rtt(self, rtt_ms: float) -> None:
        self._rtts = [*self._rtts, rtt_ms][-self.rtt_window:]
        self.rtt_ms = min(self._rtts)

    def up_ms(self, nbytes: int) -> float:
        return nbytes * WIRE_OVERHEAD * 8 / (self.mbps * 1e3)


@dataclass
class Switch:
    """A line of the switch log, for people: the deployments by their labels."""

    at: int  # request number
    old: str
    new: str
    reason: str


@dataclass
class Policy:
    """Latency-first re-ranking with hysteresis and probing.

    Switch to the best predicted placement only when it beats the current one by ``margin`` for
    ``patience`` decisions in a row (noise does not flap it), or at once by twice the margin after
    a request that measured the link. While the current placement tells
    nothing about the link (device only, or a payload too small to time), one request goes out on
    the best offloading placement after ``probe_every`` requests and ``probe_interval_s`` seconds,
    so a link that recovers is noticed; but only if, on the link the plan was made for (at the
    fastest rate measured since, where that is faster), that placement would win: where the device
    is far ahead anyway, probing would only cost latency.
    A caller that can send a probe beside a local request (``side_probes``) does so more often
    (``side_probe_every``), for such a probe costs the device nothing and may answer first; one
    that does (``raced: edge`` in its record) switches to its deployment at once.

    A sample that comes after requests without one and over ``stale_s`` seconds (a probe, mostly)
    replaces the estimate rather than moving it by ``alpha``: an estimate seconds old says nothing
    of the link now, and averaging it in kept a link that had recovered looking slow for several
    probes. A probe that measures a gain above the margin, or a request that timed out, switches at
    once: each is the measurement patience waits for.

    The predictions price the edge and the device as they run now, not as they were profiled: each
    part's measured time over its profile scales it (``edge_scale``; ``device_scale`` for the whole
    model here; each head its own, since under a CPU quota a short head and the whole model do not
    slow alike).

    Every offloaded request has a timeout from its prediction (``timeout_ms``), past which it is
    hedged: the local run starts beside the wait, and the first answer is taken. One the local run
    answers bounds the link's rate from above (its payload did not cross in that time).
    """

    candidates: list[Deployment]
    link: LinkEstimate
    start: Deployment | None = None  # (default: the best for the planned link)
    margin: float = 0.10
    tie: float = 0.01  # predictions within this share of the lowest are a tie, broken by the order given
    patience: int = 3
    probe_every: int = 3
    probe_interval_s: float = 1.0
    stale_s: float = 1.0
    #: the hedge's point over the predicted wait: a request then takes at most this, its head and
    #: device only's time (at 2.0 with no hedge, the stepped trace's slowest was 347 + 306 ms)
    timeout_factor: float = 1.5
    timeout_floor_ms: float = 250.0
    switches: list[Switch] = field(default_factory=list)
    edge_scale: float = 1.0  # the edge's measured time over its profiled time (load, another machine)
    #: the whole model's measured time here over its profiled time, from device only's runs. Each
    #: head has its own, from its own runs: under a CPU quota a head's time says nothing of the whole
    #: model's (ONNX Runtime float32's cut 5 head ran in 5.4-6.1 ms against a profile of 26.9,
    #: where device only's median was 358.2 against 388.7; one scale for both priced device only at
    #: 93.9 ms, and three frames of a 57 Mbit/s phase ran here at 362-389 ms: the --min-cut 5 frame
    #: replay at f73d187). Only from runs whose profile is at least ``device_scale_min_ms``: a
    #: shorter head's time is mostly fixed cost
    device_scale: float = 1.0
    device_scale_min_ms: float = 20.0
    #: the caller sends a probe beside a local request (AdaptiveDevice does): from device only, a
    #: probe with no head (edge only) then costs the device nothing, and is preferred
    side_probes: bool = False
    #: such a probe carries the request's own input and races its local run (the first answer is
    #: the request's), so it goes out more often: after this many requests without a sample and this
    #: long after the last probe, one in flight at a time. At 3 requests and 1 s, the 5G trace's
    #: fast phases began with 1-2 requests here before a probe went (331-403 ms where cut 0 took
    #: about 265: the --scission-space frame replay at b9fac37). It costs uplink bytes while local
    side_probe_every: int = 1
    side_probe_interval_s: float = 0.0
    clock: object = time.monotonic  # seconds; tests drive it by hand

    def __post_init__(self):
        if not self.candidates:
            raise ValueError("a policy needs at least one candidate placement")
        if self.start is not None and self.start not in self.candidates:
            raise ValueError(f"the policy starts on {self.start.label}, which is not a candidate")
        # each candidate's parts that no measurement moves, summed once: the policy prices every
        # candidate before every request, on a device whose quota that CPU comes out of
        # (by position, and found by identity: a deployment hashes and compares by its whole key)
        self._parts = [self._fixed_parts(c) for c in self.candidates]
        self._at = {id(c): i for i, c in enumerate(self.candidates)}
        # each head's measured time over its profile; None until it has run: then the device's, as
        # device only measures it (at 1.0, device only, slowed to 1.27 of its profile in a slow
        # spell, lost to cut 103's untried head, which is nearly the whole model: the --scission-space
        # frame replay at aea8554)
        self._head_scale: list[float | None] = [None] * len(self.candidates)
        self.current = self.candidates[self.candidates.index(self.start)] if self.start is not None \
            else self.candidates[self._first_best([self.predict(c) for c in self.candidates])]
        self._streak: tuple[Deployment | None, int] = (None, 0)
        self._n = 0
        self._since_sample = 0
        self._last_probe = -float("inf")
        self._last_sample = -float("inf")
        self._sampled_at = 0  # the request number of the last sample
        self._measured = False
        self._fresh = False  # the last request measured the link
        self._won: tuple | None = None  # (deployment, ms) of a side probe that answered its request first
        #: the link a probe must be able to win on: the planned one, its rate raised to the fastest
        #: the estimate has been since. Gated on the planned link alone, a plan made on a link where
        #: offloading and device only were close (5g-1s's first second, 20.2 Mbit/s) stopped probing
        #: once device only ran under its profile: no candidate beat it there any more, and 113
        #: requests ran here in phases whose best static row offloaded (the --scission-space time
        #: replay of 5g-1s at d3cadbb, its summary)
        self._peak = LinkEstimate(self.link.mbps, self.link.rtt_ms)

    # -- the two methods a policy has ----------------------------------------------------------
    def observe(self, rec: dict, ran: Deployment | None = None) -> bool:
        """One finished request's record (as Device.infer returns it), run on ``ran`` (default: the
        current). ``timed_out`` in the record: it waited its whole timeout for no reply. Whether it
        is news: a request that ran here instead, or a sample that moved the link's estimate by over
        half the margin; a decision made before it should then be made again. (Not the scales: a
        head's time under the quota moves its scale by several percent a request, and a scale
        drifts, where the link jumps.)"""
        self._n += 1
        c = ran or self.current
        sampled = None
        planned_dev = c.components_ms["device"] + c.components_ms["device_tl"]
        i = self._at.get(id(c))
        before = (self.link.mbps, self.link.rtt_ms)
        if planned_dev >= self.device_scale_min_ms and not rec.get("fallback") and rec.get("device_ms", 0) > 0:
            # the device as it runs now: device only on the 0.2-CPU testbed measured 316-370 ms
            # against its profile's 321.7; priced at the profile, a link back at 30 Mbit/s looked
            # under the margin's gain, and 10 of the phase's 14 frames ran here
            ratio = math.log(rec["device_ms"] / planned_dev)
            if c.placement.where == DEVICE:
                self.device_scale = math.exp(0.7 * math.log(self.device_scale) + 0.3 * ratio)
            elif i is not None:
                self._head_scale[i] = math.exp(0.7 * math.log(self._head(i)) + 0.3 * ratio)
        if c.placement.where != DEVICE:
            comp = c.components_ms
            fixed = comp["serialize"] + comp["deserialize"] + comp["reply"]
            now = self.clock()
            if rec.get("timed_out"):  # the timeout runs from the send: the edge's time and the link's
                edge = (comp["edge"] + comp["edge_tl"]) * self.edge_scale
                waited = rec.get("timeout_ms") or self.timeout_ms(c, c != self.current)
                self.link.observe_bound(c.upload_bytes, waited - edge, fixed)
                self._last_sample, self._measured = now, True
            elif not rec.get("fallback"):
                # stale: requests without a sample between (running here), and seconds of them
                stale = self._n - self._sampled_at > 1 and now - self._last_sample > self.stale_s
                weight = 1.0 if stale else None
                sampled = self.link.observe_transfer(rec["payload_bytes"], rec["transfer_ms"], fixed, weight)
                if sampled is not None:
                    self._last_sample, self._sampled_at = now, self._n
                    self._measured = c != self.current
                planned_edge = comp["edge"] + comp["edge_tl"]
                if planned_edge > 0 and rec.get("edge_ms", 0) > 0:  # a busy edge shows as edge time
                    self.edge_scale = math.exp(0.7 * math.log(self.edge_scale) + 0.3 * math.log(rec["edge_ms"] / planned_edge))
        self._since_sample = 0 if sampled is not None else self._since_sample + 1
        if rec.get("raced") == "edge" and c is not self.current:
            self._won = (c, rec.get("total_ms", 0.0))
        self._peak.mbps = max(self._peak.mbps, self.link.mbps)
        self._fresh = sampled is not None
        step = math.log(1 + self.margin / 2)
        return bool(rec.get("fallback") or rec.get("hedged")) or \
            any(abs(math.log(a / b)) > step for a, b in zip((self.link.mbps, self.link.rtt_ms), before))

    def next_placement(self) -> tuple[Deployment, str | None]:
        """The deployment for the next request, and why it changed (None when it did not). A probe
        is one request on another deployment; it does not change the current one."""
        cands, cur = self.candidates, self.current
        pred = [self._price(p, self._head(i), self.link) for i, p in enumerate(self._parts)]
        i_best = self._first_best(pred)
        best, p_best, p_cur = cands[i_best], pred[i_best], pred[self._at[id(cur)]]
        measured, self._measured = self._measured, False
        won, self._won = self._won, None
        if won is not None and won[0] is not cur:
            # the edge answered a request before the device did, beside the device's own run: the
            # most direct measurement there is. Its transfer, timed while the local run held the
            # quota, makes the link look slower than it is, and the estimate alone kept three
            # requests here after three such races (the command at 6909bd0, 5G phase 5)
            why = f"a side probe on {won[0].label} answered its request in {won[1]:.1f} ms, before the run here"
            self.switches.append(Switch(self._n, cur.label, won[0].label, why))
            self.current, self._streak = won[0], (None, 0)
            return self.current, why
        if best is not cur and p_best < (1 - self.margin) * p_cur:
            prev, count = self._streak
            self._streak = (best, count + 1 if prev == best else 1)
            # patience is for noise: a gain twice the margin that the last request just measured is
            # the link moving, and waiting for it cost a slow request each time (3 at 499-509 ms where
            # device only took 312, on the 5G trace)
            large = self._fresh and p_best < (1 - 2 * self.margin) * p_cur
            if self._streak[1] >= self.patience or measured or large:
                why = (f"link {self.link.mbps:.1f} Mbit/s, {self.link.rtt_ms:.0f} ms{' (just measured)' if measured else ''}: "
                       f"{best.label} predicted {p_best:.1f} ms vs {p_cur:.1f} ms for {cur.label}")
                self.switches.append(Switch(self._n, cur.label, best.label, why))
                self.current, self._streak = best, (None, 0)
                return self.current, why
        else:
            self._streak = (None, 0)
        now = self.clock()
        since, gap = self._since_sample, now - self._last_probe
        due = since >= self.probe_every and gap >= self.probe_interval_s
        side = self.side_probes and cur.placement.where == DEVICE
        due_side = side and since >= self.side_probe_every and gap >= self.side_probe_interval_s
        if due or due_side:
            # the likeliest to pay now among those that would win on the planned (or peak) link: the best
            # offloading one at the estimate may lose to the current even on a recovered link,
            # and probing only it never found the recovery
            ranked = [cands[i] for i in sorted(range(len(pred)), key=pred.__getitem__)]
            peak_cur = self.predict(cur, self._peak)
            pool = [c for c in ranked if c.placement.where != DEVICE and c is not cur
                    and self.predict(c, self._peak) < peak_cur]
            if side:  # a side probe where one can go; one with a head only as often as any probe
                # a side probe costs the device nothing: it goes where offloading could win on any link
                # at all, so a link faster than any yet seen is found too
                fast = LinkEstimate(math.inf, self._peak.rtt_ms)
                free = [c for c in ranked if c.placement.where == EDGE and c is not cur
                        and self.predict(c, fast) < self.predict(cur, fast)]
                pool = free if free and due_side else (free or pool) if due else []
            probe = pool[0] if pool else None
            if probe is not None:
                self._since_sample, self._last_probe = 0, now
                return probe, "probe"
        return self.current, None

    def _first_best(self, pred: list[float]) -> int:
        """The first candidate (the caller's order: the plan's) predicted within ``tie`` of the
        lowest. Predictions that close are not told apart by the profiles: in Scission's space cut 0
        (a layout change of the input here) was priced a hair under edge only, and its static row's
        median came 0.5 and 0.3 ms over edge only's (5g-1s's frame replays at 175cbdd and a901167);
        the adaptive run took it every time it came back from running here (at a901167: median
        280.7 against edge only's 280.2, paired +0.47 ms, higher)."""
        low = min(pred)
        return next(i for i, p in enumerate(pred) if p <= low * (1 + self.tie))

    def timeout_ms(self, c: Deployment, probe: bool = False) -> float:
        """How long a request on ``c`` waits for the edge after its head has run, before the local
        run starts beside the wait (a hedge; a side probe's timeout): a multiple of that wait's
        prediction (a probe: what is left of the current placement's predicted time, past which it
        cannot pay), never under the floor. So no request takes longer than its head, this, and
        device only's time."""
        head = (c.components_ms["device"] + c.components_ms["device_tl"]) * self._scale_of(c)
        if probe:
            return max(self.timeout_floor_ms, self.predict(self.current) - head)
        return max(self.timeout_floor_ms, self.timeout_factor * (self.predict(c) - head))

    # -- arithmetic ----------------------------------------------------------------------------
    def predict(self, c: Deployment, link: LinkEstimate | None = None) -> float:
        """The candidate's latency for the estimated link (or ``link``): the planner's components,
        with the round trip and the upload re-done for the link as it is now."""
        i = self._at.get(id(c))
        if i is None:
            return self._price(self._fixed_parts(c), self.device_scale, link or self.link)
        return self._price(self._parts[i], self._head(i), link or self.link)

    def _scale_of(self, c: Deployment) -> float:
        return self.device_scale if c.placement.where == DEVICE else self._head(self._at.get(id(c)))

    def _head(self, i: int | None) -> float:
        """Candidate ``i``'s head scale; a head not run yet (or no candidate): as the device runs now."""
        h = None if i is None else self._head_scale[i]
        return self.device_scale if h is None else h

    def _price(self, parts: tuple, head_scale: float, link: LinkEstimate) -> float:
        device, edge, rest, nbytes = parts
        if nbytes is None:
            return device * self.device_scale + rest
        return device * head_scale + rest + edge * self.edge_scale + link.rtt_ms + link.up_ms(nbytes)

    @staticmethod
    def _fixed_parts(c: Deployment) -> tuple[float, float, float, int | None]:
        """The device's and the edge's planned ms (scaled as they run now), the rest (constant; for
        an offloading one, less the link's parts, re-done for the link as it is), and the bytes it
        uploads (None: it runs here)."""
        comp = c.components_ms
        device = comp["device"] + comp["device_tl"]
        if c.placement.where == DEVICE:
            return device, 0.0, sum(v for k, v in comp.items() if k not in ("device", "device_tl")), None
        rest = sum(v for k, v in comp.items() if k not in ("latency", "transfer", "edge", "edge_tl", "device", "device_tl"))
        return device, comp["edge"] + comp["edge_tl"], rest, c.upload_bytes
