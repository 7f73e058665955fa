"""The main job without root: `tlcut demo` falls back to loopback emulation and says so."""

import pytest

pytestmark = pytest.mark.tf


def test_demo_without_root_runs_on_loopback_and_states_it(tmp_path, monkeypatch):
    """The full search on loopback: every engine configuration benched, int8 halves compiled
    (calibrated on elpv) for a few cuts, each baseline on ONNX Runtime float32 and on its best
    engine, every row run on the engines it names."""
    import json
    import re
    from pathlib import Path

    from tlcut.lab import demo as demo_mod
    from tlcut.lab import testbed as tbm
    from tlcut.lab.demo_report import BASELINES, CHOICE, PAPER

    monkeypatch.setattr(tbm, "available", lambda: "the testbed needs root (network namespaces, tc, cgroups)")
    said = []
    r = demo_mod.demo("TinyBranchNet", tmp_path / "out", input_shape="30,30,3", requests=4, warmup=1,
                      bench_iterations=3, say=said.append)
    assert any("running on loopback" in s for s in said)
    t = r["testbed"]
    assert t["emulation"] == "loopback" and "pacing relay" in t["described"] and "slowed 5x" in t["described"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "loopback without root" in md
    rows = {row["placement"]: row for row in r["rows"]}
    assert CHOICE in rows
    for name, _ in BASELINES:
        assert f"{name}, {PAPER}" in rows and f"{name}, best engine" in rows
        paper = rows[f"{name}, {PAPER}"]
        assert "onnxrt float32" in {paper["device_engine"], paper["edge_engine"]}
        assert {paper["device_engine"], paper["edge_engine"]} <= {"onnxrt float32", None}
    searched = r["engines_searched"]
    assert "openvino float32" in searched and "onnxrt float32" in searched
    try:
        import elpv_dataset  # noqa: F401
    except ImportError:
        assert "int8 left out" in r["int8"]
    else:
        assert "int8" in searched and r["int8"].startswith("int8 halves")
        # each row says how far it moved the answers: exact where nothing lossy runs, measured on
        # test images where something does (this model's output moves with its input)
        for row in r["rows"]:
            f, engines = row["fidelity"], f"{row['device_engine']} {row['edge_engine']}"
            lossy = re.search(r"\b(TL|JPEG|int4|int8|float16)\b", f"{row['choice']} {engines}") is not None
            assert f is not None, row
            assert f["status"] in (("measured", "estimated") if lossy else ("exact",)), row
            assert 0 <= f["top1"] <= 1 and 0 < f["cosine"] <= 1
        jrow = rows[f"edge only, JPEG, {PAPER}"]
        assert jrow["fidelity"]["status"] == "measured" and jrow["fidelity"]["cosine"] < 1
        assert "Fidelity: agreement with the float32 model" in (tmp_path / "out" / "summary.md").read_text()
    # the input as pixels is a quarter of float32; as a JPEG of a real image, smaller still
    f32, u8, jpg = (rows[f"edge only, {e}, {PAPER}"] for e in ("float32", "uint8", "JPEG"))
    assert u8["payload_bytes"] - 80 == (f32["payload_bytes"] - 80) // 4
    assert jpg["payload_bytes"] < u8["payload_bytes"]
    # every row ran, on the engines it names: the device's in the run record, the edge's in the
    # flags the edge was started with
    runs = {}
    for f in (tmp_path / "out").glob("run-*.json"):
        rec = json.loads(f.read_text())
        runs.setdefault((json.dumps(rec["placement"], sort_keys=True)), []).append(rec)
    for row in r["rows"]:
        assert row["measured_ms"] > 0 and row["requests"] == 4
        assert row["device_engine"] or row["edge_engine"]
        matching = []
        for rec in sum(runs.values(), []):
            dev = f"{rec['backend']} {rec['precision']}"
            served = rec.get("edge_served")
            edge = None if served is None else \
                f"{served[served.index('--backend') + 1]} {served[served.index('--precision') + 1]}"
            if (row["device_engine"] in (None, dev) and row["edge_engine"] == edge
                    and abs(rec["summary"]["total_ms"]["median"] - row["measured_ms"]) < 1e-9):
                matching.append(rec)
        assert matching, row["placement"]
        if row["same_as"] is None:
            assert f"| {row['placement']} | {row['choice']}" in md
        else:
            assert (f"| {row['placement']} | the same as {row['same_as']} |" in md
                    or f"| {row['placement']} | {PAPER} is its best engine |" in md)
    assert r["why"].startswith("tlcut's choice (") and "best baseline" in r["why"] and r["why"] in md
    choice = rows[CHOICE]
    if choice["device_engine"] is None:
        assert "does not split" in md
    # the device really was stretched: its profile was benched with --slowdown 5, its runs too
    from tlcut.toolchain.profile import Profile

    dev, edge = (Profile.load(tmp_path / "out" / f"profile-{r}.json", r) for r in ("device", "edge"))
    assert dev["settings"]["slowdown"] == 5 and edge["settings"]["slowdown"] == 1
    # against the same model timed back to back here, unstretched (the edge's profile idles between
    # runs as a served edge does, which slows a model this small by more than its compute)
    from tlcut.bundle import Bundle
    from tlcut.toolchain import bench as benchmod

    ref = benchmod.bench(Bundle.open(tmp_path / "out" / "bundle"), role="edge", warmup=2, iterations=10, check=0,
                         idle_ms=0, progress=lambda *_: None)
    assert dev.default.full["median"] > 2.5 * ref["full"]["median"]
    assert edge["settings"]["idle_ms"] > 0 and dev["settings"]["idle_ms"] == 0
    # and the link: edge only pays at least the 28 ms delay
    assert f32["measured_ms"] >= 28
    assert all(Path(p).exists() for p in (tmp_path / "out" / "plan.json", tmp_path / "out" / "summary.json"))


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
                                        (["--edge-quota", "0.5"], "belong to --tiers 3"),
                                        (["--tiers", "3", "--engines", "openvino"], "drop --engines"),
                                        (["--engines", " "], "names no engine")])
def test_demo_tier_flags_are_checked_first(tmp_path, capsys, argv, says):
    from tlcut import cli

    assert cli.main(["demo", "TinyBranchNet", *argv, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "o").exists()


def test_a_demo_run_again_clears_the_last_runs_results_not_other_files(tmp_path):
    """A rerun that stops half way must not leave an old summary or old runs beside new profiles;
    a folder no demo wrote keeps its files."""
    from tlcut.lab.demo import _start

    old = tmp_path / "demo"
    old.mkdir()
    for f in ("summary.json", "summary.md", "run-cut-3-old.json", "edge-onnxrt-float32.log", "notes.txt"):
        (old / f).write_text("{}")
    (old / "bundle").mkdir()
    (old / "bundle" / "manifest.json").write_text("{}")
    _start(old, lambda *_: None)
    assert sorted(p.name for p in old.iterdir()) == ["bundle", "notes.txt"]
    assert (old / "bundle" / "manifest.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run-1.json").write_text("{}")
    _start(mine, lambda *_: None)
    assert (mine / "run-1.json").exists()
