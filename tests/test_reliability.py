"""Load, faults, bad input and security on the testbed (root; CI runs as root). The scenarios are
those of tlcut.lab.reliability, whose results file benchmarks/reliability.py writes; here each is
asserted. Malformed frames: tests/test_behaviour.py (the shared table, both edges)."""

import pytest

from tlcut.lab import reliability as R
from tlcut.lab import testbed as tbm

WHY = tbm.available()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    if WHY:
        pytest.skip(f"testbed unavailable: {WHY}")
    root = tmp_path_factory.mktemp("rel")
    R.make_bundle(root)
    with tbm.Testbed(tbm.Config(bandwidth_mbps=57, latency_ms=28, device_quota=1.0, port=5821),
                     log=lambda *_: None) as tb:
        yield tb, root


@pytest.mark.root
def test_load_8_devices_x_500(bed):
    tb, root = bed
    r = R.scenario_load(tb, root, 8, 500)
    assert r["requests"] == 4000 and r["accounted"]
    assert r["ok"] == 4000 and r["wrong"] == 0 and r["failed"] == 0
    rss = r["edge_rss_kib"]
    assert rss["max"] < rss["before"] + 64 * 1024, rss  # bounded: well under 64 MiB of growth


@pytest.mark.root
@pytest.mark.parametrize("scenario", ["edge_restart", "link_cut", "bandwidth_drop"])
def test_faults_lose_nothing_and_answer_nothing_wrongly(bed, scenario):
    tb, root = bed
    r = getattr(R, f"scenario_{scenario}")(tb, root)
    assert r["accounted"] and r["wrong"] == 0, r
    assert r["ok"] + r["fell_back"] + r["failed"] == r["requests"]
    assert r["failed"] == 0, "with retries and fallback no request should reach the caller as an error"
    assert r["back_on_edge_at_end"], r["outcomes_over_time"]
    if scenario == "link_cut":
        assert r["fell_back"] > 0 or r["retried"] > 0, "a 3 s outage must show up as retries or fallbacks"
    if scenario == "edge_restart":
        assert r["retried"] > 0 or r["fell_back"] > 0


@pytest.mark.root
def test_security(bed):
    tb, root = bed
    s = R.scenario_security(tb, root)
    assert s["unlisted_key"] == "REFUSED"
    assert s["curve"]["request"].startswith("OK") and s["curve"]["captured_bytes"] > 16384
    assert not s["curve"]["marker_found"], "CURVE traffic must not show the tensor's bytes"
    assert s["plain"]["marker_found"], "control: without CURVE the marker is visible, so the capture works"
