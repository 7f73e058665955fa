"""The offline verbs that make and fill a bundle: export, cuts, compile."""

from __future__ import annotations

from tlcut.cli import Verb, bar, emit_json, say
from tlcut.cli.args import BackendArgs, BundleArgs, tl_words
from tlcut.cli.from_plan import PlanArgs, describe_engines, given, track
from tlcut.errors import TlcutError
from tlcut.calibrate.int8 import METHODS


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
        self.plan = PlanArgs(self.b, "both", help_plan="compile exactly what this plan JSON's best candidate runs "
                                                       "(its cut, with or without the TL, each side's engine and "
                                                       "precision) instead of --cuts")
        return [self.b, self.plan, self.be]

    def add(self, p):
        p.add_argument("--cuts", help="cuts to compile: indices, ranges (3-7), tensor or layer names, or 'all'")
        p.add_argument("--tl", default="both", metavar="on|off|both|KIND",
                       help="halves with the TL, without, or both (default both, where the TL applies); or name the "
                            "TL's kind (pool, bottleneck:C, ...), refused at a cut where the bundle holds no such "
                            "kind trained")
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
        track(p)  # after every flag it watches is added

    def run(self, a):
        from tlcut.toolchain.compile import compile_cuts, select_cuts

        b = self.b.bundle
        tl_words(a.tl, b, [])  # a misspelt --tl is one line before anything else
        if a.target:
            return self.run_target(a, b)
        for flag, value in (("--cut", a.cut), ("-o", a.output), ("--edge-endpoint", a.edge_endpoint),
                            ("--edge-key", a.edge_key), ("--force", a.force), ("--max-batch", a.max_batch),
                            ("--preferred-batch", a.preferred_batch), ("--max-queue-delay-us", a.max_queue_delay_us)):
            if value:
                raise TlcutError(f"{flag} belongs to --target (a device's folder); to compile halves into the "
                                 f"bundle give --cuts K, or add --target jetson")
        if self.plan.deployment is not None:
            if a.to is not None:
                raise TlcutError("--to writes a middle part of three tiers; a two-tier plan has none: drop --to")
            return self.run_plan(a, b)
        spec, tl = a.cuts, a.tl
        if a.to is not None:
            from tlcut.toolchain.compile import compile_middle

            starts = select_cuts(b, spec)
            if len(starts) != 1 or self.be.precision != "float32" or a.batch != "1":
                raise TlcutError("--to writes one middle part: give one cut with --cuts, at float32, batch 1")
            for art in compile_middle(b, starts[0], b.cut(a.to), tl=tl, to_tl=a.to_tl == "on"):
                say(f"[compile] middle part of cut {art.cut}{' + TL' if art.tl else ''} to cut {art.to[0]}: {art.file}")
            return
        if a.calib and self.be.precision != "int8":
            raise TlcutError("--calib calibrates int8 halves; add --precision int8")
        written = compile_cuts(b, select_cuts(b, spec), tl=tl, backend=self.be.backend, threads=self.be.threads,
                               precision=self.be.precision, calib=a.calib, calib_method=a.calib_method,
                               calib_count=a.calib_count, calib_batch=a.calib_batch, batch=a.batch,
                               progress=bar("compile", "cut"), say=say)
        for k, arts in written.items():
            say(f"[compile] cut {k}: {', '.join(a.file for a in arts)}")

    def run_plan(self, a, b):
        """The plan's halves at each side's precision, built for each side's engine; int8 calibrated."""
        from tlcut.cli.from_plan import missing_library
        from tlcut.toolchain.compile import compile_cuts

        d, plan = self.plan.deployment, a.plan
        p = d.placement
        sides = []  # (backend, precision, threads) of each side that runs a half
        for side, engine in (("device", d.device), ("edge", d.edge)):
            runs = p.where == "split" or p.where == side
            want = {"backend": engine.backend, "precision": engine.precision, "threads": engine.threads}
            for dest, value in want.items():
                if value is not None and dest in given(a) and runs and getattr(a, dest) != value:
                    raise TlcutError(f"{'--' + dest} {getattr(a, dest)} disagrees with the plan in '{plan}', which runs "
                                     f"{describe_engines(d)} ({d.label}); drop {'--' + dest}")
            if runs:
                sides.append((engine.backend or self.be.name, engine.precision or self.be.precision,
                              engine.threads or self.be.threads))
        int8 = any(prec == "int8" for _, prec, _ in sides)
        if int8 and not a.calib:
            raise TlcutError(f"plan '{plan}' runs int8 ({describe_engines(d)}): calibrate it with --calib elpv "
                             "or --calib FOLDER")
        if a.calib and not int8:
            raise TlcutError(f"--calib calibrates int8 halves; plan '{plan}' runs none ({describe_engines(d)})")
        if p.cut is None and not int8:
            raise TlcutError(f"the plan's best placement is {d.label}, which has no cut to compile; serve and run it "
                             f"as it is with --plan {plan}")
        from tlcut.runtime import backends

        jobs = {}  # (precision, backend that builds) -> threads; ONNX-only backends share the plain halves
        for backend, prec, threads in sides:
            lib = missing_library(backend)
            builds = backends.get(backend).builds
            if lib and builds:
                raise TlcutError(f"plan '{plan}' runs {backend}, which builds its own files, and this machine lacks "
                                 f"{lib}: install it, or compile on the machine that runs it")
            jobs.setdefault((prec, backend if builds else backends.DEFAULT), threads)
        cuts = [b.cuts[p.cut]] if p.cut is not None else []
        if p.tl_kind:  # the plan's learned TL: compiled only where this bundle holds it trained
            tl_words(p.tl_kind, b, [p.cut])
        for (prec, backend), threads in sorted(jobs.items()):
            written = compile_cuts(b, cuts, tl="on" if p.tl else "off", backend=backend, threads=threads,
                                   precision=prec, calib=a.calib if prec == "int8" else None,
                                   calib_method=a.calib_method, calib_count=a.calib_count, calib_batch=a.calib_batch,
                                   batch=a.batch, progress=bar("compile", "cut"), say=say)
            for k, arts in written.items():
                say(f"[compile] cut {k} ({prec}, {backend}): {', '.join(x.file for x in arts)}")
        choice = f" --choice {a.choice}" if a.choice is not None else ""
        say(f"[compile] the plan's choice is {d.label} ({describe_engines(d)}): serve it with `tlcut serve {b.path} "
            f"--plan {plan}{choice}` and run it with `tlcut run {b.path} --plan {plan}{choice} --edge ...` "
            f"(that is {placement_flags(p)})")

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
        chosen = plan_choice(self.plan) if a.cut is None else None
        cut = a.cut if a.cut is not None else (chosen.cut if chosen else None)
        if cut is None:
            raise TlcutError(f"--target {a.target} needs the cut the device runs: --cut K (or --plan PLAN)")
        if chosen and chosen.tl_kind:
            tl_words(chosen.tl_kind, b, [chosen.cut])
        words = tl_words(a.tl, b, [cut])  # a kind: on, where the bundle holds it trained at the cut
        tl = chosen.tl if chosen else None if words == "both" else words == "on"  # both: the TL where it applies
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
        index = write_repository(b, a.cut or [], a.output, tl=tl_words(a.tl, b, a.cut or []), instances=a.instances, kind=a.kind,
                                 max_batch=a.max_batch, preferred_batch=pref, max_queue_delay_us=a.max_queue_delay_us,
                                 precision=self.be.precision, force=a.force, progress=say)
        say(f"[triton] wrote {len(index)} models to {a.output}: `tritonserver --model-repository {a.output}`")


def plan_choice(plan_args):
    """The placement --plan chose (its best, or --choice N), or None."""
    d = plan_args.deployment
    if d is None:
        return None
    if d.placement.cut is None:
        raise TlcutError(f"the plan's best placement is {d.label}, which has no cut to compile")
    return d.placement


def placement_flags(p) -> str:
    """The `tlcut run` flags that run placement ``p``."""
    cut = {"device": "device", "edge": "input"}.get(p.where, p.cut)
    q = f" --jpeg-quality {p.quality}" if p.quality is not None else ""
    return f"--cut {cut} --tl {'on' if p.tl else 'off'} --encoding {p.encoding}{q}"


VERBS = [Export, Cuts, Compile]
