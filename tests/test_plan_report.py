"""What `tlcut plan` prints and draws agrees with its own ranking: the TL's worth, unknown accuracy,
excluded placements, one colour per placement kind, one name for the paper's method, and lines
that coincide."""

from pathlib import Path

import pytest

from profiles import profile, st
from tlcut.toolchain import plan, plan_report

# Device 10x slower than the edge; cut 1 is small, cut 2 is big but TL-able, cut 3 is late.
HEAD = [10, 40, 60, 90]
SIZES = [800_000, 100_000, 400_000, 8_000]
TLOK = [True, False, True, False]
SLOW = plan.Network(up_mbps=8.0, rtt_ms=20.0, down_mbps=80.0, wire_overhead=1.0)
FAST = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)


def with_encodings(p, int8_div=4):
    """float16 and int8 wire costs: half and a ``int8_div``-th of the float32 bytes, 0.2 ms each side."""
    for c in p["cuts"]:
        for key, nbytes in (("encodings", c["bytes"]), ("encodings_tl", c["tl_bytes"] if c["tl"] else None)):
            if nbytes is not None:
                c[key] = {"float16": {"serialize": st(0.2), "deserialize": st(0.2), "bytes": nbytes // 2},
                          "int8": {"serialize": st(0.2), "deserialize": st(0.2), "bytes": nbytes // int8_div}}
    return p


def profiles(int8_div=4):
    return (with_encodings(profile("device", HEAD, [90, 60, 40, 10], SIZES, TLOK, full=100), int8_div),
            with_encodings(profile("edge", [h / 10 for h in HEAD], [9, 6, 4, 1], SIZES, TLOK, full=10), int8_div))


def test_the_tl_sentence_compares_what_the_table_ranks():
    # on the fast link "cut 0, int8" (no TL) ranks far above "cut 1", the best float32 split without TL
    r = plan.plan(*profiles(), FAST)
    table = plan_report.format_table(r, top=30)
    plain = next(c for c in r.allowed if not c.placement.tl)
    tl = next(c for c in r.allowed if c.placement.tl)
    assert plain.label == "cut 0, int8" and r.best_plain.label == "cut 1"
    line = next(x for x in table.splitlines() if x.startswith("best with TL"))
    assert f"{tl.label} ({tl.total_ms:.2f} ms)" in line and f"without, {plain.label} ({plain.total_ms:.2f} ms)" in line
    assert f"{plain.total_ms / tl.total_ms:.2f}x faster" in line
    # the paper's float32 comparison, where it is printed, says that it is over a float32 wire
    paper = [x for x in table.splitlines() if f"than {r.best_plain.label} (" in x]
    assert len(paper) == 1 and "float32 wire" in paper[0]
    assert r.best_without_tl is plain and r.best_with_tl is tl
    assert r.speedup_with_tl == pytest.approx(plain.total_ms / tl.total_ms)


def test_a_tl_that_loses_is_called_slower():
    # 8 Mbit/s: the best float32 split with TL (cut 2 + TL) is slower than cut 3 without it
    r = plan.plan(*profiles(), SLOW)
    table = plan_report.format_table(r, top=30)
    assert r.best_tl.total_ms > r.best_plain.total_ms
    ratio = r.best_plain.total_ms / r.best_tl.total_ms
    assert f"{1 / ratio:.2f}x slower than cut 3" in table and f"{ratio:.2f}x faster" not in table


def test_unknown_accuracy_is_short_and_says_how_to_measure_it():
    r = plan.plan(*profiles(), FAST)
    table = plan_report.format_table(r, top=30)
    rows = table.splitlines()
    assert "unknown" not in table
    assert any(x.rstrip().endswith(" ?") for x in rows)
    notes = [x for x in rows if "tlcut eval BUNDLE --cut K --encoding E" in x]
    assert len(notes) == 1 and notes[0].startswith("?: not measured")
    note = table.split("?: not measured")[1]
    assert "tlcut fidelity BUNDLE" in note and "--accuracy BUNDLE" in note
    r.pareto = plan.pareto_front(r.allowed)
    front = plan_report.format_pareto(r)
    assert "unknown" not in front and "tlcut eval BUNDLE" in front


def figure(result, tmp_path, monkeypatch, name="plan.png"):
    """The figure plan_report.plot draws, kept open past its close."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    plan_report.plot(result, tmp_path / name)
    assert Path(tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    return kept[-1]


def lines(ax, prefix):
    return [ln for ln in ax.get_lines() if ln.get_label().startswith(prefix)]


def test_excluded_placements_are_never_drawn_as_candidates(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    r = plan.plan(*profiles(), FAST, plan.Constraints(min_cut=2))
    assert any(not c.allowed and c.total_ms < r.best.total_ms for c in r.ranking)
    fig = figure(r, tmp_path, monkeypatch)
    grey = to_rgba("0.75")  # light grey, hollow
    for ax in fig.axes[:2]:
        for p in ax.patches:
            if isinstance(p, Rectangle) and p.get_x() + p.get_width() / 2 < 2:
                assert not p.get_fill() and p.get_edgecolor() == grey
    drawn = lines(fig.axes[2], "cut K")
    assert drawn
    for ln in drawn:
        assert min(ln.get_xdata()) >= 2, ln.get_label()
    greyed = [ln for ln in fig.axes[2].get_lines() if to_rgba(ln.get_color()) == grey]
    assert greyed and min(min(ln.get_xdata()) for ln in greyed) < 2
    assert any("excluded" in ln.get_label() for ln in greyed)
    # edge only is before --min-cut: drawn grey and called excluded
    edge = lines(fig.axes[2], "edge only")
    assert edge and all("excluded" in ln.get_label() and to_rgba(ln.get_color()) == grey for ln in edge)


def test_device_and_edge_only_keep_one_colour_in_every_plot(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgba

    slow, fast = plan.plan(*profiles(), SLOW), plan.plan(*profiles(), FAST)
    rank = {n: [c.label for c in r.ranking if c.placement.where != "split"] for n, r in (("slow", slow), ("fast", fast))}
    assert rank["slow"].index("device only") < rank["slow"].index("edge only")
    assert rank["fast"].index("edge only") < rank["fast"].index("device only")
    colours = {}
    for n, r in (("slow", slow), ("fast", fast)):
        fig = figure(r, tmp_path, monkeypatch, f"{n}.png")
        for ax in fig.axes:
            for label in ("device only", "edge only"):
                for ln in ax.get_lines():
                    if ln.get_label() == label:
                        colours.setdefault(label, set()).add(to_rgba(ln.get_color()))
    assert len(colours["device only"]) == 1 and len(colours["edge only"]) == 1
    assert colours["device only"] != colours["edge only"]


def test_the_paper_method_has_one_name(tmp_path, monkeypatch):
    fig = figure(plan.plan(*profiles(), FAST), tmp_path, monkeypatch)
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "ScissionLite" in titles and "ScissionTL" not in titles
    root = Path(__file__).resolve().parents[1]
    for folder in ("tlcut", "toolchain", "runtime", "models", "calibrate", "lab", "docs", "tests", "benchmarks", "scripts"):
        for f in [root / "README.md", *(root / folder).rglob("*")]:
            if f.suffix in (".py", ".md") and f.name != Path(__file__).name:
                assert "ScissionTL" not in f.read_text(errors="replace"), f


def test_lines_that_coincide_stay_visible(tmp_path, monkeypatch):
    # int8 here costs what float16 does: their lines have the same totals at every cut
    r = plan.plan(*profiles(int8_div=2), FAST)
    fig = figure(r, tmp_path, monkeypatch)
    drawn = lines(fig.axes[2], "cut K")
    styles = [(ln.get_marker(), ln.get_linestyle(), ln.get_color()) for ln in drawn]
    assert all(m not in ("None", "", None) for m, _, _ in styles)
    assert len(set(styles)) == len(styles)
    labels = [ln.get_label() for ln in drawn]
    f16 = next(x for x in labels if x.startswith("cut K, no TL, float16"))
    i8 = next(x for x in labels if x.startswith("cut K, no TL, int8"))
    assert "same totals as no TL, int8" in f16 and "same totals as no TL, float16" in i8


def test_run_reports_the_median_payload_as_the_summary_does():
    # `tlcut run` printed the first request's payload (one JPEG's bytes) where the summary gives the median
    from tlcut.runtime import run as rt

    def rec(nbytes, fallback=False):
        return {"total_ms": 1.0, "device_ms": 0.5, "transfer_ms": 0.3, "edge_ms": 0.2, "payload_bytes": nbytes,
                "fallback": fallback}

    records = [rec(12_143), rec(9_305), rec(0, fallback=True), rec(9_001)]
    s = rt.summarize(records, wall_s=1.0)
    assert s["payload_bytes"] == 9_305  # median of the three that crossed; a fallback sends nothing
    text = rt.format_summary("edge only, JPEG q90", s)
    assert "median payload 9305 B" in text.splitlines()[0]
    assert rt.summarize([rec(0), rec(0)], wall_s=1.0)["payload_bytes"] == 0  # device only
