"""One interface for the machines the lab emulates on this one: the testbed and loopback.

An emulation gives each role (device, edge, and in the testbed a cloud and edge nodes) a place to
run and an uplink between them; a demo or a benchmark starts processes in a role and changes the
link, and never asks which emulation it has. A subclass says how a role is entered (a namespace,
a cgroup) and how the link is built and torn down; starting, waiting for and stopping processes,
pinning them to their cores and tearing down on Ctrl-C or SIGTERM live here once.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
from abc import ABC, abstractmethod

from tlcut.errors import TlcutError


class Emulation(ABC):
    """Context manager: ``with Emulation(config) as emu: emu.popen("edge", [...])``.

    ``state`` has ``device_endpoint`` (what a device connects to), ``edge_bind`` (what the edge
    server binds) and ``delay_method``; ``kind`` names the emulation in results."""

    kind = ""

    def __init__(self, config, log=print):
        self.config, self.log = config, log
        self._procs: list[subprocess.Popen] = []
        self._old_handlers: dict = {}

    # -- what a subclass implements -------------------------------------------------------------------
    @abstractmethod
    def up(self):
        """Build the link and the roles."""

    @abstractmethod
    def _undo(self) -> None:
        """Undo what ``up`` made (after every process this emulation started has stopped); never raises."""

    @abstractmethod
    def set_link(self, mbps: float, ms: float) -> None:
        """Change the uplink's rate and delay in place (a trace replay calls this)."""

    @abstractmethod
    def describe(self) -> str:
        """One sentence for the results: how the link and the device are emulated."""

    def cpus(self) -> dict[str, str]:
        """Each role a process may run as, and the cores it is pinned to."""
        return {"device": self.config.device_cpus, "edge": self.config.edge_cpus}

    def _enter(self, role: str) -> list[str]:
        """The command prefix that puts a process into ``role``'s host (a namespace)."""
        return []

    def _popen_kw(self, role: str) -> dict:
        """Extra ``subprocess.Popen`` arguments for ``role`` (a cgroup to join)."""
        return {}

    @property
    def slowdown(self) -> float:
        """How much a device-side verb must stretch its engine runs to be the emulated device."""
        return 1.0

    # -- the shared part --------------------------------------------------------------------------------
    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.down()
        finally:
            for s, h in self._old_handlers.items():
                signal.signal(s, h)
            self._old_handlers = {}

    def down(self) -> None:
        """Stop what ``popen`` started, then undo what ``up`` made."""
        stop(self._procs)
        self._procs.clear()
        self._undo()

    def device_args(self) -> list[str]:
        """Flags that make a device-side tlcut verb emulate the slower device."""
        return [] if self.slowdown == 1.0 else ["--slowdown", f"{self.slowdown:g}"]

    def command(self, role: str, argv: list[str]) -> list[str]:
        """``argv`` as it runs in ``role``: entered into its host and pinned to its cores."""
        cpus = self.cpus()
        if role not in cpus:
            raise TlcutError(f"{self.kind} role must be {_one_of(list(cpus))}, got '{role}'")
        pin = ["taskset", "-c", cpus[role]] if shutil.which("taskset") else []
        return [*self._enter(role), *pin, *argv]

    def popen(self, role: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` in ``role``; it is stopped when the emulation goes down."""
        p = subprocess.Popen(self.command(role, argv), **self._popen_kw(role), **kw)
        self._procs.append(p)
        return p

    def run(self, role: str, argv: list[str], capture_output: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``role`` to its end, as ``subprocess.run`` would."""
        if capture_output:
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p = self.popen(role, argv, **kw)
        try:
            out, err = p.communicate()
        except BaseException:
            p.kill()
            raise
        finally:
            self._procs.remove(p)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def stop(procs) -> None:
    """Terminate ``procs`` (None entries skipped), wait a little, then kill what is left."""
    procs = [p for p in procs if p is not None]
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(5)
        if p.poll() is None:
            p.kill()


def _one_of(roles: list[str]) -> str:
    """'device or edge', 'device, edge or cloud', then edge nodes as 'node0..node2'."""
    plain = [r for r in roles if not r.startswith("node")]
    words = plain[0] if len(plain) == 1 else f"{', '.join(plain[:-1])} or {plain[-1]}"
    nodes = len(roles) - len(plain)
    return words + (f" or node0..node{nodes - 1}" if nodes else "")


def _raise_interrupt(*_):
    raise KeyboardInterrupt
