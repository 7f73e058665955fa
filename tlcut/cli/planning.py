"""The verbs that measure and choose: `tlcut bench` (every engine configuration on this machine)
and `tlcut plan` (every deployment over them, for the link)."""

from __future__ import annotations

from pathlib import Path

from tlcut.cli import Verb, bar, emit_json, say
from tlcut.cli.args import BackendArgs, BundleArgs, NetworkArgs
from tlcut.errors import TlcutError
from tlcut.placement import TL_CHOICES


class Bench(Verb):
    """Measure every cut on this machine: head, DeviceTL, serialization, payload, EdgeTL, tail, once
    per engine configuration (backend x precision x threads) the bundle and the machine can run."""

    name = "bench"

    def make_groups(self):
        self.b, self.be = BundleArgs(), BackendArgs()
        return [self.b, self.be]

    def add(self, p):
        p.add_argument("--role", required=True, choices=["device", "edge"], help="which side this machine plays")
        p.add_argument("-o", "--output", help="profile JSON to write (default: stdout)")
        p.add_argument("--engines", metavar="B[:P[:T]],...",
                       help="engine configurations to profile, e.g. onnxrt:float32,openvino:int8 (backend, precision, "
                            "threads); default: every one the machine and the bundle can run (--backend or --precision "
                            "other than the default keeps to that one)")
        p.add_argument("--thread-counts", metavar="N[,N...]",
                       help="profile each configuration at each of these thread counts (default: --threads)")
        p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
        p.add_argument("--iterations", type=int, default=20, help="timed runs (default 20)")
        p.add_argument("--check", type=int, default=4, metavar="N",
                       help="time the real halves of N cuts against the profiled prefix sums (default 4; 0: none)")
        p.add_argument("--slowdown", type=float, default=1.0, metavar="X",
                       help="lab: emulate a device X times slower by stretching every compute step (default 1)")
        p.add_argument("--idle-ms", type=float, default=None, metavar="MS",
                       help="sleep before each timed run of the model and its halves, as a served engine idles "
                            "between requests (default: 30 as the edge; as the device 0, whose whole model runs back "
                            "to back, and 30 before a real head, which runs once per request)")
        p.add_argument("--images", metavar="DIR",
                       help="images for the input's JPEG size and cost: a folder or 'elpv' (default elpv where installed)")
        p.add_argument("--jpeg-quality", default="90", metavar="Q[,Q...]",
                       help="JPEG qualities to offer edge only at (default 90)")

    def run(self, a):
        from tlcut.runtime import backends
        from tlcut.toolchain import bench_configs

        try:
            qualities = [int(q) for q in a.jpeg_quality.split(",") if q.strip()]
        except ValueError:
            raise TlcutError(f"--jpeg-quality takes numbers 1..100 separated by commas, got '{a.jpeg_quality}'") from None
        bad = [q for q in qualities if not 1 <= q <= 100]
        if bad:
            raise TlcutError(f"--jpeg-quality must be 1..100, got {bad[0]}")
        from tlcut.toolchain.bench import check_settings, idle_ms_for

        idle_ms = idle_ms_for(a.role, a.idle_ms)
        check_settings(a.role, a.warmup, a.iterations, a.slowdown, idle_ms)
        narrow_backend = a.backend if a.backend != backends.DEFAULT else None
        narrow_precision = a.precision if a.precision != "float32" else None
        if a.engines and (narrow_backend or narrow_precision):
            raise TlcutError("--engines names the configurations; drop --backend/--precision")
        if a.thread_counts and a.threads is not None:
            raise TlcutError("--thread-counts gives every thread count; drop --threads")
        options = {n: backends.backend_class(n).options_from_args(a, n) for n in backends.names()}
        b = self.b.bundle
        engines = bench_configs.select(b, a.engines, bench_configs.parse_threads(a.thread_counts, a.threads),
                                       backend=narrow_backend, precision=narrow_precision, options=options, progress=say)
        say(f"[bench] {len(engines)} engine configurations: {', '.join(e.words(threads=True) for e in engines)}")
        prof = bench_configs.bench_engines(b, engines, role=a.role, options=options, warmup=a.warmup,
                                           iterations=a.iterations, check=a.check, progress=say,
                                           bar=bar, slowdown=a.slowdown, images=a.images,
                                           jpeg_quality=qualities, idle_ms=idle_ms,
                                           head_idle_ms=idle_ms_for(a.role, a.idle_ms, head=True))
        emit_json(prof.to_json(), a.output)
        if a.output and a.output != "-":
            say(f"[bench] wrote {a.output}")


class Plan(Verb):
    """Rank every placement (each cut with and without the TL, device only, edge only) on every pair of
    engine configurations the profiles hold, by predicted latency."""

    name = "plan"

    def make_groups(self):
        self.net = NetworkArgs()
        return [self.net]

    def add(self, p):
        p.add_argument("--device", required=True, metavar="PROFILE", help="profile JSON from `tlcut bench --role device`")
        p.add_argument("--edge", required=True, metavar="[NAME=]PROFILE", action="append",
                       help="profile JSON from `tlcut bench --role edge`; with --cloud, repeatable: candidate edge hosts")
        t = p.add_argument_group("three tiers (device | edge | cloud), Scission's ranking")
        t.add_argument("--cloud", metavar="[NAME=]PROFILE", action="append",
                       help="a cloud host's profile (`tlcut bench --role edge` on it); repeatable. Plans every pair of "
                            "cuts; hops come from --network (device->edge, edge->cloud rows, by host name)")
        t.add_argument("--must", metavar="CUT=TIER", action="append", default=[],
                       help="cut (index or layer) that must run on device, edge or cloud; repeatable")
        t.add_argument("--must-not", metavar="CUT=TIER", action="append", default=[],
                       help="cut that must not run on that tier; repeatable")
        t.add_argument("--tier-upload", metavar="TIER=BYTES", action="append", default=[],
                       help="most bytes a tier may send on per request; repeatable")
        t.add_argument("--tier-time", metavar="TIER=MS|PCT%", action="append", default=[],
                       help="most compute time on a tier, in ms or percent of the total; repeatable")
        g = p.add_argument_group("constraints")
        g.add_argument("--min-cut", type=int, default=None, metavar="K",
                       help="earliest cut allowed (privacy: nothing earlier leaves the device)")
        g.add_argument("--max-device-ms", type=float, default=None, help="most device compute time allowed")
        g.add_argument("--max-upload-bytes", type=int, default=None, help="most bytes allowed on the uplink per request")
        g.add_argument("--tl", default="both", choices=TL_CHOICES, help="rank cuts with the TL, without, or both")
        g.add_argument("--max-accuracy-drop", type=float, metavar="PTS",
                       help="most accuracy lost against device only, in points, as `tlcut eval` measured it on the test "
                            "split (read from --accuracy); placements never measured are excluded, lossless ones kept")
        g.add_argument("--min-fidelity", type=float, metavar="F",
                       help="least top-1 agreement (0..1) with the float32 model, as recorded in the bundle (read from "
                            "--accuracy); lossy choices (TL, wire encoding, int8 engine) never measured are excluded")
        p.add_argument("--accuracy", "--bundle", dest="accuracy", metavar="BUNDLE",
                       help="the bundle whose recorded `tlcut eval` accuracies and fidelities to use")
        g.add_argument("--max-latency-ms", type=float, help="most latency one frame may take (with --objective throughput)")
        tg = p.add_argument_group("tiles at the edge (`tlcut tiles`)")
        tg.add_argument("--tiles", metavar="DIR", action="append", default=[],
                        help="a tiles folder: rank, beside each placement that sends its start, the same placement "
                             "with the segment run as bands on its nodes (weights: speed against the benched edge); "
                             "repeatable")
        tg.add_argument("--tiles-link", metavar="MBPS,MS",
                        help="the link from the edge to its nodes (default: not counted, nodes on the edge's host)")
        p.add_argument("--objective", default="latency", choices=["latency", "throughput"],
                       help="rank by one frame's latency, or by frames per second with frames pipelined "
                            "(`tlcut run --inflight`): 1 / the slowest stage (default latency)")
        p.add_argument("--top", type=int, default=10, help="rows to print (default 10)")
        p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
        p.add_argument("-o", "--output", help="write the plan JSON here")
        p.add_argument("--plot", metavar="PNG", help="write predicted latency per cut, stacked by component")
        p.add_argument("--pareto", action="store_true",
                       help="print the non-dominated candidates over latency, upload bytes, device time, accuracy drop "
                            "and fidelity (in the JSON as 'pareto'; with --plot, also PNG's -pareto.png beside it)")

    def run(self, a):
        from tlcut.toolchain import plan as planmod
        from tlcut.toolchain import plan_report

        dev = planmod.load_profile(a.device, "device")
        if a.cloud:
            return self.three_tiers(a, planmod, dev)
        if len(a.edge) > 1:
            raise TlcutError("several --edge profiles are candidate hosts of a three-tier plan; add --cloud, or give one")
        edge = planmod.load_profile(a.edge[0].split("=", 1)[-1], "edge")
        cons = planmod.Constraints(min_cut=a.min_cut, max_device_ms=a.max_device_ms,
                                   max_upload_bytes=a.max_upload_bytes, tl=a.tl, max_accuracy_drop=a.max_accuracy_drop,
                                   max_latency_ms=a.max_latency_ms, min_fidelity=a.min_fidelity)
        if a.min_fidelity is not None and not 0 <= a.min_fidelity <= 1:
            raise TlcutError(f"--min-fidelity is a share of inputs, 0..1, got {a.min_fidelity:g}")
        if a.min_fidelity is not None and not a.accuracy:
            raise TlcutError("--min-fidelity reads what the bundle recorded: add --accuracy BUNDLE")
        accuracy = b = None
        if a.accuracy:
            from tlcut.bundle import Bundle

            b = Bundle.open(a.accuracy)
            if b.model_sha256 != dev.model_sha256:
                raise TlcutError(f"bundle '{a.accuracy}' holds another model than the profiles; give the bundle they were benched from")
            accuracy = b.accuracy
        tiles, link = [], None
        if a.tiles or a.tiles_link:
            from tlcut.tiles_folder import read_tiles

            if not a.tiles:
                raise TlcutError("--tiles-link belongs to --tiles DIR")
            tiles = [{**read_tiles(d), "_path": d} for d in a.tiles]
            if a.tiles_link:
                try:
                    mbps, ms = (float(v) for v in a.tiles_link.split(","))
                except ValueError:
                    raise TlcutError(f"--tiles-link '{a.tiles_link}' is not MBPS,MS like 1000,0.2") from None
                if mbps <= 0 or ms < 0:
                    raise TlcutError(f"--tiles-link needs a bandwidth > 0 and a latency >= 0, got '{a.tiles_link}'")
                link = planmod.Network(up_mbps=mbps, rtt_ms=ms, down_mbps=mbps, source="--tiles-link")
        result = planmod.plan(dev, edge, self.net.network, cons, accuracy, objective=a.objective, tiles=tiles,
                              tiles_link=link, bundle=b, pareto=a.pareto)
        if a.plot:
            plan_report.plot(result, a.plot)
            say(f"[plan] wrote {a.plot}")
            if a.pareto:
                pp = Path(a.plot).with_name(Path(a.plot).stem + "-pareto.png")
                plan_report.plot_pareto(result, pp)
                say(f"[plan] wrote {pp}")
        if a.output and a.output != "-":
            result.save(a.output)
        elif a.json:
            emit_json(result.to_json())
        if not a.json:
            print(plan_report.format_table(result, top=a.top))
            if a.pareto:
                print(plan_report.format_pareto(result))

    def three_tiers(self, a, planmod, dev):
        from tlcut.toolchain import plan_report, plan_tiers

        if not a.network:
            raise TlcutError("a three-tier plan needs --network CSV with a device->edge and an edge->cloud row per host")

        def named(specs, default):
            out = []
            for spec in specs:
                name, _, path = spec.rpartition("=")
                out.append((name or (default if len(specs) == 1 else Path(path).stem), planmod.load_profile(path, "edge")))
            return out

        def pairs(specs, what, conv):
            out = {}
            for spec in specs:
                k, sep, v = spec.partition("=")
                if not sep:
                    raise TlcutError(f"{what} takes KEY=VALUE, got '{spec}'")
                out[k.strip()] = conv(v.strip())
            return out

        cut_index = {c["layer"]: c["index"] for c in dev.default.figures["cuts"]}

        def cut(ref):
            if ref.isdigit():
                return int(ref)
            if ref not in cut_index:
                raise TlcutError(f"cut '{ref}' is neither an index nor a layer of the profiled model")
            return cut_index[ref]

        must = {cut(k): v for k, v in pairs(a.must, "--must", str).items()}
        must_not: dict = {}
        for k, v in pairs(a.must_not, "--must-not", str).items():
            must_not.setdefault(cut(k), []).append(v)
        times = pairs(a.tier_time, "--tier-time", str)
        try:
            upload = pairs(a.tier_upload, "--tier-upload", int)
            ms = {t: float(v) for t, v in times.items() if not v.endswith("%")}
            pct = {t: float(v[:-1]) for t, v in times.items() if v.endswith("%")}
        except ValueError:
            raise TlcutError("--tier-upload takes TIER=BYTES and --tier-time TIER=MS or TIER=PCT%") from None
        for t in [*upload, *times]:
            if t not in plan_tiers.TIERS:
                raise TlcutError(f"unknown tier '{t}'; use device, edge or cloud")
        rows = planmod.read_network_csv(a.network)
        hops = {}
        for (src, dst), (ping, bw) in rows.items():
            back = rows.get((dst, src))
            hops[(src, dst)] = planmod.Network(up_mbps=bw, rtt_ms=ping, down_mbps=back[1] if back else 10 * bw,
                                               source=a.network)
        cons = plan_tiers.TierConstraints(must=must, must_not=must_not, max_upload_bytes=upload, max_time_ms=ms,
                                          max_time_pct=pct)
        result = plan_tiers.plan_tiers((a.device_name, dev), named(a.edge, a.edge_name), named(a.cloud, "cloud"), hops,
                                       cons, tl=a.tl, top=max(a.top, 50))
        if a.output and a.output != "-":
            result.save(a.output)
        elif a.json:
            emit_json(result.to_json())
        if not a.json:
            print(plan_report.format_tiers(result, top=a.top))


VERBS = [Bench, Plan]
