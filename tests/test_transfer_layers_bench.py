"""benchmarks/transfer_layers.py's rows, widths and goal on hand-made numbers: no training, no model."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling elpv_models, as `python benchmarks/...` does
    try:
        spec = importlib.util.spec_from_file_location("transfer_layers_bench", BENCH / "transfer_layers.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def test_a_row_gives_the_median_payload_and_the_change_from_the_control(bench):
    ctl = [1, 1, 0, 0, 1, 1, 1, 0]
    hits = [1, 0, 0, 1, 1, 1, 1, 0]
    r = bench.row("s2_pool", "pool+bottleneck:8", "int8+zstd", [300, 310, 290, 500, 305, 299, 301, 400], hits, ctl,
                  [1] * 8, width="1/4")
    assert r["bytes"] == 303 and (r["bytes_min"], r["bytes_max"]) == (290, 500)  # the median, not the last image's
    assert r["accuracy"] == 5 / 8 and r["n"] == 8 and r["width"] == "1/4"
    vc = r["vs_control"]
    assert vc["diff_pts"] == 0.0 and (vc["only_a_right"], vc["only_b_right"]) == (1, 1) and vc["mcnemar_p"] == 1.0
    assert vc["ci95_pts"][0] <= 0 <= vc["ci95_pts"][1]
    assert r["vs_baseline"]["diff_pts"] == pytest.approx(-37.5)


def test_widths_are_fractions_of_the_cut_or_channel_counts(bench):
    assert bench.parse_width("1/4") == bench.Fraction(1, 4) and bench.parse_width("8") == 8
    assert [bench.channels(bench.parse_width(w), 32) for w in ("1/4", "1/8", "6")] == [8, 4, 6]
    assert bench.channels(bench.parse_width("1/64"), 16) == 1  # never zero channels
    for bad in ("0", "3/2", "-1/4"):
        with pytest.raises(ValueError):
            bench.parse_width(bad)


def _rows(bench, cut, pool_bytes, learned):
    """A pool-raw row and, for each (tl, bytes, diff in points) a learned int8+zstd row."""
    ctl = [1] * 50 + [0] * 50
    rows = [bench.row(cut, "pool", "raw", [pool_bytes], ctl, ctl, ctl)]
    for tl, nbytes, diff in learned:
        hits = list(ctl)
        for i in range(abs(diff)):  # each image moves the accuracy by one point in 100
            hits[i if diff < 0 else 50 + i] = 0 if diff < 0 else 1
        rows.append(bench.row(cut, tl, "int8+zstd", [nbytes], hits, ctl, ctl, width="1/4"))
        rows.append(bench.row(cut, tl, "raw", [nbytes // 4], hits, ctl, ctl, width="1/4"))  # not the goal's encoding
    return rows


def test_the_goal_counts_cuts_where_a_learned_tl_is_small_enough_and_close_enough(bench):
    rows, cuts = [], []
    for cut, pool_bytes, learned in [
        ("s1_pool", 16000, [("pool+bottleneck:4", 1000, -1)]),  # exactly 1/16 and exactly -1 pt: met
        ("s2_pool", 16000, [("pool+bottleneck:8", 1001, 0), ("pool+bottleneck:4", 900, -2)]),  # too big; too far
        ("s3_pool", 1600, [("pool+bottleneck:16", 90, 0)]),  # met
        ("s4_pool", 800, []),  # no learned TL measured
    ]:
        rows += _rows(bench, cut, pool_bytes, learned)
        cuts.append({"cut": cut, "pool_float32_bytes": pool_bytes})
    g = bench.goal(rows, cuts)
    assert (g["cuts_met"], g["cuts"], g["needed"], g["met"]) == (2, 4, 3, False)
    assert g["per_cut"]["s1_pool"]["met_by"] == ["pool+bottleneck:4"] and g["per_cut"]["s2_pool"]["met_by"] == []
    assert g["line"].startswith("goal not met: at 2 of 4 cuts")
    assert "s2_pool: none (closest pool+bottleneck:4, 900 B of 1000, -2.00 pt)" in g["line"]
    assert "s4_pool: no learned TL measured with int8+zstd" in g["line"]
    # A raw learned row well under the bytes does not count: the goal is int8+zstd's.
    rows += _rows(bench, "s4_pool", 800, [("pool+bottleneck:32", 50, 0)])
    assert bench.goal(rows, cuts)["met"] is True


def test_fewer_cuts_measured_never_meet_the_goal_by_share(bench):
    """The goal is 3 of the 4 cuts: a run of one or two cuts is undecided while the rest could still
    meet it, and not met once they could not."""
    rows, cuts = [], []
    for cut in ("s1_pool", "s2_pool"):
        rows += _rows(bench, cut, 16000, [("pool+bottleneck:4", 900, 0)])
        cuts.append({"cut": cut, "pool_float32_bytes": 16000})
    g = bench.goal(rows, cuts)
    assert (g["cuts_met"], g["needed"], g["met"]) == (2, 3, False)
    assert g["line"].startswith("goal not decided (2 of 4 cuts measured)")
    far = _rows(bench, "s1_pool", 16000, [("pool+bottleneck:4", 900, -3)]) + \
        _rows(bench, "s2_pool", 16000, [("pool+bottleneck:4", 900, -3)])
    assert bench.goal(far, cuts)["line"].startswith("goal not met: at 0 of 2 cuts")


def test_another_model_gets_the_test_per_cut_and_no_verdict(bench):
    """The goal is set on InspectNet's four cuts: DenseNet121 at two gets each cut's test, never a
    'met' or 'not decided' that reads as the goal's."""
    rows, cuts = [], []
    for cut, learned in [("pool2_pool", [("pool+bottleneck:16", 900, 0)]), ("pool3_pool", [("pool+bottleneck:32", 900, -3)])]:
        rows += _rows(bench, cut, 16000, learned)
        cuts.append({"cut": cut, "pool_float32_bytes": 16000})
    g = bench.goal(rows, cuts, "DenseNet121")
    assert g["met"] is None and g["cuts_met"] == 1
    assert g["line"].startswith("goal set on InspectNet, so no verdict for DenseNet121; its test per cut: at 1 of 2 cuts")
    assert "needs" not in g["line"] and "pool3_pool: none (closest" in g["line"]


def test_the_pool_tl_never_counts_towards_the_goal(bench):
    ctl = [1, 0] * 10
    rows = [bench.row("s3_pool", "pool", "raw", [1600], ctl, ctl, ctl),
            bench.row("s3_pool", "pool", "int8+zstd", [80], ctl, ctl, ctl)]
    assert bench.goal(rows, [{"cut": "s3_pool", "pool_float32_bytes": 1600}])["cuts_met"] == 0


def test_the_report_and_plot_are_written_from_hand_made_results(bench, tmp_path):
    ctl = [1] * 50 + [0] * 50
    rows = _rows(bench, "s2_pool", 16000, [("pool+bottleneck:8", 900, 0)])
    cuts = [{"cut": "s2_pool", "index": 3, "shape": [1, 32, 32, 32], "channels": 32, "pool_float32_bytes": 16000,
             "tls": ["pool", "pool+bottleneck:8"]}]
    pd = rows[0]["vs_control"]
    res = {"command": "python benchmarks/transfer_layers.py --limit 9", "date": "d", "model": "InspectNet",
           "machine": {"platform": "p", "cpus": 2}, "versions": {"python": "3", "tensorflow": "2", "onnxruntime": "1",
                                                                "zstandard": "0"},
           "data": {"task": "grade", "name": "elpv", "size": 128, "channels": 1, "seed": 0, "split_sha256": "ab"},
           "baseline": {"accuracy": 0.5, "n": 100}, "control": {"accuracy": 0.5, "vs_baseline": pd},
           "jpeg": {"bytes": 9000, "quality": 90, "accuracy": 0.5, "vs_control": pd}, "cuts": cuts, "rows": rows,
           "training_seconds": {"base": 10.0, "control": 2.0}, "goal": bench.goal(rows, cuts), "wall_s": 60,
           "reused": [], "notes": []}
    md = bench.markdown(res)
    assert "goal not decided (1 of 4 cuts measured): at 1 of 1 cuts" in md and "| 3 `s2_pool` 32 ch | pool+bottleneck:8 | int8+zstd | 900 | 1/17.8 |" in md
    assert "**9000 B** a frame" in md and len(ctl) == 100
    bench.plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_report_of_a_file_that_is_not_its_results_is_one_line_and_leaves_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "other.json"
    bad.write_text('{"rows": []}')
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_layers.py"
    r = subprocess.run([sys.executable, str(script), "--report", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a transfer_layers.py results file" in r.stderr and "Traceback" not in r.stderr
    assert bad.read_text() == '{"rows": []}' and not (tmp_path / "other.md").exists()
