"""The offline verbs: export, cuts, compile, bench, plan."""

from __future__ import annotations

import json
from pathlib import Path

from tlcut.cli import Verb, bar, emit_json, say
from tlcut.cli.args import BackendArgs, BundleArgs, NetworkArgs
from tlcut.errors import TlcutError
from tlcut.calibrate.int8 import METHODS
from tlcut.placement import TL_CHOICES


def parse_shape(text: str):
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(",") if x)
    except ValueError:
        raise TlcutError(f"--input-shape '{text}' is not a list of integers like 224,224,3") from None
    if not dims or any(d <= 0 for d in dims):
        raise TlcutError(f"--input-shape '{text}' must be positive integers like 224,224,3")
    return dims


class Export(Verb):
    """Convert a Keras model (file or keras.applications name) or an ONNX file into a bundle."""

    name = "export"

    def add(self, p):
        p.add_argument("model", nargs="?", help="a .keras/.h5/.onnx file, or an architecture name (see --list)")
        p.add_argument("-o", "--output", help="bundle directory to write")
        p.add_argument("--weights", help="weights file to load into the model (default: random weights)")
        p.add_argument("--input-shape", metavar="H,W,C", help="input size for a named architecture (default: its own)")
        p.add_argument("--classes", type=int, help="number of classes for a named architecture")
        p.add_argument("--batch", type=int, default=1, help="static batch size of the exported graph (default 1)")
        p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
        p.add_argument("--input-layout", choices=["NCHW", "NHWC"],
                       help="layout of a 4-D input of an ONNX model (Keras models are NHWC)")
        p.add_argument("--force", action="store_true", help="replace an existing bundle")
        p.add_argument("--list", action="store_true", help="list the architecture names and exit")

    def run(self, a):
        from tlcut.toolchain.export import export

        if a.list:
            from tlcut.models import zoo

            print("\n".join(zoo.names()))
            return 0
        if not a.model or not a.output:
            raise TlcutError("usage: tlcut export MODEL -o BUNDLE (or `tlcut export --list`)")
        shape = parse_shape(a.input_shape) if a.input_shape else None
        export(a.model, a.output, weights=a.weights, input_shape=shape, classes=a.classes, batch=a.batch,
               opset=a.opset, input_layout=a.input_layout, force=a.force, progress=say)


class Cuts(Verb):
    """List every valid single-tensor cut of the model, in topological order."""

    name = "cuts"

    def make_groups(self):
        self.b = BundleArgs()
        return [self.b]

    def add(self, p):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--tl-only", action="store_true", help="only cuts where the TL applies")

    def run(self, a):
        from tlcut.toolchain.cuts import format_table

        b = self.b.bundle
        cuts = [c for c in b.cuts if c.tl or not a.tl_only]
        if a.json:
            emit_json({"model": b.name, "sha256": b.model_sha256, "cuts": [c.to_json() for c in cuts]})
        else:
            print(format_table(cuts, name=b.name))


class Compile(Verb):
    """Write the runnable head and tail (with and without the TL) of the chosen cuts into the bundle.

With --target jetson --cut K -o DIR, write instead a folder for one device: its head of cut K at
every precision the bundle has (plus float16), the payload contract, the edge's key and endpoint,
and build_engine.sh, which builds the TensorRT engines on the Jetson itself (--tl both, the default,
means the TL where it applies). DIR is also a bundle that `tlcut run DIR --cut K --edge ...` runs
as it is."""

    name = "compile"

    def make_groups(self):
        self.b, self.be = BundleArgs(), BackendArgs()
        return [self.b, self.be]

    def add(self, p):
        p.add_argument("--cuts", help="cuts to compile: indices, ranges (3-7), tensor or layer names, or 'all'")
        p.add_argument("--plan", help="compile the best cut of this plan JSON instead of --cuts")
        p.add_argument("--tl", default="both", choices=TL_CHOICES,
                       help="halves with the TL, without, or both (default both, where the TL applies)")
        p.add_argument("--batch", default="1", metavar="N|dynamic",
                       help="also write tails of batch N (or a symbolic batch) for an edge that batches requests "
                            "(`tlcut serve --max-batch`); each is checked against the batch-1 tail (default 1: none)")
        m = p.add_argument_group("three tiers: the part an edge runs before it forwards to a cloud")
        m.add_argument("--to", metavar="K", help="write the middle part from --cuts (one cut) to this later cut "
                                                  "(`tlcut serve --cut A --forward EP --to K`)")
        m.add_argument("--to-tl", default="off", choices=["on", "off"],
                       help="end the middle part with the DeviceTL of the --to cut (default off)")
        g = p.add_argument_group("int8 calibration (--precision int8)")
        g.add_argument("--calib", metavar="DATA", help="calibration images: 'elpv' (its training split) or a folder")
        g.add_argument("--calib-method", default="entropy", choices=METHODS,
                       help="how activation ranges are chosen (default entropy)")
        g.add_argument("--calib-count", type=int, default=64, metavar="N", help="calibration images (default 64)")
        g.add_argument("--calib-batch", type=int, default=8, metavar="N",
                       help="images whose intermediate outputs are held at once: memory against speed (default 8)")
        from tlcut.toolchain.targets import TARGETS

        t = p.add_argument_group("a device's deployment folder (--target)")
        t.add_argument("--target", choices=TARGETS,
                       help="write a folder for this kind of device instead of compiling into the bundle")
        t.add_argument("--cut", metavar="K", action="append",
                       help="jetson: the cut the device runs the head of (or --plan's best); triton: a cut whose "
                            "tail to export, repeatable ('input': the whole model, always written)")
        t.add_argument("-o", "--output", metavar="DIR", help="the folder to write")
        t.add_argument("--edge-endpoint", metavar="tcp://HOST:PORT", help="where the device reaches its edge")
        t.add_argument("--edge-key", metavar="PUBLIC", help="the edge's public CURVE key (NAME.key from `tlcut keys`)")
        t.add_argument("--force", action="store_true", help="replace an existing DIR")
        tr = p.add_argument_group("Triton model repository (--target triton; docs/triton.md)")
        tr.add_argument("--instances", type=int, default=1, metavar="N", help="model instances per model (default 1)")
        tr.add_argument("--kind", default="cpu", choices=["cpu", "gpu"], help="instance kind (default cpu)")
        tr.add_argument("--max-batch", type=int, default=0, metavar="N",
                        help="Triton's max_batch_size; above 0 the tails get a symbolic batch dimension, checked "
                             "row by row, and dynamic batching (default 0: batch-1 tails, full shapes)")
        tr.add_argument("--preferred-batch", metavar="N,N", help="dynamic batching's preferred batch sizes")
        tr.add_argument("--max-queue-delay-us", type=int, default=0, metavar="US",
                        help="dynamic batching's max_queue_delay_microseconds (default 0)")

    def run(self, a):
        from tlcut.toolchain.compile import compile_cuts, select_cuts

        b = self.b.bundle
        if a.target:
            return self.run_target(a, b)
        for flag, value in (("--cut", a.cut), ("-o", a.output), ("--edge-endpoint", a.edge_endpoint),
                            ("--edge-key", a.edge_key), ("--force", a.force), ("--max-batch", a.max_batch),
                            ("--preferred-batch", a.preferred_batch), ("--max-queue-delay-us", a.max_queue_delay_us)):
            if value:
                raise TlcutError(f"{flag} belongs to --target (a device's folder); to compile halves into the "
                                 f"bundle give --cuts K, or add --target jetson")
        spec = str(best_cut_of_plan(a.plan, b)) if a.plan else a.cuts
        if a.to is not None:
            from tlcut.toolchain.compile import compile_middle

            starts = select_cuts(b, spec)
            if len(starts) != 1 or self.be.precision != "float32" or a.batch != "1":
                raise TlcutError("--to writes one middle part: give one cut with --cuts, at float32, batch 1")
            for art in compile_middle(b, starts[0], b.cut(a.to), tl=a.tl, to_tl=a.to_tl == "on"):
                say(f"[compile] middle part of cut {art.cut}{' + TL' if art.tl else ''} to cut {art.to[0]}: {art.file}")
            return
        if a.calib and self.be.precision != "int8":
            raise TlcutError("--calib calibrates int8 halves; add --precision int8")
        written = compile_cuts(b, select_cuts(b, spec), tl=a.tl, backend=self.be.backend, threads=self.be.threads,
                               precision=self.be.precision, calib=a.calib, calib_method=a.calib_method,
                               calib_count=a.calib_count, calib_batch=a.calib_batch, batch=a.batch, progress=bar("compile", "cut"))
        for k, arts in written.items():
            say(f"[compile] cut {k}: {', '.join(a.file for a in arts)}")

    def run_target(self, a, b):
        from tlcut.toolchain.targets import write_jetson

        if a.target == "triton":
            return self.run_triton(a, b)
        if a.instances != 1 or a.kind != "cpu" or a.max_batch or a.preferred_batch or a.max_queue_delay_us:
            raise TlcutError("--instances, --kind, --max-batch, --preferred-batch and --max-queue-delay-us are "
                             "for --target triton")
        if a.cut and len(a.cut) > 1:
            raise TlcutError(f"--target {a.target} writes one cut: give --cut K once")
        a.cut = a.cut[0] if a.cut else None

        if a.cuts:
            raise TlcutError(f"--target {a.target} writes one cut: give --cut K, not --cuts")
        if self.be.precision != "float32" or a.calib:
            raise TlcutError(f"--target {a.target} takes every precision the bundle already has for the cut; compile "
                             f"int8 first: `tlcut compile {b.path} --cuts K --precision int8 --calib elpv`")
        if not self.be.is_default:
            raise TlcutError(f"--target {a.target} writes ONNX for the device to build its own engines; drop "
                             f"{self.be.flags}")
        if not a.output:
            raise TlcutError(f"--target {a.target} needs -o DIR, the folder to write")
        cut = a.cut if a.cut is not None else (best_cut_of_plan(a.plan, b) if a.plan else None)
        if cut is None:
            raise TlcutError(f"--target {a.target} needs the cut the device runs: --cut K (or --plan PLAN)")
        tl = None if a.tl == "both" else a.tl == "on"  # both: the TL where it applies
        write_jetson(b, cut, a.output, tl=tl, endpoint=a.edge_endpoint, edge_key=a.edge_key, force=a.force,
                     progress=say)


    def run_triton(self, a, b):
        from tlcut.toolchain.triton_repo import write_repository

        if a.cuts or a.plan:
            raise TlcutError("--target triton exports the tails named by --cut K (repeatable), not --cuts/--plan")
        if not a.output:
            raise TlcutError("--target triton needs -o REPO, the model repository folder to write")
        if a.edge_endpoint or a.edge_key:
            raise TlcutError("--edge-endpoint/--edge-key are for --target jetson; a Triton repository has no keys")
        try:
            pref = [int(x) for x in a.preferred_batch.split(",") if x] if a.preferred_batch else None
        except ValueError:
            raise TlcutError(f"--preferred-batch '{a.preferred_batch}' is not a list of integers like 4,8") from None
        index = write_repository(b, a.cut or [], a.output, tl=a.tl, instances=a.instances, kind=a.kind,
                                 max_batch=a.max_batch, preferred_batch=pref, max_queue_delay_us=a.max_queue_delay_us,
                                 precision=self.be.precision, force=a.force, progress=say)
        say(f"[triton] wrote {len(index)} models to {a.output}: `tritonserver --model-repository {a.output}`")


def load_plan(path, bundle) -> dict:
    """A plan written by `tlcut plan -o`, for the model in ``bundle``."""
    try:
        plan = json.loads(Path(path).read_text())
        plan["best"], plan["ranking"], plan["network"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TlcutError(f"'{path}' is not a plan written by `tlcut plan -o`") from None
    if plan.get("model_sha256") != bundle.model_sha256:
        raise TlcutError(f"plan '{path}' was made for another model than bundle '{bundle.path}'")
    return plan


def best_cut_of_plan(path, bundle):
    best = load_plan(path, bundle)["best"]
    if best.get("cut") is None:
        raise TlcutError(f"the plan's best placement is {best['name']}, which has no cut to compile")
    return best["cut"]


class Bench(Verb):
    """Measure every cut on this machine: head, DeviceTL, serialization, payload, EdgeTL, tail."""

    name = "bench"

    def make_groups(self):
        self.b, self.be = BundleArgs(), BackendArgs()
        return [self.b, self.be]

    def add(self, p):
        p.add_argument("--role", required=True, choices=["device", "edge"], help="which side this machine plays")
        p.add_argument("-o", "--output", help="profile JSON to write (default: stdout)")
        p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
        p.add_argument("--iterations", type=int, default=20, help="timed runs (default 20)")
        p.add_argument("--check", type=int, default=4, metavar="N",
                       help="time the real halves of N cuts against the profiled prefix sums (default 4; 0: none)")
        p.add_argument("--slowdown", type=float, default=1.0, metavar="X",
                       help="lab: emulate a device X times slower by stretching every compute step (default 1)")
        p.add_argument("--images", metavar="DIR",
                       help="images for the input's JPEG size and cost: a folder or 'elpv' (default elpv where installed)")
        p.add_argument("--jpeg-quality", default="90", metavar="Q[,Q...]",
                       help="JPEG qualities to offer edge only at (default 90)")

    def run(self, a):
        from tlcut.toolchain.bench import bench

        try:
            qualities = [int(q) for q in a.jpeg_quality.split(",") if q.strip()]
        except ValueError:
            raise TlcutError(f"--jpeg-quality takes numbers 1..100 separated by commas, got '{a.jpeg_quality}'") from None
        bad = [q for q in qualities if not 1 <= q <= 100]
        if bad:
            raise TlcutError(f"--jpeg-quality must be 1..100, got {bad[0]}")

        if self.be.precision != "float32":
            raise TlcutError("bench profiles the float32 model; time int8 halves with benchmarks/engines.py")
        prof = bench(self.b.bundle, role=a.role, warmup=a.warmup, iterations=a.iterations, threads=self.be.threads,
                     check=a.check, backend=self.be.backend, progress=say, bar=bar("bench", "cut"),
                     slowdown=a.slowdown, images=a.images, jpeg_quality=qualities)
        emit_json(prof, a.output)
        if a.output and a.output != "-":
            say(f"[bench] wrote {a.output}")


class Plan(Verb):
    """Rank every placement (each cut with and without the TL, device only, edge only) by predicted latency."""

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
        p.add_argument("--accuracy", metavar="BUNDLE", help="the bundle whose recorded `tlcut eval` accuracies to use")
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

    def run(self, a):
        from tlcut.toolchain import plan as planmod

        dev = planmod.load_profile(a.device, "device")
        if a.cloud:
            return self.three_tiers(a, planmod, dev)
        if len(a.edge) > 1:
            raise TlcutError("several --edge profiles are candidate hosts of a three-tier plan; add --cloud, or give one")
        edge = planmod.load_profile(a.edge[0].split("=", 1)[-1], "edge")
        cons = planmod.Constraints(min_cut=a.min_cut, max_device_ms=a.max_device_ms,
                                   max_upload_bytes=a.max_upload_bytes, tl=a.tl, max_accuracy_drop=a.max_accuracy_drop,
                                   max_latency_ms=a.max_latency_ms)
        accuracy = None
        if a.accuracy:
            from tlcut.bundle import Bundle

            b = Bundle.open(a.accuracy)
            if b.model_sha256 != dev["model_sha256"]:
                raise TlcutError(f"bundle '{a.accuracy}' holds another model than the profiles; give the bundle they were benched from")
            accuracy = {**b.accuracy, "_source": str(b.path)}
        tiles, link = [], None
        if a.tiles or a.tiles_link:
            from tlcut.bundle import read_tiles

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
                              tiles_link=link)
        if a.plot:
            planmod.plot(result, a.plot)
            say(f"[plan] wrote {a.plot}")
        if a.json or (a.output and a.output != "-"):
            emit_json(result, a.output if a.output else None)
        if not a.json:
            print(planmod.format_table(result, top=a.top))

    def three_tiers(self, a, planmod, dev):
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

        cut_index = {c["layer"]: c["index"] for c in dev["cuts"]}

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
            if t not in planmod.TIERS:
                raise TlcutError(f"unknown tier '{t}'; use device, edge or cloud")
        rows = planmod.read_network_csv(a.network)
        hops = {}
        for (src, dst), (ping, bw) in rows.items():
            back = rows.get((dst, src))
            hops[(src, dst)] = planmod.Network(up_mbps=bw, rtt_ms=ping, down_mbps=back[1] if back else 10 * bw,
                                               source=a.network)
        cons = planmod.TierConstraints(must=must, must_not=must_not, max_upload_bytes=upload, max_time_ms=ms,
                                       max_time_pct=pct)
        result = planmod.plan_tiers((a.device_name, dev), named(a.edge, a.edge_name), named(a.cloud, "cloud"), hops,
                                    cons, tl=a.tl, top=max(a.top, 50))
        if a.json or (a.output and a.output != "-"):
            emit_json(result, a.output if a.output else None)
        if not a.json:
            print(planmod.format_tiers(result, top=a.top))


VERBS = [Export, Cuts, Compile, Bench, Plan]
