"""The production verbs: serve (the edge), run (the device), keys."""

from __future__ import annotations

import json
import sys

from tlcut.cli import Verb, emit_json, say
from tlcut.cli.args import BackendArgs, BundleArgs, LinkArgs, PlacementArgs, SecurityArgs, ServedCutsArgs
from tlcut.errors import TlcutError


class Serve(Verb):
    """The edge: serve the tail of the given cut(s) to devices over ZeroMQ."""

    name = "serve"

    def make_groups(self):
        self.b, self.cuts, self.sec, self.be = BundleArgs(), ServedCutsArgs(), SecurityArgs("edge"), BackendArgs()
        return [self.b, self.cuts, self.sec, self.be]

    def add(self, p):
        p.add_argument("--bind", default="tcp://*:5555", help="ZeroMQ endpoint to listen on (default tcp://*:5555)")
        p.add_argument("--max-message-mb", type=int, default=256, help="largest request accepted, MiB (default 256)")
        p.add_argument("--max-requests", type=int, default=None, help="stop after this many messages (default: never)")
        p.add_argument("--max-queue", type=int, default=64, help="messages one device may have queued (default 64)")
        p.add_argument("--metrics-port", type=int,
                       help="serve /metrics and /health/{live,ready} over HTTP on this port, on --bind's host")

    def run(self, a):
        import logging

        from tlcut.runtime.serve import Edge

        if a.max_message_mb < 1:
            raise TlcutError(f"--max-message-mb must be at least 1, got {a.max_message_mb}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=sys.stderr)
        self.sec.check(a.bind)  # before the halves load, not after
        edge = Edge(self.b.bundle, self.cuts.cuts, tl=self.cuts.tl, backend=self.be.backend, threads=self.be.threads,
                    max_message_bytes=a.max_message_mb << 20, precision=self.be.precision)
        try:
            edge.serve(a.bind, max_requests=a.max_requests, curve=self.sec.curve, insecure=self.sec.insecure,
                       max_queue=a.max_queue, metrics_port=a.metrics_port)
        finally:
            edge.close()


class Run(Verb):
    """The device: run the head, send what crosses the cut to the edge, report per-request latency."""

    name = "run"

    def make_groups(self):
        self.b = BundleArgs()
        self.pl = PlacementArgs(self.b, required=False)
        self.link, self.sec, self.be = LinkArgs(), SecurityArgs("device"), BackendArgs()
        return [self.b, self.pl, self.link, self.sec, self.be]

    def add(self, p):
        p.add_argument("--images", metavar="DIR", help="folder of images to send (default: random tensors)")
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
        g.add_argument("--adapt", metavar="PLAN", help="choose the placement per request among the best of this plan "
                                                      "(`tlcut plan -o`), from the link the requests measure; --cut is "
                                                      "then where to start (default: the plan's best)")
        g.add_argument("--candidates", type=int, default=4, metavar="N",
                       help="placements kept loaded: the plan's N best allowed ones, and device only (default 4)")
        g.add_argument("--margin", type=float, default=0.15, help="switch only for a predicted gain above this share (default 0.15)")
        g.add_argument("--patience", type=int, default=3, help="... seen this many requests in a row (default 3)")
        g.add_argument("--probe-every", type=int, default=10, metavar="N",
                       help="while the link goes unmeasured, offload every Nth request to measure it (default 10)")
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
            self.sec.check(self.link.edge)
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
            def show(rec):
                if a.verbose:
                    say(f"[run] {rec['i']:4d} total {rec['total_ms']:8.2f} ms  device {rec['device_ms']:7.2f}  "
                        f"transfer {rec['transfer_ms']:7.2f}  edge {rec['edge_ms']:7.2f}")

            records, summary = rt.run(dev, xs, warmup=a.warmup, on_record=show, inflight=a.inflight)
            summary["counts"] = dev.report()
        result = {"placement": pl.to_json() if pl else "adaptive", "inflight": a.inflight, "edge": self.link.edge,
                  "backend": self.be.name,
                  "precision": self.be.precision, "slowdown": a.slowdown, "summary": summary,
                  "requests": records}
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


def adaptive_device(b, a, start, edge, kw):
    """An AdaptiveDevice over the plan's best allowed placements and device only."""
    from tlcut.cli.pipeline import load_plan
    from tlcut.runtime.adapt import LinkEstimate, Policy
    from tlcut.runtime.run import AdaptiveDevice

    plan = load_plan(a.adapt, b)
    if a.candidates < 1 or a.patience < 1 or a.probe_every < 1 or not 0 <= a.margin < 1:
        raise TlcutError("--candidates, --patience and --probe-every must be at least 1, --margin in [0, 1)")
    ranked = [c for c in plan["ranking"] if c["allowed"]]
    cands = ranked[:a.candidates] + [c for c in ranked[a.candidates:] if c["where"] == "device"]
    if start is not None and start.label not in {c["name"] for c in cands}:
        match = [c for c in plan["ranking"] if c["name"] == start.label]
        if not match:
            raise TlcutError(f"--cut names {start.label}, which the plan does not rank")
        cands.append(match[0])
    net = plan["network"]
    policy = Policy(cands, LinkEstimate(net["up_mbps"], net["rtt_ms"]), start=start.label if start else None,
                    margin=a.margin, patience=a.patience, probe_every=a.probe_every)
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
