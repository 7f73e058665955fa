"""The lab verbs: testbed, demo, perf, calibrate."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from tlcut.cli import Verb, emit_json, say
from tlcut.cli.args import BundleArgs, LinkArgs, PlacementArgs, SecurityArgs
from tlcut.errors import TlcutError


class Testbed(Verb):
    """Emulate device, edge and uplink (and a cloud behind the edge) on this machine (root): up, exec ROLE -- CMD, down, status."""

    name = "testbed"

    def add(self, p):
        sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        up = sub.add_parser("up", help="build a testbed and leave it up")
        up.add_argument("--bandwidth", type=float, default=57.0, metavar="MBPS", help="uplink rate (default 57)")
        up.add_argument("--latency", type=float, default=28.0, metavar="MS", help="round-trip latency (default 28)")
        up.add_argument("--device-quota", type=float, default=0.2, metavar="CPUS",
                        help="CPU the device may use, in CPUs (default 0.2: about 5x slower than one edge core)")
        up.add_argument("--device-cpus", default="0", help="cores the device is pinned to (default 0)")
        up.add_argument("--edge-cpus", default="1", help="cores the edge is pinned to (default 1)")
        up.add_argument("--port", type=int, default=5555, help="edge port (default 5555)")
        up.add_argument("--delay", default="auto", choices=["auto", "netem", "relay", "none"],
                        help="how latency is added: netem where the kernel has it, else tlcut's delay relay (default auto)")
        up.add_argument("--edge-quota", type=float, default=None, metavar="CPUS",
                        help="CPU the edge may use (default its whole core)")
        t = up.add_argument_group("three tiers: a cloud behind the edge")
        t.add_argument("--cloud", action="store_true", help="add the cloud's namespace and the backbone link")
        t.add_argument("--backbone", type=float, default=1000.0, metavar="MBPS", help="edge -> cloud rate (default 1000)")
        t.add_argument("--backbone-latency", type=float, default=20.0, metavar="MS",
                       help="edge -> cloud round-trip latency (default 20)")
        t.add_argument("--cloud-cpus", default="0", help="cores the cloud is pinned to (default 0)")
        t.add_argument("--cloud-port", type=int, default=5565, help="cloud port (default 5565)")
        ex = sub.add_parser("exec", help="run a command inside the device, the edge or the cloud")
        ex.add_argument("role", choices=["device", "edge", "cloud"])
        ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
        rp = sub.add_parser("replay", help="replay a link trace (CSV time_s,mbps,ms) on a testbed that is up")
        rp.add_argument("trace", help="a CSV of time_s,mbps,ms rows, or a shipped one: stepped, 5g-uplink, 5g-1s")
        sub.add_parser("down", help="tear a testbed down")
        sub.add_parser("status", help="show a testbed")
        for sp in sub.choices.values():
            sp.add_argument("--name", help="testbed name (default: new and random for up, the only one for the rest)")

    def run(self, a):
        from tlcut.lab import testbed as tbm

        if a.action == "up":
            cfg = tbm.Config(bandwidth_mbps=a.bandwidth, latency_ms=a.latency, device_quota=a.device_quota,
                             device_cpus=a.device_cpus, edge_cpus=a.edge_cpus, port=a.port, delay=a.delay,
                             edge_quota=a.edge_quota, cloud=a.cloud, backbone_mbps=a.backbone,
                             backbone_ms=a.backbone_latency, cloud_cpus=a.cloud_cpus, cloud_port=a.cloud_port)
            tb = tbm.Testbed(cfg, name=a.name, log=say)
            try:
                state = tb.up()
                tbm.save(state)
            except BaseException:
                tb.down()
                raise
            print(f"testbed '{state.name}' is up: devices connect to {state.device_endpoint}, the edge binds {state.edge_bind}")
            if cfg.cloud:
                print(f"  tlcut testbed exec cloud -- tlcut serve BUNDLE --cut K --bind {state.cloud_bind} --insecure")
                print(f"  tlcut testbed exec edge -- tlcut serve BUNDLE --cut A --bind {state.edge_bind} --insecure "
                      f"--forward {state.cloud_endpoint} --to K --forward-insecure")
            else:
                print(f"  tlcut testbed exec edge -- tlcut serve BUNDLE --cut K --bind {state.edge_bind} --insecure")
            print(f"  tlcut testbed exec device -- tlcut run BUNDLE --cut K --edge {state.device_endpoint} --insecure")
            print("  tlcut testbed down")
            return 0
        state = tbm.load(a.name)
        if a.action == "down":
            tbm.teardown_saved(state)
            say(f"[testbed] '{state.name}' torn down")
            return 0
        if a.action == "replay":
            from tlcut.lab.trace import Replayer, load

            steps = load(a.trace)
            tb = tbm.Testbed(state=state, log=say)

            def apply(mbps, ms):
                tb.set_link(mbps, ms)
                say(f"[testbed] uplink {mbps:g} Mbit/s, {ms:g} ms")

            rep = Replayer(steps, apply).start()
            try:
                rep._thread.join()
            finally:
                rep.stop()
            return 0
        if a.action == "status":
            cloud = {"cloud_endpoint": state.cloud_endpoint, "cloud_bind": state.cloud_bind} if state.config.cloud else {}
            print(json.dumps({"name": state.name, "device_endpoint": state.device_endpoint, "edge_bind": state.edge_bind,
                              **cloud, "delay": state.delay_method, "config": vars(state.config)}, indent=1))
            return 0
        cmd = list(a.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        elif cmd and cmd[0].startswith("-"):
            raise TlcutError(f"options go before the role: tlcut testbed exec [--name N] {a.role} -- COMMAND [ARGS...]")
        if not cmd:
            raise TlcutError("usage: tlcut testbed exec [--name N] device|edge -- COMMAND [ARGS...]")
        if cmd[0] == "tlcut":
            cmd = [sys.executable, "-m", "tlcut", *cmd[1:]]
        return tbm.Testbed(state=state, log=say).run(a.role, cmd).returncode


class Demo(Verb):
    """The main job: export, bench, plan, then serve and run the best placements; predicted vs measured.

    As root it runs in the testbed (network namespaces, tc-shaped uplink, a cgroup CPU quota for
    the device). Without root it runs on loopback: the uplink's rate and delay are emulated by
    tlcut's pacing relay in user space, and the device is slowed by stretching each of its
    compute steps; the results say which emulation was used.
    """

    name = "demo"

    def add(self, p):
        p.add_argument("model", nargs="?", default="DenseNet169", help="architecture or model file (default DenseNet169)")
        p.add_argument("-o", "--out", help="results folder (default results/demo-MODEL)")
        p.add_argument("--bundle", help="reuse this bundle instead of exporting")
        p.add_argument("--input-shape", metavar="H,W,C", help="input size for the architecture")
        p.add_argument("--bandwidth", type=float, default=57.0, metavar="MBPS", help="uplink rate (default 57, 5G)")
        p.add_argument("--latency", type=float, default=28.0, metavar="MS", help="round-trip latency (default 28)")
        p.add_argument("--device-quota", type=float, default=0.2, metavar="CPUS",
                       help="device CPU (default 0.2: a device about 5x slower than one edge core)")
        p.add_argument("--requests", type=int, default=30, help="timed requests per placement (default 30)")
        p.add_argument("--warmup", type=int, default=3, help="untimed requests per placement (default 3)")
        p.add_argument("--iterations", type=int, default=20, help="bench iterations (default 20)")
        p.add_argument("--min-cut", type=int, default=None, metavar="K",
                       help="privacy: plan only cuts K or later (the paper used 5); edge only is then not run")
        p.add_argument("--engines", metavar="B[:P[:T]],...",
                       help="bench and plan only these engine configurations, e.g. onnxrt:float32 (the paper's, quick); "
                            "default: every one, with int8 halves compiled (calibrated on elpv) for the cuts the "
                            "search needs")
        p.add_argument("--emulation", default="auto", choices=["auto", "testbed", "loopback"],
                       help="testbed (root: namespaces, tc, cgroups) or loopback (any user: pacing relay, "
                            "stretched device); auto picks the testbed where it can be built (default auto)")
        t = p.add_argument_group("three tiers (device | edge | cloud; the testbed only)")
        t.add_argument("--tiers", type=int, default=2, choices=[2, 3],
                       help="3: a cloud behind the edge on a backbone link; plans every pair of cuts (default 2)")
        t.add_argument("--backbone", type=float, default=1000.0, metavar="MBPS", help="edge -> cloud rate (default 1000)")
        t.add_argument("--backbone-latency", type=float, default=20.0, metavar="MS",
                       help="edge -> cloud round-trip latency (default 20)")
        t.add_argument("--edge-quota", type=float, default=None, metavar="CPUS",
                       help="the edge's CPU (default its whole core): a small edge box is where a cloud pays")

    def run(self, a):
        from tlcut.lab.demo import demo, demo_tiers

        if a.requests < 1 or a.warmup < 0 or a.iterations < 1:
            raise TlcutError("--requests and --iterations must be at least 1, --warmup at least 0")
        if a.tiers == 3:
            if a.engines is not None:
                raise TlcutError("--tiers 3 benches ONNX Runtime float32 on every tier; drop --engines")
            if a.min_cut is not None or a.emulation == "loopback":
                raise TlcutError("--tiers 3 runs in the testbed and plans with per-tier constraints (`tlcut plan --must`); "
                                 "drop --min-cut and --emulation loopback")
            demo_tiers(a.model, a.out, bandwidth=a.bandwidth, latency=a.latency, backbone=a.backbone,
                       backbone_latency=a.backbone_latency, device_quota=a.device_quota, edge_quota=a.edge_quota,
                       requests=a.requests, warmup=a.warmup, bench_iterations=a.iterations, bundle=a.bundle,
                       input_shape=a.input_shape, command=" ".join(["tlcut", *map(shlex.quote, sys.argv[1:])]), say=say)
            return
        if a.engines is not None and not a.engines.strip():
            raise TlcutError("--engines names no engine; give e.g. onnxrt:float32,openvino:int8")
        if a.edge_quota is not None or a.backbone != 1000.0 or a.backbone_latency != 20.0:
            raise TlcutError("--edge-quota, --backbone and --backbone-latency belong to --tiers 3")
        demo(a.model, a.out, bandwidth=a.bandwidth, latency=a.latency, device_quota=a.device_quota,
             requests=a.requests, warmup=a.warmup, bench_iterations=a.iterations, bundle=a.bundle,
             input_shape=a.input_shape, min_cut=a.min_cut, emulation=a.emulation, engines=a.engines, say=say)


class Perf(Verb):
    """Load an edge from many device processes at once; every result is checked against the full model."""

    name = "perf"

    def make_groups(self):
        self.b = BundleArgs()
        self.pl = PlacementArgs(self.b, tl_default="off")
        self.link = LinkArgs(required=True, timeout=2.0)
        self.sec = SecurityArgs("device")
        return [self.b, self.pl, self.link, self.sec]

    def add(self, p):
        p.add_argument("--devices", type=int, default=8, help="device processes (default 8)")
        p.add_argument("--requests", type=int, default=500, help="requests per device (default 500)")
        p.add_argument("--interval", type=float, default=0.0, metavar="S", help="pause between a device's requests")
        p.add_argument("--json", action="store_true")
        p.add_argument("-o", "--output", help="write the JSON (with every request's outcome over time) here")

    def run(self, a):
        from tlcut.lab.perf import perf

        self.sec.check(self.link.edge)
        key, edge_key = self.sec.files or (None, None)
        r = perf(self.b.bundle.path, self.pl.placement, self.link.edge, devices=a.devices, requests=a.requests,
                 timeout=self.link.timeout, retries=self.link.retries, fallback=self.link.fallback, key=key,
                 edge_key=edge_key, insecure=self.sec.insecure, interval=a.interval)
        timeline = r.pop("timeline")
        if a.output:
            emit_json({**r, "timeline": timeline}, a.output)
        if a.json:
            print(json.dumps(r, indent=1))
        else:
            lat = r["latency_ms"]
            print(f"{r['devices']} devices x {r['requests_per_device']} requests: {r['ok']} correct from the edge, "
                  f"{r['fell_back']} ran locally, {r['failed']} failed, {r['wrong']} wrong; retried {r['retried']}; "
                  f"{r['throughput_rps']:.1f} req/s; latency median {lat['median']:.2f} ms, p99 {lat['p99']:.2f} ms")
        return 0 if r["wrong"] == 0 and r["accounted"] else 1


class Calibrate(Verb):
    """Measure the link to a running edge (ping, uplink goodput) and write it as a Scission network CSV."""

    name = "calibrate"

    def make_groups(self):
        self.b = BundleArgs()
        self.sec = SecurityArgs("device")
        return [self.b, self.sec]

    def add(self, p):
        p.add_argument("--edge", required=True, help="the running edge's endpoint")
        p.add_argument("--cut", default="input", help="a cut the edge serves, or 'input' (default: the model input)")
        p.add_argument("--tl", default="off", choices=["on", "off"])
        p.add_argument("--pings", type=int, default=20)
        p.add_argument("--requests", type=int, default=10)
        p.add_argument("-o", "--output", help="Scission CSV to write")
        p.add_argument("--device-name", default="device")
        p.add_argument("--edge-name", default="edge")

    def run(self, a):
        from tlcut.calibrate.link import measure, write_csv

        self.sec.check(a.edge)
        m = measure(self.b.bundle, a.edge, a.cut, pings=a.pings, requests=a.requests, tl=a.tl == "on",
                    curve=self.sec.curve, insecure=self.sec.insecure)
        print(f"ping {m['ping_ms']:.2f} ms (p90 {m['ping_ms_p90']:.2f}), uplink {m['bandwidth_mbps']:.2f} Mbit/s "
              f"over {m['requests']} requests of {m['payload_bytes']} B")
        if a.output:
            write_csv(a.output, a.device_name, a.edge_name, m)
            say(f"[calibrate] wrote {a.output}; use it with `tlcut plan --network {a.output}`")


VERBS = [Testbed, Demo, Perf, Calibrate]
