"""Link traces: a CSV of ``time_s,mbps,ms`` rows, each holding from its time until the next row's.

    # a comment
    time_s,mbps,ms
    0,57,28
    20,10,28
    40,57,28

``Replayer`` applies a trace to a running link (the testbed's tc shaper and delay, or the loopback
relay's settings) on its own thread, changing the link in place at each row's time. Traces ship in
lab/traces/: a stepped one (57 -> 10 -> 57 Mbit/s), one shaped like a 5G uplink (5-60 Mbit/s,
changes every few seconds), and a longer, faster one (5g-1s: 180 s, a new level every second, 2-63
Mbit/s, the round trip moving too).
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tlcut.errors import TlcutError

TRACES = Path(__file__).resolve().parent / "traces"


@dataclass(frozen=True)
class Step:
    t_s: float
    mbps: float
    ms: float


def load(path) -> list[Step]:
    """The trace in ``path`` (or the name of a shipped one: 'stepped', '5g-uplink')."""
    p = Path(path)
    if not p.exists() and (TRACES / f"{path}.csv").is_file():
        p = TRACES / f"{path}.csv"
    try:
        text = p.read_text()
    except OSError as e:
        raise TlcutError(f"cannot read trace '{path}': {e.strerror}; give a CSV of time_s,mbps,ms "
                         f"or one of {', '.join(names())}") from None
    steps: list[Step] = []
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or row[0].strip().startswith("#") or row[0].strip() == "time_s":
            continue
        if len(row) != 3:
            raise TlcutError(f"{p}:{n}: expected time_s,mbps,ms, got {len(row)} fields")
        try:
            t, mbps, ms = (float(x) for x in row)
        except ValueError:
            raise TlcutError(f"{p}:{n}: time, rate and delay must be numbers, got {','.join(row)}") from None
        if t < 0:
            raise TlcutError(f"{p}:{n}: time {t:g} s is negative; times start at 0")
        if mbps <= 0:
            raise TlcutError(f"{p}:{n}: rate {mbps:g} Mbit/s must be positive (a link that is down is a fault "
                             "to inject, not a rate; use a small rate like 0.1)")
        if ms < 0:
            raise TlcutError(f"{p}:{n}: delay {ms:g} ms is negative")
        if steps and t <= steps[-1].t_s:
            raise TlcutError(f"{p}:{n}: time {t:g} s does not come after {steps[-1].t_s:g} s")
        steps.append(Step(t, mbps, ms))
    if not steps or steps[0].t_s != 0:
        raise TlcutError(f"trace '{p}' must start with a row at time 0")
    return steps


def names() -> list[str]:
    return sorted(f.stem for f in TRACES.glob("*.csv"))


def at(steps: list[Step], t_s: float) -> Step:
    """The step in force ``t_s`` seconds into the trace (the last one holds after the end)."""
    cur = steps[0]
    for s in steps:
        if s.t_s > t_s:
            break
        cur = s
    return cur


class Replayer:
    """Applies ``steps`` through ``apply(mbps, ms)`` at their times, on a thread; ``stop()`` ends it.
    ``log`` keeps (seconds since start, mbps, ms) of every change actually made."""

    def __init__(self, steps: list[Step], apply):
        self.steps, self.apply = steps, apply
        self.log: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tlcut-trace")
        self.t0 = None

    def start(self) -> "Replayer":
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self):
        for s in self.steps:
            if self._stop.wait(max(0.0, self.t0 + s.t_s - time.monotonic())):
                return
            self.apply(s.mbps, s.ms)
            self.log.append((round(time.monotonic() - self.t0, 3), s.mbps, s.ms))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
