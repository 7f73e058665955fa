"""The plan over engine configurations: each pair of the profiles' configurations searched, int8
only where compiled, a lossy choice under the accuracy and fidelity constraints, the Pareto set,
and plans from version 1 profiles as they were."""

import json

import pytest

from profiles import st
from test_plan import NET, dev, edge, with_encodings
from tlcut.toolchain import plan, plan_report


# -- engine configurations: the plan searches each pair the profiles hold ---------------------------

def _engines():
    from tlcut.deployment import Engine
    from tlcut.runtime import backends

    return (Engine(backends.ONNXRT, "float32", 1), Engine(backends.OPENVINO, "float32", 1),
            Engine(backends.OPENVINO, "int8", 1))


def two_engines(int8_cuts=(2,)):
    """Device and edge profiles of two float32 engines, the second twice as fast on every figure,
    and an int8 configuration four times as fast holding only ``int8_cuts`` and no whole model."""
    from profiles import engines

    ort, ov, i8 = _engines()

    def side(make, scale, keep=None):
        p = make()
        for c in p["cuts"]:
            for k in ("head", "tail", "device_tl", "edge_tl"):
                if k in c:
                    c[k] = st(c[k]["median"] / scale)
        p["full"] = st(p["full"]["median"] / scale)
        if keep is not None:
            p["cuts"] = [c for c in p["cuts"] if c["index"] in keep]
            p["full"] = None
        return p

    return (engines("device", {ort: side(dev, 1), ov: side(dev, 2), i8: side(dev, 4, int8_cuts)}),
            engines("edge", {ort: side(edge, 1), ov: side(edge, 2), i8: side(edge, 4, int8_cuts)}))


def test_two_engines_rank_the_faster_first_with_known_answers():
    from tlcut.placement import DEVICE, Placement

    ort, ov, _ = _engines()
    d, e = two_engines()
    fast = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)
    p = plan.plan(d, e, fast, plan.Constraints(max_accuracy_drop=0))  # lossless only: no TL, float32 engines
    assert p.best.placement.label == "cut 1" and (p.best.device, p.best.edge) == (ov, ov)
    assert p.best.label == "cut 1; device openvino float32, edge openvino float32"
    # 40/2 + 5 + 100080*8/200e6 s (4.0 ms) + 6/2 (+ 0.04 of wire and reply) beats device only's 50
    assert p.best.total_ms == pytest.approx(20 + 0.01 + 5 + 100_080 * 8 / 200e6 * 1e3 + 0.01 + 3
                                            + 0.01 + 4080 * 8 / 2000e6 * 1e3 + 0.01)
    # the faster engine on both sides: every compute figure halved, the network the same
    slow = next(c for c in p.ranking if c.label_without_engines == "cut 1" and (c.device, c.edge) == (ort, ort))
    compute = ("device", "device_tl", "edge_tl", "edge")
    assert p.best.total_ms == pytest.approx(slow.total_ms - sum(slow.components_ms[k] for k in compute) / 2)
    # device only on each engine: the device's whole model at its speed, the edge runs nothing
    only = {c.device: c.total_ms for c in p.ranking if c.placement.where == "device"}
    assert p.find(Placement(DEVICE), device=ort).total_ms == 100 and p.find(Placement(DEVICE)).device == ov
    assert only == {ort: 100, ov: 50} and all(c.label.endswith(f"device {c.device.words()}")
                                              for c in p.ranking if c.placement.where == "device")
    # a one-configuration profile keeps its labels as they were
    assert "; " not in plan.plan(dev(), edge(), fast).best.label


def test_int8_is_offered_only_at_cuts_with_int8_halves():
    d, e = two_engines(int8_cuts=(2,))
    _, _, i8 = _engines()
    p = plan.plan(d, e, NET)
    at_int8 = [c for c in p.ranking if i8 in c.engines_used.values()]
    assert at_int8 and {c.placement.cut for c in at_int8} == {2}  # no whole int8 model: no device/edge only
    # lossy: int8 on either side, even a float32 wire; never assumed lossless under a constraint
    assert all(not c.lossless and c.accuracy_drop_pts is None for c in at_int8)
    p = plan.plan(d, e, NET, plan.Constraints(max_accuracy_drop=1.0))
    assert all(i8 not in c.engines_used.values() for c in p.allowed)
    assert next(c for c in p.ranking if i8 in c.engines_used.values()).why_not.startswith("accuracy unknown")
    # what `tlcut eval` recorded for the placement at int8 makes it known
    acc = {"device only": {"float32": {"accuracy": 0.9}}, "cut 2 + TL": {"int8": {"accuracy": 0.895}}}
    p = plan.plan(d, e, NET, plan.Constraints(max_accuracy_drop=1.0), accuracy=acc)
    ok = [c for c in p.allowed if i8 in c.engines_used.values()]
    assert ok and all(c.device == c.edge == i8 and c.label_without_engines == "cut 2 + TL" for c in ok)
    assert ok[0].accuracy_drop_pts == pytest.approx(0.5)
    # a label says which int8 is which: the wire's and the engines'
    p = plan.plan(with_two(d), with_two(e), NET)
    names = {c.label for c in p.ranking if c.device == c.edge == i8}
    assert "cut 2 + TL, int8 wire; device openvino int8, edge openvino int8" in names


def test_min_fidelity_reads_one_adapter_and_unknown_is_excluded(monkeypatch):
    d, e = two_engines()
    _, _, i8 = _engines()
    p = plan.plan(d, e, NET, plan.Constraints(min_fidelity=0.99))
    assert all(c.lossless for c in p.allowed) and all(c.fidelity == 1.0 for c in p.allowed)
    monkeypatch.setattr(plan, "fidelity_of", lambda bundle, c: 0.995 if c.precision == "int8" else None)
    p = plan.plan(d, e, NET, plan.Constraints(min_fidelity=0.99))
    assert any(i8 in c.engines_used.values() for c in p.allowed)
    assert plan.plan(d, e, NET, plan.Constraints(min_fidelity=0.999)).allowed == \
        [c for c in p.ranking if c.lossless]


def test_pareto_set_is_the_non_dominated_one():
    d, e = two_engines()
    p = plan.plan(with_two(d), with_two(e), NET, pareto=True)

    def objectives(c):
        inf = float("inf")
        return (c.total_ms, c.upload_bytes, c.device_ms, inf if c.accuracy_drop_pts is None else c.accuracy_drop_pts,
                inf if c.fidelity is None else 1 - c.fidelity)

    def dominates(a, b):
        x, y = objectives(a), objectives(b)
        return all(i <= j for i, j in zip(x, y)) and x != y

    brute = [c for c in p.allowed if not any(dominates(o, c) for o in p.allowed)]
    assert p.pareto and set(p.pareto) == set(brute) and len(p.pareto) == len(brute)
    assert len(p.pareto) < len(p.allowed)
    assert plan.Plan if hasattr(plan, "Plan") else True
    text = plan_report.format_pareto(p)
    assert str(len(brute)) in text.splitlines()[0] and p.pareto[0].label in text


def with_two(prof):
    for c in prof.configs:
        with_encodings(c.figures)
    return prof


def test_pareto_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    d, e = two_engines()
    p = plan.plan(d, e, NET, pareto=True)
    plan_report.plot_pareto(p, tmp_path / "p.png")
    plan_report.plot(p, tmp_path / "plan.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "plan.png").is_file()


def _as_before(d):
    """A plan's JSON less what was added since the recording: fidelity (and --min-fidelity unset),
    and the engines of a side that runs nothing (device only names no edge engine any more, edge
    only no device engine)."""
    if isinstance(d, list):
        return [_as_before(x) for x in d]
    if not isinstance(d, dict):
        return d
    return {k: _as_before(v) for k, v in d.items()
            if k != "fidelity" and not (k == "min_fidelity" and v is None)
            and not (k == "engines" and d.get("where") in ("device", "edge"))}


def test_v1_profiles_plan_as_before(tmp_path):
    from pathlib import Path

    from tlcut.toolchain.profile import Profile

    gold = json.loads((Path(__file__).parent / "expected" / "plan_v1_profiles.json").read_text())
    for role, p in (("device", with_encodings(dev())), ("edge", with_encodings(edge()))):
        p.pop("_path")
        (tmp_path / f"{role}1.json").write_text(json.dumps(p))
        v2 = Profile.load(tmp_path / f"{role}1.json", role)
        v2.save(tmp_path / f"{role}2.json")
        assert json.loads((tmp_path / f"{role}2.json").read_text())["version"] == 2 and len(v2.configs) == 1
    fast = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)
    for v in (1, 2):
        d, e = (plan.load_profile(tmp_path / f"{r}{v}.json", r) for r in ("device", "edge"))
        d.path, e.path = "device.json", "edge.json"
        got = {"net": plan.plan(d, e, NET).to_json(), "fast_min_cut": plan.plan(d, e, fast, plan.Constraints(min_cut=1)).to_json()}
        assert _as_before(json.loads(json.dumps(got))) == _as_before(gold), v


def test_a_plan_with_engines_round_trips(tmp_path):
    from tlcut.deployment import Plan

    d, e = two_engines()
    p = plan.plan(d, e, NET, pareto=True)
    p.save(tmp_path / "plan.json")
    q = Plan.load(tmp_path / "plan.json")
    assert q.ranking == p.ranking and q.best == p.best and (q.best.device, q.best.edge) == (p.best.device, p.best.edge)
    assert [c.label for c in q.ranking] == [c.label for c in p.ranking]
    assert q.pareto == p.pareto and all(c in q.ranking for c in q.pareto)
    assert q.to_json() == json.loads(json.dumps(p.to_json()))


def test_three_tiers_plan_the_default_configuration():
    from tlcut.toolchain.plan_tiers import plan_tiers

    d, e = two_engines()
    hops = {("device", "edge"): NET}
    many = plan_tiers(("device", d), [("edge", e)], [], hops)
    one = plan_tiers(("device", dev()), [("edge", edge())], [], hops)
    assert [(c.label, c.total_ms) for c in many.ranking] == [(c.label, c.total_ms) for c in one.ranking]
