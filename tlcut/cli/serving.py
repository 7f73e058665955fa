"""The production verbs: serve (the edge), run (the device), keys."""

from __future__ import annotations

import json
import sys

from tlcut.cli import Verb, emit_json, say
from tlcut.cli.args import BackendArgs, BundleArgs, LinkArgs, PlacementArgs, SecurityArgs, ServedCutsArgs
from tlcut.cli.from_plan import PlanArgs, track
from tlcut.errors import TlcutError
from tlcut.placement import CUT_ENCODINGS


class Serve(Verb):
    """The edge: serve the tail of the given cut(s) to devices over ZeroMQ."""

    name = "serve"

    def make_groups(self):
        self.b, self.sec, self.be = BundleArgs(), SecurityArgs("edge"), BackendArgs()
        self.cuts = ServedCutsArgs(required=False, bundle=self.b)
        self.plan = PlanArgs(self.b, "edge")
        return [self.b, self.plan, self.cuts, self.sec, self.be]

    def add(self, p):
        track(p)
        p.add_argument("--bind", default="tcp://*:5555", help="ZeroMQ endpoint to listen on (default tcp://*:5555)")
        p.add_argument("--max-message-mb", type=int, default=256, help="largest request accepted, MiB (default 256)")
        p.add_argument("--max-requests", type=int, default=None, help="stop after this many messages (default: never)")
        p.add_argument("--max-queue", type=int, default=64, help="messages one device may have queued (default 64)")
        p.add_argument("--metrics-port", type=int,
                       help="serve /metrics and /health/{live,ready} over HTTP on this port, on --bind's host")
        g = p.add_argument_group("batching (many devices on one cut)")
        g.add_argument("--max-batch", type=int, default=1, metavar="N",
                       help="run up to N waiting requests for the same tail as one batch, on the tails "
                            "`tlcut compile --batch` wrote (default 1: one at a time)")
        g.add_argument("--max-queue-delay-us", type=int, default=500, metavar="US",
                       help="how long the first request of a batch may wait for others, microseconds (default 500)")
        f = p.add_argument_group("three tiers: run a middle part and forward to the next tier (a cloud)")
        f.add_argument("--forward", metavar="tcp://HOST:PORT", help="the next tier's endpoint; the edge runs each served "
                                                                    "cut's middle part to --to (`tlcut compile --to`)")
        f.add_argument("--to", type=int, metavar="K", help="the cut the next tier serves")
        f.add_argument("--to-tl", default="off", choices=["on", "off"], help="send cut K through its TL (default off)")
        f.add_argument("--forward-encoding", default="raw", choices=CUT_ENCODINGS,
                       help="wire encoding toward the next tier (default raw)")
        f.add_argument("--forward-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the next tier before answering error 10 (default 10)")
        f.add_argument("--forward-key", metavar="SECRET", help="this edge's client NAME.key_secret for CURVE to the next tier")
        f.add_argument("--forward-server-key", metavar="PUBLIC", help="the next tier's public NAME.key")
        f.add_argument("--forward-insecure", action="store_true", help="plain TCP to the next tier outside loopback")
        t = p.add_argument_group("tiles: the segment `tlcut tiles` wrote, run as bands on several nodes")
        t.add_argument("--tiles", metavar="DIR", help="the tiles folder; --cut must be where the tiles start")
        t.add_argument("--band", type=int, metavar="K", help="as a worker: serve band K of --tiles")
        t.add_argument("--workers", metavar="EP,EP,...", help="as the coordinator: one node per band, in order "
                                                              "(tcp://HOST:PORT, or 'local' to run it here)")
        t.add_argument("--worker-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the bands before answering error 10 (default 10)")
        t.add_argument("--worker-key", metavar="SECRET", help="this edge's client NAME.key_secret for CURVE to the workers")
        t.add_argument("--worker-server-key", metavar="PUBLIC", help="the workers' public NAME.key")
        t.add_argument("--worker-insecure", action="store_true", help="plain TCP to the workers outside loopback")

    def forward(self, a):
        """The Forward of --forward, checked before anything loads."""
        from tlcut.runtime.security import ClientCurve, check_scheme, require_policy
        from tlcut.runtime.forward import Forward

        given = [f for f, v in (("--to", a.to), ("--forward-key", a.forward_key),
                                ("--forward-server-key", a.forward_server_key)) if v is not None]
        if not a.forward:
            if given or a.forward_insecure:
                raise TlcutError(f"{(given or ['--forward-insecure'])[0]} belongs to --forward (three tiers)")
            return None
        if a.to is None:
            raise TlcutError("--forward needs --to K, the cut the next tier serves")
        if bool(a.forward_key) != bool(a.forward_server_key):
            raise TlcutError("CURVE to the next tier needs both --forward-key and --forward-server-key")
        if a.forward_timeout <= 0:
            raise TlcutError(f"--forward-timeout must be positive, got {a.forward_timeout}")
        curve = ClientCurve.from_files(a.forward_key, a.forward_server_key) if a.forward_key else None
        check_scheme(a.forward)  # a missing tcp:// is not a plain-TCP risk
        try:
            require_policy(a.forward, curve, a.forward_insecure, "device")
        except TlcutError:  # the same rule as a device's, with this link's own flags
            raise TlcutError(f"refusing plain TCP to the next tier at {a.forward}: give --forward-key "
                             "edge.key_secret --forward-server-key cloud.key, or --forward-insecure for a lab link") from None
        return Forward(a.forward, a.to, a.to_tl == "on", a.forward_encoding, a.forward_timeout, curve, a.forward_insecure)

    def tiles(self, a):
        """(Tiles or a worker's folder, band) of --tiles/--band/--workers, checked before anything loads."""
        from tlcut.runtime.security import ClientCurve, require_policy
        from tlcut.runtime.tiles import LOCAL, Tiles

        if not a.tiles:
            given = [f for f, v in (("--band", a.band), ("--workers", a.workers), ("--worker-key", a.worker_key))
                     if v is not None]
            if given:
                raise TlcutError(f"{given[0]} belongs to --tiles DIR (the tiles folder)")
            return None, None
        if (a.band is None) == (a.workers is None):
            raise TlcutError("--tiles needs --band K (serve one band, as a worker) or --workers EP,EP,... "
                             "(coordinate the bands), not both")
        if a.band is not None:
            return a.tiles, a.band
        workers = tuple(w.strip() for w in a.workers.split(",") if w.strip())
        bad = [w for w in workers if w != LOCAL and "://" not in w]
        if bad or not workers:
            raise TlcutError(f"--workers '{a.workers}': give one endpoint per band, like tcp://10.0.0.2:5555,local")
        if bool(a.worker_key) != bool(a.worker_server_key):
            raise TlcutError("CURVE to the workers needs both --worker-key and --worker-server-key")
        curve = ClientCurve.from_files(a.worker_key, a.worker_server_key) if a.worker_key else None
        for w in workers:
            if w != LOCAL:
                try:
                    require_policy(w, curve, a.worker_insecure, "device")
                except TlcutError:
                    raise TlcutError(f"refusing plain TCP to the worker at {w}: give --worker-key edge.key_secret "
                                     "--worker-server-key worker.key, or --worker-insecure for a lab link") from None
        return Tiles(a.tiles, workers, a.worker_timeout, curve, a.worker_insecure), None

    def run(self, a):
        import logging

        from tlcut.runtime.serve import Edge

        if a.max_message_mb < 1:
            raise TlcutError(f"--max-message-mb must be at least 1, got {a.max_message_mb}")
        if a.max_batch < 1 or a.max_queue_delay_us < 0:
            raise TlcutError(f"--max-batch must be at least 1 and --max-queue-delay-us at least 0, got "
                             f"{a.max_batch} and {a.max_queue_delay_us}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=sys.stderr)
        if not self.cuts.cuts:  # what to serve comes before where
            raise TlcutError("name the cut(s) to serve with --cut K (or --cut input for the whole model), "
                             "or give --plan PLAN")
        self.sec.check(a.bind)  # before the halves load, not after
        forward = self.forward(a)
        tiles, band = self.tiles(a)
        edge = Edge(self.b.bundle, self.cuts.cuts, tl=self.cuts.tl, backend=self.be.backend, threads=self.be.threads,
                    max_message_bytes=a.max_message_mb << 20, precision=self.be.precision, max_batch=a.max_batch,
                    forward=forward, tiles=tiles, band=band)
        try:
            edge.serve(a.bind, max_requests=a.max_requests, curve=self.sec.curve, insecure=self.sec.insecure,
                       max_queue=a.max_queue, metrics_port=a.metrics_port, max_queue_delay_us=a.max_queue_delay_us)
        finally:
            edge.close()


class Run(Verb):
    """The device: run the head, send what crosses the cut to the edge, report per-request latency.

Exit status: 0 when the edge answered (requests that fell back are counted on stderr), 2 for a
mistake in the command, 3 when no request reached the edge: each ran on the device by the
fallback, so the timings are not the placement's."""

    name = "run"

    def make_groups(self):
        self.b = BundleArgs()
        self.plan = PlanArgs(self.b, "device")
        self.pl = PlacementArgs(self.b, required=False)
        self.link, self.sec, self.be = LinkArgs(), SecurityArgs("device"), BackendArgs()
        return [self.b, self.plan, self.pl, self.link, self.sec, self.be]

    def add(self, p):
        track(p)
        p.add_argument("--images", metavar="DIR", help="folder of images to send, or 'elpv' for the embedded solar-cell images (default: random tensors; a JPEG of noise is far larger than of a photo)")
        p.add_argument("--requests", type=int, default=30, help="timed requests (default 30)")
        p.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
        p.add_argument("--inflight", type=int, default=1, metavar="N",
                       help="frames in flight: the head of the next frame runs while this one crosses and is "
                            "served (default 1: one at a time)")
        p.add_argument("--slowdown", type=float, default=1.0, metavar="X",
                       help="lab: emulate a device X times slower by stretching every compute step (default 1)")
        p.add_argument("--json", action="store_true", help="print the summary and every request as JSON")
        p.add_argument("-o", "--output", help="write the JSON here")
        p.add_argument("-v", "--verbose", action="store_true", help="print every request")
        g = p.add_argument_group("adaptation (re-plan while running)")
        g.add_argument("--adapt", metavar="PLAN", help="choose the deployment per request among this plan's "
                                                      "(`tlcut plan -o`; its Pareto set, each on its own engines, "
                                                      "where `plan --pareto` wrote one), from the link the requests "
                                                      "measure; --cut is then where to start (default: the plan's best)")
        g.add_argument("--candidates", type=int, default=4, metavar="N",
                       help="without a Pareto set in the plan, placements kept loaded: the plan's N best allowed "
                            "ones, the best at each --rates, and device only (default 4)")
        g.add_argument("--rates", metavar="MBPS[,MBPS...]",
                       help="without a Pareto set: uplink rates the link may move to; the best placement at each "
                            "is kept loaded too (default: the plan's rate times 1/2, 1/5 and 1/10)")
        g.add_argument("--margin", type=float, default=0.10, help="switch only for a predicted gain above this share (default 0.10)")
        g.add_argument("--patience", type=int, default=3, help="... seen this many requests in a row (default 3)")
        g.add_argument("--probe-every", type=int, default=3, metavar="N",
                       help="while the link goes unmeasured, offload every Nth request, at most one a second, to "
                            "measure it (default 3)")
        g.add_argument("--side-probe-every", type=int, default=1, metavar="N",
                       help="running locally, where edge only is a candidate, send every Nth request's input to the "
                            "edge beside the local run, one in flight at a time; the first answer is taken. Raise "
                            "it to spend fewer uplink bytes while local (default 1)")
        g.add_argument("--timeline", metavar="PNG", help="draw latency, placement and link estimate over time")

    def run(self, a):
        from tlcut.runtime import run as rt

        b, pl = self.b.bundle, self.pl.placement
        if a.requests < 1:
            raise TlcutError(f"--requests must be at least 1, got {a.requests}")
        if a.inflight < 1:
            raise TlcutError(f"--inflight must be at least 1, got {a.inflight}")
        if a.inflight > 1 and a.adapt:
            raise TlcutError("--inflight pipelines one placement; --adapt switches between them: choose one")
        if pl is None and not a.adapt:
            raise TlcutError("name the placement with --cut K (or device, input), or give --adapt PLAN")
        if (pl is None or pl.offloads or a.adapt) and not self.link.edge:
            raise TlcutError(f"{pl.label if pl else 'adapting'} needs an edge: pass --edge tcp://HOST:PORT")
        if self.link.edge:
            for ep in self.link.edge.split(","):
                self.sec.check(ep.strip())
        xs = rt.inputs(b, a.images, a.requests + a.warmup)
        kw = dict(backend=self.be.backend, threads=self.be.threads, timeout_s=self.link.timeout,
                  retries=self.link.retries, fallback=self.link.fallback, curve=self.sec.curve,
                  insecure=self.sec.insecure, slowdown=a.slowdown, precision=self.be.precision)
        if a.adapt:
            dev = adaptive_device(b, a, pl, self.link.edge, kw)
            pl = None
        else:
            dev = rt.Device(b, pl, edge=self.link.edge, **kw)
        with dev:
            if a.adapt and a.warmup > 0:
                dev.warm(xs[0])  # every candidate once: no timed request pays a cold start
            def show(rec):
                if a.verbose:
                    say(f"[run] {rec['i']:4d} total {rec['total_ms']:8.2f} ms  device {rec['device_ms']:7.2f}  "
                        f"transfer {rec['transfer_ms']:7.2f}  edge {rec['edge_ms']:7.2f}")

            records, summary = rt.run(dev, xs, warmup=a.warmup, on_record=show, inflight=a.inflight)
            summary["counts"] = dev.report()
        result = {"placement": pl.to_json() if pl else "adaptive", "inflight": a.inflight, "edge": self.link.edge,
                  "backend": self.be.name,
                  "precision": self.be.precision, "threads": self.be.threads, "slowdown": a.slowdown,
                  "summary": summary, "requests": records}
        if self.plan.deployment is not None:
            result["plan"] = self.plan.record()
        if a.output:
            emit_json(result, a.output)
        if a.timeline:
            if not a.adapt:
                raise TlcutError("--timeline draws an adaptive run; add --adapt PLAN")
            from tlcut.lab.timeline import plot

            plot(records, a.timeline, title=f"{b.name}: adaptive run, {len(records)} requests")
            say(f"[run] wrote {a.timeline}")
        if a.json:
            print(json.dumps(result, indent=1))
        else:
            print(rt.format_summary(pl.label if pl else "adaptive", summary))
            for sw in summary["counts"].get("switches", []):
                print(f"  request {sw['at']}: {sw['old']} -> {sw['new']} ({sw['reason']})")
        code, verdict = rt.edge_verdict(summary["counts"], self.link.edge)
        if verdict:
            say(verdict)
        return code


def pareto_candidates(plan) -> list:
    """A plan's Pareto set (`tlcut plan --pareto`) and device only, each on its own engines; empty
    where the plan has none. The set already holds what wins at each rate the link may move to:
    less upload for more device time, down to device only."""
    if not plan.pareto:
        return []
    cands = list(dict.fromkeys(plan.pareto))
    local = plan.device_only
    if local is not None and not any(c.placement == local.placement for c in cands):
        cands.append(local)
    return cands


def adaptive_device(b, a, start, edge, kw):
    """An AdaptiveDevice over the plan's Pareto set where it has one, else its best allowed
    placements, the best at each rate, and device only."""
    from tlcut.deployment import Plan
    from tlcut.runtime.adapt import AdaptiveDevice, choose_candidates, one_edge_engine, serve_hint
    from tlcut.runtime.policy import LinkEstimate, Policy

    plan = Plan.load(a.adapt, b)
    if min(a.candidates, a.patience, a.probe_every, a.side_probe_every) < 1 or not 0 <= a.margin < 1:
        raise TlcutError("--candidates, --patience, --probe-every and --side-probe-every must be at least 1, "
                         "--margin in [0, 1)")
    net = plan.network
    try:
        rates = ([float(r) for r in a.rates.split(",") if r.strip()] if a.rates
                 else [net["up_mbps"] / k for k in (2, 5, 10)])
    except ValueError:
        raise TlcutError(f"--rates takes Mbit/s separated by commas, got '{a.rates}'") from None
    if any(r <= 0 for r in rates):
        raise TlcutError("--rates must be positive Mbit/s")
    cands = pareto_candidates(plan) or choose_candidates(plan.allowed, net["rtt_ms"], a.candidates, rates)
    first = None
    if start is not None:
        first = plan.find(start)
        if first is None:
            raise TlcutError(f"--cut names {start.label}, which the plan does not rank")
        if first not in cands:
            cands.append(first)
    # one edge engine: the start's where it offloads, else the plan's fastest offloading candidate's
    kept = set(cands)
    anchor = first if first is not None and first.placement.offloads else \
        next((c for c in plan.ranking if c.placement.offloads and c in kept), None)
    if anchor is not None:
        cands, out = one_edge_engine(cands, anchor)
        if out:
            say(f"[adapt] {len(out)} of the plan's candidates run their tail on another edge engine than "
                f"{anchor.edge.words(threads=True)} (an edge serves one), so they are left out: "
                f"{'; '.join(c.label for c in out[:3])}{'; ...' if len(out) > 3 else ''}")
        say(f"[adapt] {len(cands)} candidates; the edge must serve them all: {serve_hint(b, cands)}")
    policy = Policy(cands, LinkEstimate(net["up_mbps"], net["rtt_ms"]), start=first,
                    margin=a.margin, patience=a.patience, probe_every=a.probe_every,
                    side_probe_every=a.side_probe_every)
    return AdaptiveDevice(b, policy, edge=edge, log=lambda m: say(f"[adapt] {m}"), **kw)


class Keys(Verb):
    """Make CURVE key pairs for edges and devices (NAME.key public, NAME.key_secret private)."""

    name = "keys"

    def add(self, p):
        p.add_argument("names", nargs="*", help="one name per key pair, e.g. edge device1 device2")
        p.add_argument("-o", "--output", default="keys", help="folder to write (default keys)")
        p.add_argument("--force", action="store_true", help="replace existing keys")

    def run(self, a):
        from tlcut.runtime.security import make_keys

        for pub, sec in make_keys(a.output, a.names, force=a.force):
            print(f"{pub}  (public: give it to the other side)\n{sec}  (secret: keep it on this host)")


VERBS = [Serve, Run, Keys]
