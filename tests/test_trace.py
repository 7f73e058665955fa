"""Link traces: refused with one line when they make no sense, and replayed in place on the
loopback relay (the link's measured rate follows the trace)."""

import time

import numpy as np
import pytest

from tlcut import cli
from tlcut.errors import TlcutError
from tlcut.lab import trace
from tlcut.lab.loopback import Loopback
from tlcut.lab.testbed import Config
from tlcut.runtime import protocol as P
from tlcut.runtime.client import EdgeClient
from tlcut.runtime.edge import serving
from tlcut.runtime.serve import Edge


def test_shipped_traces_load_and_cover_what_they_claim():
    stepped = trace.load("stepped")
    assert [(s.t_s, s.mbps) for s in stepped] == [(0, 57), (20, 10), (40, 57)]
    fiveg = trace.load("5g-uplink")
    rates = [s.mbps for s in fiveg]
    assert min(rates) >= 5 and max(rates) <= 60 and max(rates) / min(rates) > 5
    gaps = np.diff([s.t_s for s in fiveg])
    assert gaps.min() >= 1.0 and gaps.max() <= 5.0 and fiveg[-1].t_s >= 55
    assert trace.at(stepped, 25).mbps == 10 and trace.at(stepped, 99).mbps == 57


@pytest.mark.parametrize("rows, text", [
    ("0,57,28\n5,0,28\n", "must be positive"),
    ("0,57,28\n-1,10,28\n", "is negative"),
    ("0,57,28\n5,10,-3\n", "delay -3 ms is negative"),
    ("0,57,28\n5,10,28\n5,20,28\n", "does not come after"),
    ("3,57,28\n", "must start with a row at time 0"),
    ("0,57\n", "expected time_s,mbps,ms"),
    ("0,fast,28\n", "must be numbers"),
])
def test_bad_traces_are_one_line_errors(tmp_path, rows, text):
    f = tmp_path / "t.csv"
    f.write_text("time_s,mbps,ms\n" + rows)
    with pytest.raises(TlcutError, match=text):
        trace.load(f)


def test_replay_cli_refuses_a_bad_trace_in_one_line(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("0,0,28\n")
    assert cli.main(["testbed", "replay", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlcut: error:")


def test_replaying_a_trace_changes_the_loopback_link(small_bundle):
    b = small_bundle("chain", tl=None, hw=8)
    x = np.zeros((256 * 1024,), np.uint8)
    with Loopback(Config(bandwidth_mbps=50, latency_ms=5), log=lambda *_: None) as lb:
        edge = Edge(b, ["input"])
        steps = [trace.Step(0, 50, 5), trace.Step(1.5, 5, 5)]
        try:
            with serving(edge, lb.state.edge_bind), EdgeClient(lb.state.device_endpoint, timeout_s=10) as c, trace.Replayer(steps, lb.set_link) as rep:
                def timed():
                    t0 = time.perf_counter()
                    try:
                        c.request(x, P.INPUT_CUT)  # the edge refuses the shape; the bytes still crossed
                    except TlcutError:
                        pass
                    return time.perf_counter() - t0

                fast = min(timed() for _ in range(3))
                time.sleep(max(0.0, 1.7 - (time.monotonic() - rep.t0)))
                slow = min(timed() for _ in range(2))
            assert [r[1] for r in rep.log] == [50, 5]
            # 256 KiB: ~44 ms at 50 Mbit/s, ~440 ms at 5 (plus 5 ms). The slow link sets a floor a busy
            # machine cannot lower; the ratio of the two, timed in one run, leaves room for the relay's cost.
            assert slow > 0.3 and slow > 3 * fast, (fast, slow)
        finally:
            edge.close()
