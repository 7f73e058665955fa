"""Serve a bundle on an emulated edge and run placements against it from the emulated device.

The demo and the benchmarks measure through this one harness, and each step is the tlcut verb a
user would type (`tlcut serve`, `tlcut run`), one thread each, so what is measured is what ships.
The link is plain TCP (``--insecure``): the emulation is a lab link on one machine, and CURVE's
cost is measured on its own in benchmarks/reliability.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from tlcut.errors import TlcutError
from tlcut.lab import testbed as tbm
from tlcut.lab.emulation import stop
from tlcut.lab.loopback import Loopback
from tlcut.placement import DEVICE, EDGE, Placement


def tlcut(*args) -> list[str]:
    """The command line of a tlcut verb, run by this Python."""
    return [sys.executable, "-m", "tlcut", *map(str, args)]


def pick(how: str = "auto") -> tuple[type, str | None]:
    """(the emulation to run on, why the testbed cannot be built here or None): the testbed where
    it can be built or where asked (``how`` is auto, testbed or loopback), else loopback."""
    why = tbm.available()
    if how == "testbed" and why:
        raise TlcutError(f"--emulation testbed: {why}; run as root (e.g. sudo), or use --emulation loopback")
    return (tbm.Testbed if how == "testbed" or (how == "auto" and not why) else Loopback), why


def check(r: subprocess.CompletedProcess, what: str) -> None:
    """A one-line error where a step's process failed (its own output already said why)."""
    if r.returncode != 0:
        raise TlcutError(f"step '{what}' failed (exit {r.returncode}); see the lines above")


def run_flags(pl: Placement) -> list:
    """``pl`` as `tlcut run`'s placement flags."""
    cut = {DEVICE: "device", EDGE: "input"}.get(pl.where, pl.cut)
    return ["--cut", cut, "--tl", "on" if pl.tl else "off", "--encoding", pl.encoding,
            *(["--jpeg-quality", pl.quality] if pl.quality else [])]


class Harness:
    """Edges serving ``bundle`` inside the emulation ``emu``, and placements run from its device,
    ``requests`` timed (after ``warmup``) on ``images`` each. Leaving the ``with`` stops the edges."""

    def __init__(self, emu, bundle, *, requests: int = 30, warmup: int = 3, images: str | None = None):
        self.emu, self.bundle = emu, Path(bundle)
        self.requests, self.warmup, self.images = requests, warmup, images
        self._served: list[subprocess.Popen] = []
        self.serving: list[str] | None = None  # the flags of the last edge started, for the run records

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def bench(self, role: str, out: Path, iterations: int, engines: str | None = "onnxrt:float32") -> None:
        """`tlcut bench` of every cut as ``role`` (a cloud benches as an edge), the profile to ``out``.
        ``engines``: the configurations to profile (None: every one the bundle and the machine can
        run); by default the one ``run`` and ``serve`` use unless told otherwise, so every plan made
        from the profile runs as it was predicted."""
        r = self.emu.run(role, tlcut("bench", self.bundle, "--role", "device" if role == "device" else "edge",
                                     *(["--engines", engines] if engines else []), "--threads", "1",
                                     "--iterations", iterations,
                                     *(self.emu.device_args() if role == "device" else []), "-o", out))
        check(r, f"bench as {role}")

    def serve(self, *args, role: str = "edge", bind: str | None = None, log: Path | None = None,
              wait: bool = True) -> "Harness":
        """`tlcut serve BUNDLE ARGS` as ``role``, bound where the device reaches the edge unless
        ``bind`` says otherwise, its stderr in ``log``; with ``wait``, once the device's side gets
        an answer from it (loading the halves takes a while). ``with h.serve(...):`` stops what the
        harness serves at the end of the block."""
        argv = tlcut("serve", self.bundle, *args, "--bind", bind or self.emu.state.edge_bind, "--threads", "1",
                     "--insecure")
        with open(log, "w") if log else contextlib.nullcontext() as err:
            p = self.emu.popen(role, argv, stderr=err)
        self._served.append(p)
        self.serving = [str(x) for x in args]
        if wait:
            wait_for_edge(self.emu, p, log)
        return self

    def serve_cuts(self, cuts, log: Path | None = None, engine=None, whole: bool = True) -> "Harness":
        """Serve the tails of ``cuts`` (with and without the TL) and, with ``whole``, the whole model
        (edge only), on ``engine`` (an ``Engine``; None: serve's defaults)."""
        return self.serve(*sum((["--cut", k] for k in cuts), []), *(["--cut", "input"] if whole else []),
                          *engine_flags(engine), log=log)

    def run(self, placement: Placement | list, out: Path, *, inflight: int | None = None) -> dict:
        """`tlcut run` of ``placement`` (or of these placement flags) from the device against the
        edge; what it wrote to ``out``: every request's record and the summary."""
        flags = run_flags(placement) if isinstance(placement, Placement) else list(placement)
        r = self.emu.run("device", tlcut(
            "run", self.bundle, *flags, "--edge", self.emu.state.device_endpoint,
            *(["--images", self.images] if self.images else []), "--requests", self.requests, "--warmup", self.warmup,
            "--threads", "1", "--timeout", "60", "--retries", "0", "--fallback", "off", "--insecure",
            *(["--inflight", inflight] if inflight else []), *self.emu.device_args(), "-o", out))
        check(r, f"run {placement.label if isinstance(placement, Placement) else ' '.join(map(str, flags))}")
        return json.loads(Path(out).read_text())

    def run_deployments(self, rows: dict, folder: Path, say=None) -> dict[str, dict]:
        """Each labelled ``Deployment``'s run with its engines on each side, written to
        ``folder``/run-SLUG.json; a deployment under two labels runs once. An edge serves one engine,
        so one edge is started per edge engine in turn, serving the cuts its deployments need; each
        run record keeps the flags that edge was started with (``edge_served``)."""
        folder = Path(folder)
        groups: dict = {}
        for d in dict.fromkeys(rows.values()):
            groups.setdefault(d.edge if d.placement.where != DEVICE else None, []).append(d)
        if None in groups:  # device only needs no edge: run it beside the first one served
            local = groups.pop(None)
            if groups:
                groups[next(iter(groups))] += local
            else:
                groups[None] = local
        done: dict = {}
        for engine, ds in groups.items():
            cuts = sorted({d.placement.cut for d in ds if d.placement.cut is not None})
            whole = any(d.placement.where == EDGE for d in ds)
            slug = engine_slug(engine)
            if cuts or whole:
                self.serve_cuts(cuts, log=folder / f"edge-{slug}.log", engine=engine, whole=whole)
            for d in ds:
                if say:
                    say(next(k for k, v in rows.items() if v == d), d)
                dev = [] if d.placement.where == EDGE else engine_flags(d.device)
                out = folder / f"run-{d.placement.slug}-{engine_slug(d.device) if dev else 'nothing'}-" \
                               f"{slug if d.placement.where != DEVICE else 'nothing'}.json"
                rec = self.run(run_flags(d.placement) + dev, out)
                rec["edge_served"] = self.serving if d.placement.where != DEVICE else None
                out.write_text(json.dumps(rec))
                done[d] = rec
            self.stop()
        return {label: done[d] for label, d in rows.items()}

    def stop(self) -> None:
        """Stop every edge this harness started."""
        stop(self._served)
        self._served.clear()
        self.serving = None


def engine_flags(engine) -> list[str]:
    """``engine`` (an ``Engine``) as serve's and run's flags; none for None or an unnamed one."""
    if engine is None or engine.backend is None:
        return []
    return ["--backend", engine.backend, "--precision", engine.precision or "float32"]


def engine_slug(engine) -> str:
    return "default" if engine is None or engine.backend is None else f"{engine.backend}-{engine.precision or 'float32'}"


def wait_for_edge(emu, edge: subprocess.Popen, log: Path | None = None, timeout_s: float = 120) -> None:
    """Wait, from the device's side, until the edge answers; a one-line error if it exits first or
    stays silent."""
    code = ("from tlcut.runtime.client import wait_for_edge\n"
            f"wait_for_edge({emu.state.device_endpoint!r}, {timeout_s}, insecure=True)\n")
    probe = emu.popen("device", [sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    see = f"; see {log}" if log else ""
    while probe.poll() is None:
        if edge.poll() is not None:
            probe.kill()
            raise TlcutError(f"the edge server exited at start-up{see}")
        time.sleep(0.5)
    if probe.returncode != 0:
        raise TlcutError(f"the edge did not answer within {timeout_s:.0f} s{see}")

