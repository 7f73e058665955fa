"""The main job without root: `tlcut demo` falls back to loopback emulation and says so."""

import pytest

pytestmark = pytest.mark.tf


def test_demo_without_root_runs_on_loopback_and_states_it(tmp_path, monkeypatch):
    from tlcut.lab import demo as demo_mod
    from tlcut.lab import testbed as tbm

    monkeypatch.setattr(tbm, "available", lambda: "the testbed needs root (network namespaces, tc, cgroups)")
    said = []
    r = demo_mod.demo("TinyBranchNet", tmp_path / "out", input_shape="30,30,3", requests=4, warmup=1,
                      bench_iterations=3, say=said.append)
    assert any("running on loopback" in s for s in said)
    t = r["testbed"]
    assert t["emulation"] == "loopback" and "pacing relay" in t["described"] and "slowed 5x" in t["described"]
    assert "loopback without root" in (tmp_path / "out" / "summary.md").read_text()
    placements = {row["placement"] for row in r["rows"]}
    assert {"tlcut's choice", "device only", "edge only, float32", "edge only, uint8", "edge only, JPEG",
            "best with TL (ScissionLite)"} <= placements
    rows = {row["placement"]: row for row in r["rows"]}
    # the input as pixels is a quarter of float32; as a JPEG of a real image, smaller still
    assert rows["edge only, uint8"]["payload_bytes"] - 80 == (rows["edge only, float32"]["payload_bytes"] - 80) // 4
    assert rows["edge only, JPEG"]["payload_bytes"] < rows["edge only, uint8"]["payload_bytes"]
    for row in r["rows"]:
        assert row["measured_ms"] > 0 and row["requests"] == 4
    # the device really was stretched: its profile was benched with --slowdown 5, its runs too
    from tlcut.toolchain.profile import Profile

    dev, edge = (Profile.load(tmp_path / "out" / f"profile-{r}.json", r) for r in ("device", "edge"))
    assert dev["settings"]["slowdown"] == 5 and edge["settings"]["slowdown"] == 1
    assert dev.default.full["median"] > 2.5 * edge.default.full["median"]
    # and the link: edge only pays at least the 28 ms delay
    edge_only = rows["edge only, float32"]
    assert edge_only["measured_ms"] >= 28


def test_demo_testbed_without_root_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from tlcut import cli
    from tlcut.lab import testbed as tbm

    monkeypatch.setattr(tbm, "available", lambda: "the testbed needs root (network namespaces, tc, cgroups)")
    assert cli.main(["demo", "TinyBranchNet", "--emulation", "testbed", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--emulation loopback" in err[0]


@pytest.mark.root
def test_demo_three_tiers_runs_a_cloud_behind_the_edge(tmp_path):
    from tlcut.lab import demo as demo_mod
    from tlcut.lab import testbed as tbm

    if tbm.available():
        pytest.skip(f"testbed unavailable: {tbm.available()}")
    said = []
    r = demo_mod.demo_tiers("TinyBranchNet", tmp_path / "out", input_shape="30,30,3", requests=4, warmup=1,
                            bench_iterations=3, backbone_latency=15, say=said.append)
    rows = {row["placement"]: row for row in r["rows"]}
    three, two = rows["best three tiers"], rows["best two tiers"]
    assert three["choice"].endswith("> cloud") and "cloud" not in two["choice"]
    # the edge answers only after the cloud did, across the backbone's 15 ms
    assert three["measured_edge_ms"] >= 15 > two["measured_edge_ms"]
    assert rows["device only"]["measured_transfer_ms"] == 0
    for row in r["rows"]:
        assert row["requests"] == 4 and row["predicted_ms"] > 0
    assert "backbone edge -> cloud 1000 Mbit/s, 15 ms" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("argv, says", [(["--tiers", "3", "--min-cut", "5"], "drop --min-cut"),
                                        (["--edge-quota", "0.5"], "belong to --tiers 3")])
def test_demo_tier_flags_are_checked_first(tmp_path, capsys, argv, says):
    from tlcut import cli

    assert cli.main(["demo", "TinyBranchNet", *argv, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "o").exists()
