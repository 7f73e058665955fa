"""Re-planning while running: every candidate deployment loaded on the device, a policy
(``tlcut.runtime.policy``) picking one per request from what the requests so far say of the link,
and each offloaded request hedged past its timeout.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from tlcut.bundle import Bundle
from tlcut.deployment import Deployment
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE
from tlcut.runtime import protocol as P
from tlcut.runtime.client import DEFAULT_TIMEOUT_S, EdgeError, EdgeUnavailable
from tlcut.runtime.policy import LinkEstimate, Policy
from tlcut.runtime.run import Device


def engine_kw(d: Deployment) -> dict:
    """The Device arguments of ``d``'s device engine, where the plan names one (a plan over several
    engine configurations); otherwise the command's own --backend, --precision and --threads hold."""
    return d.device.given()


def choose_candidates(ranked: list[Deployment], rtt_ms: float, best: int, rates) -> list[Deployment]:
    """The placements to keep loaded: the plan's ``best`` allowed ones, the best one at each uplink
    rate in ``rates`` (Mbit/s: where the link may go), and device only (where the edge goes away).
    A plan ranks for one link; a link that moves needs what wins at the others at hand."""
    chosen = dict.fromkeys(ranked[:best])
    for mbps in rates:
        probe = Policy(ranked, LinkEstimate(float(mbps), rtt_ms))
        chosen.setdefault(min(ranked, key=probe.predict))
    for c in ranked:
        if c.placement.where == DEVICE:
            chosen.setdefault(c)
    return list(chosen)


def one_edge_engine(cands: list[Deployment], anchor: Deployment) -> tuple[list[Deployment], list[Deployment]]:
    """The candidates one edge can serve as the plan priced them, and those it cannot: an edge runs
    one engine configuration (``anchor``'s), so a tail planned on another would run on that one,
    at another speed and fidelity than predicted. Device only needs no edge and is always kept."""
    kept = [c for c in cands if not c.placement.offloads or c.edge == anchor.edge]
    return kept, [c for c in cands if c.placement.offloads and c.edge != anchor.edge]


def serve_hint(bundle: Bundle, cands) -> str:
    """The `tlcut serve` command that serves every candidate's tail, on their edge engine."""
    offl = [c for c in cands if c.placement.offloads]
    cuts = sorted({"input" if c.placement.cut is None else str(c.placement.cut) for c in offl})
    engine = [f"--{k} {v}" for k, v in (offl[0].edge.given() if offl else {}).items()]
    return " ".join(["tlcut serve", str(bundle.path), *(f"--cut {c}" for c in cuts), *engine])


class _Race:
    """A side probe carrying the request's own input, against the request's local run: where the
    edge answers first, its answer is the request's and the local run is stopped. The probe was to
    cross anyway, so a link that came back pays off on that request, not on the next."""

    def __init__(self, runner):
        self.runner, self.stop, self.won = runner, threading.Event(), None
        self.t0 = time.perf_counter()  # the request's clock starts before its probe is sent
        self._open, self._lock = True, threading.Lock()

    def edge_answered(self, y: np.ndarray, rec: dict) -> None:
        with self._lock:  # never after close: the runner may by then be on the next request
            if self._open:
                self.won = (y, rec)
                self.stop.set()
                self.runner.cancel()

    def close(self) -> None:
        with self._lock:
            self._open = False


class AdaptiveDevice:
    """Every candidate placement's head loaded at once, each on its own device engine (the
    deployment's backend, precision and threads where the plan names them); a policy (above) picks
    one per request from what the requests so far say of the link. The edge must serve all their
    tails. Each placement keeps its own connection. With the fallback on (the default), a request
    the edge has not answered by the policy's ``timeout_ms`` is hedged, once, with no retry: the
    whole model starts here beside the wait, and the first answer is taken. Where the local run
    wins, the policy moves at once to what the wait says of the link. The next request's placement
    is decided while this one's edge works (``_next``). Every switch is logged."""

    def __init__(self, bundle: Bundle, policy, *, edge: str, log=None, ping_every_s: float = 2.0, **device_kw):
        self.policy, self.log, self.ping_every_s = policy, log or (lambda _: None), ping_every_s
        self.bundle = bundle
        self.devices = {c: Device(bundle, c.placement, edge=edge, **{**device_kw, **engine_kw(c)})
                        for c in policy.candidates}
        # one whole model per engine, loaded now: every candidate's fallback, and device only's runner
        local = {}
        for dev in sorted(self.devices.values(), key=lambda v: v.placement.offloads):
            if device_kw.get("fallback") or not dev.placement.offloads:
                local[dev.engine_key] = dev.local_runner(local.get(dev.engine_key))
        self.max_timeout_s = device_kw.get("timeout_s", DEFAULT_TIMEOUT_S)
        self.fallback = device_kw.get("fallback", False)
        self._last_ping = 0.0
        self._t0 = time.monotonic()
        self.probes = 0
        self.timed_out = 0
        self.hedged = 0
        self.races_won = 0  # requests a side probe answered before their local run
        self._answered: set[Deployment] = set()
        self._side = None  # a probe in flight beside local requests: (deployment, thread, its record)
        #: the next request's (deployment, why), decided while this one's edge worked: with what the
        #: requests before this one said (this one's answer is not in yet), so a plain stay is decided
        #: again where this one's answer turns out to be news
        self._next: tuple | None = None
        policy.side_probes = True

    def warm(self, x: np.ndarray) -> None:
        """``x`` once through every candidate, unobserved, so no timed request pays a cold start
        (a connection, a tail's first run) that a static run's warm-up would have paid."""
        for d, dev in self.devices.items():
            if dev.client is not None:
                dev.client.retries = 0
            try:
                _, rec = dev.infer(x)
            except EdgeError as e:
                if e.code != P.E_WRONG_CUT:
                    raise
                raise TlcutError(f"adaptation switches among {len(self.devices)} deployments, and the edge does "
                                 f"not serve {d.label} ({e.message}); serve every one of them: "
                                 f"{serve_hint(self.bundle, self.devices)}") from None
            if dev.client is not None and not rec.get("fallback"):
                self._answered.add(d)

    def _side_probe(self, d: Deployment, x: np.ndarray, race: _Race) -> None:
        """``x`` to the edge on ``d`` (no head) in a thread, while this request runs here: the probe
        measures the link and costs the device nothing, and its answer, where it comes first, is the
        request's (``race``). It never falls back; a timeout is its result."""
        dev = self.devices[d]
        dev.retry_edge()
        timeout_ms = self.max_timeout_s * 1e3
        if d in self._answered:
            timeout_ms = min(self.policy.timeout_ms(d), timeout_ms)
        dev.client.timeout_s, dev.client.retries = timeout_ms / 1e3, 0
        out: list = []

        def probe():
            try:
                y, rec = dev.infer(x, fallback=False)
                out.append(rec)
                race.edge_answered(y, rec)
            except EdgeUnavailable:
                out.append({"timed_out": True, "timeout_ms": timeout_ms, "fallback": True, "payload_bytes": 0,
                            "transfer_ms": 0.0})
            except Exception as e:  # noqa: BLE001 - raised where the probe is collected
                out.append(e)

        t = threading.Thread(target=probe, name="tlcut-probe", daemon=True)
        t.start()
        self._side = (d, t, out)

    def _collect(self, wait: bool = False) -> None:
        """Observe the side probe, once it has its answer (``wait``: block until it has)."""
        if self._side is None:
            return
        d, t, out = self._side
        if wait:
            t.join()
        if t.is_alive():
            return
        self._side = None
        if isinstance(out[0], Exception):
            raise out[0]
        if not out[0].get("fallback"):
            self._answered.add(d)
        self._observe(out[0], d)

    def _observe(self, rec: dict, d: Deployment) -> None:
        if self.policy.observe(rec, d) and self._next is not None and self._next[1] is None:
            self._next = None  # a stay decided before this news: decided again with it

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        self._collect()
        d, why = self._next or self.policy.next_placement()
        self._next = None
        side = race = None
        if why == "probe" and d.placement.where == EDGE and self.policy.current.placement.where == DEVICE:
            if self._side is None:  # (one in flight is still the probe)
                race = _Race(self.devices[self.policy.current].local_runner())
                self._side_probe(d, x, race)
                side = d.label
                self.probes += 1
            d, why = self.policy.current, None
        elif self._side is not None and self._side[0] == d:
            self._collect(wait=True)  # that deployment's connection is the probe's until it answers
        if why == "probe":
            self.probes += 1
        elif why:
            self.log(f"switch to {d.label}: {why}")
        dev = self.devices[d]
        # a timeout here means a slow link, not a dead edge, and every wait is bounded: the request
        # goes out, and what it measures (an answer or another timeout) tells the policy. Run here
        # untried, as a plain Device does for a while, it told nothing, and the stepped trace's
        # run stayed on edge only's fallback for the whole 10 Mbit/s phase (a PING on a fresh
        # connection did not get through in time there)
        dev.retry_edge()
        timeout_ms = hedge_ms = None
        if dev.client is not None and self.fallback:
            # until its edge has answered once (a cold connection, a tail's first run), the command's timeout
            timeout_ms = self.max_timeout_s * 1e3
            if d in self._answered:
                # past the policy's timeout the request is hedged: the local run starts beside the
                # wait and the first answer is taken. Where the device cannot hedge, it times out there
                hedge_ms = self.policy.timeout_ms(d, probe=why == "probe")
                if not dev.can_hedge:
                    timeout_ms, hedge_ms = min(hedge_ms, timeout_ms), None
            dev.client.timeout_s, dev.client.retries = timeout_ms / 1e3, 0
        t = time.monotonic()

        def decide():  # while the edge works: the policy's CPU then delays no head (of a 0.2-CPU
            # quota's 2 ms a 10 ms period, work spent just before a head can delay it by five times as much)
            self._next = self.policy.next_placement()
        if race is None:
            y, rec = dev.infer(x, hedge_ms=hedge_ms, idle=decide)
        else:
            d, y, rec = self._raced(dev, d, x, race)
            dev = self.devices[d]
        if dev.client is not None and not rec.get("fallback"):
            self._answered.add(d)
        timed_out = bool(rec.get("fallback")) and d.placement.where != DEVICE
        self.timed_out += timed_out
        self.hedged += bool(rec.get("hedged"))
        # what the edge was given before the answer came from here: the bound the policy takes
        waited = rec.get("waited_ms", timeout_ms) if timed_out else timeout_ms
        rec.update(placement=d.label, probe=why == "probe", t_s=t - self._t0, timed_out=timed_out,
                   timeout_ms=waited, hedge_ms=hedge_ms, side_probe=side,
                   raced=None if race is None else "edge" if race.won and d != self.policy.current else "here")
        self._observe(rec, d)
        rec.update(link_mbps_estimate=self.policy.link.mbps, rtt_ms_estimate=self.policy.link.rtt_ms,
                   device_scale=getattr(self.policy, "device_scale", None))
        self._ping(dev)
        return y, rec

    def _raced(self, dev: Device, d: Deployment, x: np.ndarray, race: _Race) -> tuple:
        """Device only's run of ``x`` beside the side probe carrying it: the deployment that
        answered, the answer and its record (the edge's, where it won), timed from the probe's send."""
        try:
            y, rec = dev.infer(x, stop=race.stop)
        except Exception:
            race.close()
            if race.won is None:  # a failure of its own, not the cancel
                raise
        else:
            race.close()  # here first (an answer the edge had by then is observed later)
            return d, y, {**rec, "total_ms": (time.perf_counter() - race.t0) * 1e3}
        pd, th, _ = self._side
        th.join()  # it has its record: the request's, observed as one on pd
        self._side = None
        self.races_won += 1
        y, rec = race.won
        return pd, y, {**rec, "total_ms": (time.perf_counter() - race.t0) * 1e3}

    def settle(self) -> None:
        """Wait for the probe in flight beside the local requests, and observe it: a caller that
        pauses between requests keeps the probe's traffic off whatever runs meanwhile."""
        self._collect(wait=True)

    def _ping(self, dev: "Device") -> None:
        """A round-trip sample now and then (a PING costs the edge nothing), never while a side
        probe crosses: queued behind its payload, a PING times the probe, not the round trip. (In
        5g-1s's time replay at 175cbdd the rate's estimate, in its timeline, went over 120 Mbit/s on
        a link of at most 63, a few seconds after races the local run won, whose probes were still
        crossing: an inflated round trip makes a transfer look like little time on the wire. That
        run did not record the round trip's estimate; the records now do.)"""
        now = time.monotonic()
        if dev.client is None or dev.edge_away or self._side is not None or now - self._last_ping < self.ping_every_s:
            return
        self._last_ping = now
        t0 = time.perf_counter()
        try:
            dev.client.ping(timeout_s=1.0)
        except EdgeUnavailable:
            return
        self.policy.link.observe_rtt((time.perf_counter() - t0) * 1e3)

    def report(self) -> dict:
        counts = {c.label: d.report() for c, d in self.devices.items()}
        return {"per_placement": counts, "probes": self.probes, "timed_out": self.timed_out, "hedged": self.hedged,
                "races_won": self.races_won,
                "switches": [vars(s) for s in self.policy.switches]}

    def close(self):
        if self._side is not None:
            self._side[1].join()
        for d in self.devices.values():
            d.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
