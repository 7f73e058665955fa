"""The testbed's stand-in for a user without root: device and edge on loopback.

The uplink is tlcut's relay pacing the device's bytes to the link rate and holding them for the
latency (user space, lab/relay.py); the device is slowed by stretching every engine run to
1/quota times its duration (`--slowdown`, runtime/backends/base.py) instead of a cgroup quota;
device and edge are pinned to different cores with taskset where it exists. The same interface
as ``testbed.Testbed`` (lab/emulation.py), so the demo and the benchmarks run on either.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tlcut.errors import TlcutError
from tlcut.lab.emulation import Emulation, stop


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackState:
    port: int
    delay_method: str = "relay"

    @property
    def device_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def edge_bind(self) -> str:
        return f"tcp://127.0.0.1:{self.port + 1}"


class Loopback(Emulation):
    """Context manager: ``with Loopback(config) as lb: lb.popen("edge", [...])``."""

    kind = "loopback"

    def __init__(self, config, log=print):
        super().__init__(config, log)
        self.state = LoopbackState(port=_free_pair())
        self._relay = None
        self._control = None

    @property
    def slowdown(self) -> float:
        return 1.0 / self.config.device_quota

    def describe(self) -> str:
        c = self.config
        return (f"loopback without root: uplink {c.bandwidth_mbps:g} Mbit/s and {c.latency_ms:g} ms by tlcut's pacing "
                f"relay (user space), device slowed {self.slowdown:g}x by stretching each engine run, "
                f"device on core {c.device_cpus}, edge on core {c.edge_cpus}")

    def up(self) -> LoopbackState:
        c = self.config
        if c.bandwidth_mbps <= 0 or c.latency_ms < 0 or not 0 < c.device_quota <= 1:
            raise TlcutError("loopback emulation: bandwidth must be > 0, latency >= 0 and the device quota in (0, 1]")
        fd, self._control = tempfile.mkstemp(prefix="tlcut-link-")
        os.close(fd)
        self.set_link(c.bandwidth_mbps, c.latency_ms)
        argv = [sys.executable, "-m", "tlcut.lab.relay", f"127.0.0.1:{self.state.port}",
                f"127.0.0.1:{self.state.port + 1}", str(c.latency_ms), str(c.bandwidth_mbps), self._control]
        self._relay = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._relay.poll() is not None:
                raise TlcutError(f"the pacing relay failed: {self._relay.stderr.read().decode()[-300:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.state.port), 0.2):
                break
            time.sleep(0.05)
        self.log(f"[loopback] {self.describe()}")
        return self.state

    def set_link(self, mbps: float, ms: float) -> None:
        """Change the link's rate and delay now (a trace replay calls this)."""
        tmp = self._control + ".new"
        with open(tmp, "w") as f:
            f.write(f"{mbps} {ms}\n")
        os.replace(tmp, self._control)

    def _undo(self) -> None:
        if self._control:
            with contextlib.suppress(OSError):
                os.unlink(self._control)
        stop([self._relay])


def _free_pair() -> int:
    """A port P with P+1 free too (relay on P, edge on P+1)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise TlcutError("no two adjacent free ports on loopback")
