"""--plan FILE [--choice N]: a verb's settings taken from a plan, so the user re-types nothing.

compile, serve and run read the chosen candidate (the best, or the N-th of `tlcut plan`'s table)
for their side: the cut, the TL, the wire encoding and its quality, the engine's backend,
precision and threads. A flag typed on the command line that says the same is fine; one that
says otherwise is refused, as git refuses contradicting options: a plan is followed exactly or
not at all. Which flags were typed is recorded as argparse meets them (``track``), so a flag
typed with its default value is seen too. A plan that the bundle or this machine cannot run (an
engine not installed, halves not compiled at its precision, another model) is a one-line error
that says what to do, before anything loads.
"""

from __future__ import annotations

import importlib.util

from tlcut.cli import say
from tlcut.cli.args import Group
from tlcut.errors import TlcutError

#: Flag destination -> the flag as the user types it.
FLAGS = {"cut": "--cut", "tl": "--tl", "encoding": "--encoding", "jpeg_quality": "--jpeg-quality",
         "backend": "--backend", "precision": "--precision", "threads": "--threads", "cuts": "--cuts"}
#: The library each backend needs on this machine (a backend imports it only when it runs), and how to get it.
LIBRARIES = {"onnxrt": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
INSTALL = {"onnxrt": "pip install onnxruntime", "openvino": "pip install 'tlcut[openvino]'",
           "tensorrt": "pip install 'tlcut[tensorrt]' on a machine with an NVIDIA GPU"}
_GIVEN = "_tlcut_given"
_TRACKED: dict[type, type] = {}


def track(parser, dests=tuple(FLAGS)) -> None:
    """Record on the namespace which of ``dests`` the user typed (argparse calls an action only for
    a flag typed; defaults are set without it)."""
    for act in parser._actions:
        if act.dest in dests and type(act) not in _TRACKED.values():
            act.__class__ = _tracked(type(act))


def _tracked(cls: type) -> type:
    if cls not in _TRACKED:
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, _GIVEN, getattr(namespace, _GIVEN, frozenset()) | {self.dest})
            cls.__call__(self, parser, namespace, values, option_string)

        _TRACKED[cls] = type(f"Given{cls.__name__}", (cls,), {"__call__": __call__})
    return _TRACKED[cls]


def given(a) -> frozenset:
    """The tracked flags the user typed."""
    return getattr(a, _GIVEN, frozenset())


def describe_engines(d) -> str:
    def one(e):
        return " ".join(str(x) for x in (e.backend, e.precision) if x) or "as benched"

    return f"device {one(d.device)}, edge {one(d.edge)}"


def missing_library(backend: str) -> str | None:
    """The library ``backend`` needs that this machine lacks, or None."""
    from tlcut.runtime import backends

    if backend not in backends.names():
        raise TlcutError(f"the plan names backend '{backend}', which this tlcut does not have "
                         f"({', '.join(backends.names())}); make the plan again with this tlcut")
    lib = LIBRARIES.get(backend)
    return lib if lib and importlib.util.find_spec(lib) is None else None


class PlanArgs(Group):
    """--plan and --choice for one side: "device" (run), "edge" (serve) or "both" (compile, which
    checks its engine flags itself: two sides may differ)."""

    title = "from a plan (`tlcut plan -o`)"

    def __init__(self, bundle, side: str, help_plan: str | None = None):
        assert side in ("device", "edge", "both")
        self.bundle_args, self.side, self.help_plan = bundle, side, help_plan

    def add(self, p):
        p.add_argument("--plan", metavar="PLAN", help=self.help_plan or (
            f"take the {'device' if self.side == 'device' else 'edge'}'s settings from this plan JSON: the "
            "placement, the engine, its precision and threads; a flag that contradicts the plan is refused"))
        p.add_argument("--choice", type=int, metavar="N",
                       help="the plan's N-th allowed candidate, as `tlcut plan` ranks them (default: its best)")

    def parse(self, a):
        from tlcut.deployment import Plan

        self.path, self.plan, self.deployment, self.choice = a.plan, None, None, a.choice
        if not a.plan:
            if a.choice is not None:
                raise TlcutError("--choice N picks a candidate of --plan PLAN; add --plan")
            return
        b = self.bundle_args.bundle
        self.plan = Plan.load(a.plan, b)
        d = self.deployment = self.plan.choose(a.choice)
        if self.side == "both":
            self.follow(a, {"tl": "on" if d.placement.tl else "off"})
            if "cuts" in given(a):
                raise TlcutError(f"--cuts and --plan both name what to compile; drop --cuts (the plan chose {d.label})")
            return
        if self.side == "edge" and d.placement.where == "device":
            raise TlcutError(f"the plan's choice{self.which} is {d.label}: the edge serves nothing; run it with "
                             f"`tlcut run {b.path} --plan {a.plan}`, or pick another candidate with --choice N")
        if self.side == "edge" and d.tiles is not None:
            raise TlcutError(f"the plan's choice{self.which} is {d.label}: serve it with `tlcut serve {b.path} "
                             f"--cut {d.placement.cut} --tiles {d.tiles.get('folder')} --workers ...`")
        if self.side == "device" and getattr(a, "adapt", None):
            raise TlcutError("--plan runs one candidate; --adapt switches between a plan's: choose one")
        settings = d.settings(self.side)
        if self.side == "edge":
            settings["cut"] = [settings["cut"]]
        self.follow(a, settings)
        self.check_machine(b, d, a)
        threads = f", {a.threads} threads" if a.threads else ""
        say(f"[{'serve' if self.side == 'edge' else 'run'}] plan {a.plan}{self.which}: {d.label}; "
            f"{describe_engines(d)}; this side runs {a.backend} {a.precision}{threads}")

    def record(self) -> dict:
        """What a run records of the plan it followed: the file, the candidate and both sides' engines."""
        d = self.deployment
        return {"file": str(self.path), "choice": self.choice, "label": d.label, "placement": d.placement.to_json(),
                "engines": {"device": d.device.to_json(), "edge": d.edge.to_json()}}

    @property
    def which(self) -> str:
        return "" if self.choice is None else f" (candidate {self.choice})"

    def follow(self, a, settings: dict) -> None:
        """Set ``settings`` on ``a``; a typed flag that says otherwise is refused."""
        b = self.bundle_args.bundle
        for dest, want in settings.items():
            have = getattr(a, dest, None)
            if dest in given(a) and not _same(b, dest, have, want):
                shown = have[0] if isinstance(have, list) and len(have) == 1 else have
                plan_says = want[0] if isinstance(want, list) else want
                raise TlcutError(f"{FLAGS[dest]} {shown} disagrees with the plan in '{a.plan}', which says "
                                 f"{FLAGS[dest]} {plan_says} "
                                 f"({self.deployment.label}; {describe_engines(self.deployment)}); drop "
                                 f"{FLAGS[dest]}, or pick another candidate with --choice N")
            setattr(a, dest, want)

    def check_machine(self, b, d, a) -> None:
        """What this side runs exists on this machine and in the bundle, or a line saying what to do."""
        engine = d.device if self.side == "device" else d.edge
        backend, precision = a.backend, a.precision
        lib = missing_library(backend)
        if lib:
            raise TlcutError(f"plan '{a.plan}' runs the {self.side} on {backend}, and this machine lacks {lib}: "
                             f"install it ({INSTALL.get(backend, 'pip install ' + lib)}), or pick a candidate on another engine "
                             "with --choice N")
        p = d.placement
        kind = "head" if self.side == "device" else "tail"
        if p.where == "split" and p.tl_kind:  # the plan's learned TL, trained in this bundle at the cut, or one line
            from tlcut import transfer

            transfer.held(b.cuts[p.cut], p.tl_kind)
        if p.where == "split":
            found, what = b.find(kind, p.cut, p.tl, precision=precision), f"{kind}{' with the TL' if p.tl else ''} of cut {p.cut}"
        elif (p.where == "device") == (self.side == "device"):
            found, what = b.find("model", precision=precision), "whole model"
        else:
            return  # the other side runs everything
        if found is None:
            calib = " --calib DATA" if precision == "int8" else ""
            choice = f" --choice {a.choice}" if a.choice is not None else ""
            raise TlcutError(f"bundle '{b.path}' has no {precision} {what}, which plan '{a.plan}' runs on the "
                             f"{self.side}{' (' + str(engine.backend) + ')' if engine.backend else ''}; run "
                             f"`tlcut compile {b.path} --plan {a.plan}{choice}{calib}` first")


def _same(bundle, dest: str, have, want) -> bool:
    if have == want:
        return True
    if dest == "cut":  # a layer or tensor name for the cut the plan gives as an index
        def idx(x):
            x = str(x[0] if isinstance(x, list) and len(x) == 1 else x).strip().lower()
            if x in ("device", "input", "edge"):
                return {"edge": "input"}.get(x, x)
            try:
                return str(bundle.cut(x).index)
            except TlcutError:
                return x
        return idx(have) == idx(want)
    return False
