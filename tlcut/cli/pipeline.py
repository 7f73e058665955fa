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
        g = p.add_argument_group("int8 calibration (--precision int8)")
        g.add_argument("--calib", metavar="DATA", help="calibration images: 'elpv' (its training split) or a folder")
        g.add_argument("--calib-method", default="entropy", choices=METHODS,
                       help="how activation ranges are chosen (default entropy)")
        g.add_argument("--calib-count", type=int, default=64, metavar="N", help="calibration images (default 64)")
        from tlcut.toolchain.targets import TARGETS

        t = p.add_argument_group("a device's deployment folder (--target)")
        t.add_argument("--target", choices=TARGETS,
                       help="write a folder for this kind of device instead of compiling into the bundle")
        t.add_argument("--cut", metavar="K", help="the cut the device runs the head of (or --plan's best)")
        t.add_argument("-o", "--output", metavar="DIR", help="the folder to write")
        t.add_argument("--edge-endpoint", metavar="tcp://HOST:PORT", help="where the device reaches its edge")
        t.add_argument("--edge-key", metavar="PUBLIC", help="the edge's public CURVE key (NAME.key from `tlcut keys`)")
        t.add_argument("--force", action="store_true", help="replace an existing DIR")

    def run(self, a):
        from tlcut.toolchain.compile import compile_cuts, select_cuts

        b = self.b.bundle
        if a.target:
            return self.run_target(a, b)
        for flag, value in (("--cut", a.cut), ("-o", a.output), ("--edge-endpoint", a.edge_endpoint),
                            ("--edge-key", a.edge_key), ("--force", a.force)):
            if value:
                raise TlcutError(f"{flag} belongs to --target (a device's folder); to compile halves into the "
                                 f"bundle give --cuts K, or add --target jetson")
        spec = str(best_cut_of_plan(a.plan, b)) if a.plan else a.cuts
        if a.calib and self.be.precision != "int8":
            raise TlcutError("--calib calibrates int8 halves; add --precision int8")
        written = compile_cuts(b, select_cuts(b, spec), tl=a.tl, backend=self.be.backend, threads=self.be.threads,
                               precision=self.be.precision, calib=a.calib, calib_method=a.calib_method,
                               calib_count=a.calib_count, progress=bar("compile", "cut"))
        for k, arts in written.items():
            say(f"[compile] cut {k}: {', '.join(a.file for a in arts)}")

    def run_target(self, a, b):
        from tlcut.toolchain.targets import write_jetson

        if a.cuts:
            raise TlcutError(f"--target {a.target} writes one cut: give --cut K, not --cuts")
        if self.be.precision != "float32" or a.calib:
            raise TlcutError(f"--target {a.target} takes every precision the bundle already has for the cut; compile "
                             f"int8 first: `tlcut compile {b.path} --cuts K --precision int8 --calib elpv`")
        if a.backend != "onnxrt" or a.providers != "cpu":
            raise TlcutError(f"--target {a.target} writes ONNX for the device to build its own engines; drop "
                             f"--backend/--providers")
        if not a.output:
            raise TlcutError(f"--target {a.target} needs -o DIR, the folder to write")
        cut = a.cut if a.cut is not None else (best_cut_of_plan(a.plan, b) if a.plan else None)
        if cut is None:
            raise TlcutError(f"--target {a.target} needs the cut the device runs: --cut K (or --plan PLAN)")
        tl = None if a.tl == "both" else a.tl == "on"  # both: the TL where it applies
        write_jetson(b, cut, a.output, tl=tl, endpoint=a.edge_endpoint, edge_key=a.edge_key, force=a.force,
                     progress=say)


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

    def run(self, a):
        from tlcut.toolchain.bench import bench

        if self.be.precision != "float32":
            raise TlcutError("bench profiles the float32 model; time int8 halves with benchmarks/engines.py")
        prof = bench(self.b.bundle, role=a.role, warmup=a.warmup, iterations=a.iterations, threads=self.be.threads,
                     check=a.check, backend=self.be.backend, progress=say, bar=bar("bench", "cut"),
                     slowdown=a.slowdown)
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
        p.add_argument("--edge", required=True, metavar="PROFILE", help="profile JSON from `tlcut bench --role edge`")
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
        edge = planmod.load_profile(a.edge, "edge")
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
        result = planmod.plan(dev, edge, self.net.network, cons, accuracy, objective=a.objective)
        if a.plot:
            planmod.plot(result, a.plot)
            say(f"[plan] wrote {a.plot}")
        if a.json or (a.output and a.output != "-"):
            emit_json(result, a.output if a.output else None)
        if not a.json:
            print(planmod.format_table(result, top=a.top))


VERBS = [Export, Cuts, Compile, Bench, Plan]
