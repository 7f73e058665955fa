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
        self.pl, self.link, self.sec, self.be = PlacementArgs(self.b), LinkArgs(), SecurityArgs("device"), BackendArgs()
        return [self.b, self.pl, self.link, self.sec, self.be]

    def add(self, p):
        p.add_argument("--images", metavar="DIR", help="folder of images to send (default: random tensors)")
        p.add_argument("--requests", type=int, default=30, help="timed requests (default 30)")
        p.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
        p.add_argument("--slowdown", type=float, default=1.0, metavar="X",
                       help="lab: emulate a device X times slower by stretching every compute step (default 1)")
        p.add_argument("--json", action="store_true", help="print the summary and every request as JSON")
        p.add_argument("-o", "--output", help="write the JSON here")
        p.add_argument("-v", "--verbose", action="store_true", help="print every request")

    def run(self, a):
        from tlcut.runtime import run as rt

        b, pl = self.b.bundle, self.pl.placement
        if a.requests < 1:
            raise TlcutError(f"--requests must be at least 1, got {a.requests}")
        if pl.offloads:
            if not self.link.edge:
                raise TlcutError(f"{pl.label} needs an edge: pass --edge tcp://HOST:PORT")
            self.sec.check(self.link.edge)
        xs = rt.inputs(b, a.images, a.requests + a.warmup)
        with rt.Device(b, pl, edge=self.link.edge, backend=self.be.backend, threads=self.be.threads,
                       timeout_s=self.link.timeout, retries=self.link.retries, fallback=self.link.fallback,
                       curve=self.sec.curve, insecure=self.sec.insecure, slowdown=a.slowdown,
                       precision=self.be.precision) as dev:
            def show(rec):
                if a.verbose:
                    say(f"[run] {rec['i']:4d} total {rec['total_ms']:8.2f} ms  device {rec['device_ms']:7.2f}  "
                        f"transfer {rec['transfer_ms']:7.2f}  edge {rec['edge_ms']:7.2f}")

            records, summary = rt.run(dev, xs, warmup=a.warmup, on_record=show)
            summary["counts"] = dev.report()
        result = {"placement": pl.to_json(), "edge": self.link.edge, "backend": self.be.name,
                  "precision": self.be.precision, "slowdown": a.slowdown, "summary": summary,
                  "requests": records}
        if a.output:
            emit_json(result, a.output)
        if a.json:
            print(json.dumps(result, indent=1))
        else:
            print(rt.format_summary(pl.label, summary))


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
