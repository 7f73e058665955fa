"""The plan's arithmetic on hand-made profiles whose best cut is known."""

import json

import pytest

from tlcut.errors import TlcutError
from profiles import profile, st
from tlcut.toolchain import plan, plan_report


# Device 10x slower than the edge; cut 1 is small, cut 2 is big but TL-able, cut 3 is late.
HEAD = [10, 40, 60, 90]
SIZES = [800_000, 100_000, 400_000, 8_000]
TLOK = [True, False, True, False]
NET = plan.Network(up_mbps=8.0, rtt_ms=20.0, down_mbps=80.0, wire_overhead=1.0)


def planned(*a, **kw) -> dict:
    """The plan as its JSON: the fields `tlcut plan -o` writes and people read."""
    return plan.plan(*a, **kw).to_json()


def dev():
    return profile("device", HEAD, [90, 60, 40, 10], SIZES, TLOK, full=100)


def edge():
    return profile("edge", [h / 10 for h in HEAD], [9, 6, 4, 1], SIZES, TLOK, full=10)


def expected_total(i, tl):
    d, e = dev()["cuts"][i], edge()["cuts"][i]
    up = (d["tl_bytes"] if tl else d["bytes"]) + 80
    reply = 0.01 + (4000 + 80) * 8 / 80e6 * 1e3 + 0.01
    return d["head"]["median"] + (0.5 if tl else 0) + 0.01 + 20 + up * 8 / 8e6 * 1e3 + 0.01 + (0.5 if tl else 0) \
        + e["tail"]["median"] + reply


def test_every_candidate_adds_up():
    r = planned(dev(), edge(), NET)
    by = {c["name"]: c for c in r["ranking"]}
    for i in range(4):
        assert by[f"cut {i}"]["total_ms"] == pytest.approx(expected_total(i, False))
        if TLOK[i]:
            assert by[f"cut {i} + TL"]["total_ms"] == pytest.approx(expected_total(i, True))
        else:
            assert f"cut {i} + TL" not in by
    assert by["device only"]["total_ms"] == 100
    assert by["edge only"]["total_ms"] == pytest.approx(0.01 + 20 + (600_080 * 8 / 8e6 * 1e3) + 0.01 + 10
                                                        + 0.01 + 4080 * 8 / 80e6 * 1e3 + 0.01)


def test_best_cut_is_the_known_one():
    r = planned(dev(), edge(), NET)
    # cut 3 (late, 8 kB) ~ 90+20+8+1 = 119; cut 0 + TL ~ 10+1+20+200+9 = 240; device only 100
    assert r["best"]["name"] == "device only"
    fast = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)
    r = planned(dev(), edge(), fast)
    # cut 0 + TL: 10 + 0.5 + 5 + 200080*8/200e6 s (8.0 ms) + 0.5 + 9 = ~33 beats cut 1 (40+5+4+6=55)
    assert r["best"]["name"] == "cut 0 + TL"
    assert r["best_plain"]["name"] == "cut 1"
    assert r["speedup_tl_vs_plain"] == pytest.approx(r["best_plain"]["total_ms"] / r["best"]["total_ms"])
    assert r["speedup_vs_device"] == pytest.approx(100 / r["best"]["total_ms"])
    totals = [c["total_ms"] for c in r["ranking"]]
    assert totals == sorted(totals)


def test_constraints_exclude_candidates():
    fast = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)
    r = planned(dev(), edge(), fast, plan.Constraints(min_cut=2))
    assert r["best"]["cut"] is None or r["best"]["cut"] >= 2
    assert not next(c for c in r["ranking"] if c["where"] == "edge")["allowed"]
    r = planned(dev(), edge(), fast, plan.Constraints(max_upload_bytes=50_000))
    assert all(c["upload_bytes"] <= 50_000 for c in r["ranking"] if c["allowed"])
    r = planned(dev(), edge(), fast, plan.Constraints(max_device_ms=5))
    assert r["best"]["name"] == "edge only"
    r = planned(dev(), edge(), fast, plan.Constraints(tl="off"))
    assert not r["best"]["tl"] and r["best_tl"] is None


def test_link_bytes_include_tcp_framing():
    n = plan.network_from_args(bandwidth=57, latency=28)
    assert n.wire_overhead == pytest.approx(1514 / 1448)
    # 1448 payload bytes occupy one 1514-byte frame: 1514 * 8 bits at 57 Mbit/s
    assert n.up_ms(1448) == pytest.approx(1514 * 8 / 57e6 * 1e3)
    with pytest.raises(TlcutError, match="cannot be below 1"):
        plan.network_from_args(wire_overhead=0.5)


def test_impossible_constraints_say_so():
    with pytest.raises(TlcutError, match="no plan meets the constraints"):
        planned(dev(), edge(), NET, plan.Constraints(max_device_ms=1, max_upload_bytes=10))
    with pytest.raises(TlcutError, match="outside the model's cuts"):
        planned(dev(), edge(), NET, plan.Constraints(min_cut=99))


def test_profiles_of_different_models_are_refused():
    e = edge()
    e["model_sha256"] = "other"
    with pytest.raises(TlcutError, match="different models"):
        planned(dev(), e, NET)


def test_load_profile_checks_format_and_role(tmp_path):
    p = tmp_path / "d.json"
    d = dev()
    d.pop("_path")
    p.write_text(json.dumps(d))
    assert plan.load_profile(p, "device")["role"] == "device"
    with pytest.raises(TlcutError, match="measured as the device"):
        plan.load_profile(p, "edge")
    p.write_text("{not json")
    with pytest.raises(TlcutError, match="not JSON"):
        plan.load_profile(p, "device")
    with pytest.raises(TlcutError, match="cannot read"):
        plan.load_profile(tmp_path / "missing.json", "device")


def test_scission_csv_network(tmp_path):
    f = tmp_path / "net.csv"
    f.write_text("source,destination,ping_ms,bandwidth_mbps\ndevice,edge,28,57\nedge,device,28,600\n")
    n = plan.network_from_args(csv_path=f)
    assert (n.up_mbps, n.rtt_ms, n.down_mbps) == (57, 28, 600)
    n = plan.network_from_args(bandwidth=30, csv_path=f)
    assert n.up_mbps == 30 and n.rtt_ms == 28
    with pytest.raises(TlcutError, match="no row cam,edge"):
        plan.network_from_args(csv_path=f, device_name="cam")
    f.write_text("device,edge,fast,57\n")
    with pytest.raises(TlcutError, match="must be numbers"):
        plan.network_from_args(csv_path=f)
    with pytest.raises(TlcutError, match="positive"):
        plan.network_from_args(bandwidth=0)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    fast = plan.Network(up_mbps=200.0, rtt_ms=5.0, down_mbps=2000.0, wire_overhead=1.0)
    out = tmp_path / "plan.png"
    plan_report.plot(plan.plan(dev(), edge(), fast), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def with_encodings(p, enc_ms=0.2):
    """Add float16/int8 wire costs: half and a quarter of the float32 bytes, ``enc_ms`` each side."""
    for c in p["cuts"]:
        c["encodings"] = {"float16": {"serialize": st(enc_ms), "deserialize": st(enc_ms), "bytes": c["bytes"] // 2},
                          "int8": {"serialize": st(enc_ms), "deserialize": st(enc_ms), "bytes": c["bytes"] // 4}}
        if c["tl"]:
            c["encodings_tl"] = {"float16": {"serialize": st(enc_ms), "deserialize": st(enc_ms), "bytes": c["tl_bytes"] // 2},
                                 "int8": {"serialize": st(enc_ms), "deserialize": st(enc_ms), "bytes": c["tl_bytes"] // 4}}
    return p


def test_encodings_are_placements_with_their_own_bytes_and_costs():
    r = planned(with_encodings(dev()), with_encodings(edge()), NET)
    by = {c["name"]: c for c in r["ranking"]}
    raw, f16, i8 = by["cut 2 + TL"], by["cut 2 + TL, float16"], by["cut 2 + TL, int8"]
    assert f16["upload_bytes"] == 100_000 // 2 + 80 and i8["upload_bytes"] == 100_000 // 4 + 80
    # int8 saves 75 KB on an 8 Mbit/s link (75 ms) for 0.4 ms of encoding, against raw
    saved = (raw["upload_bytes"] - i8["upload_bytes"]) * 8 / 8e6 * 1e3
    assert i8["total_ms"] == pytest.approx(raw["total_ms"] - saved + 2 * 0.2 - 2 * 0.01)
    # with nothing measured, lossy placements have unknown accuracy; raw without TL is exactly lossless
    assert by["cut 1"]["accuracy_drop_pts"] == 0.0 and by["cut 1"]["lossless"]
    assert i8["accuracy_drop_pts"] is None and raw["accuracy_drop_pts"] is None
    # the paper's static choices stay float32 on the wire
    assert r["best_tl"]["placement"]["encoding"] == "raw" and r["best_plain"]["placement"]["encoding"] == "raw"
    assert r["best"] == min(r["ranking"], key=lambda c: c["total_ms"]) and r["best"]["name"] == "cut 0 + TL, int8"


def test_max_accuracy_drop_uses_measured_accuracy_and_never_assumes_lossless():
    d, e = with_encodings(dev()), with_encodings(edge())
    cons = plan.Constraints(max_accuracy_drop=1.0)
    r = planned(d, e, NET, cons)  # nothing measured: only lossless placements remain
    allowed = [c for c in r["ranking"] if c["allowed"]]
    assert allowed and all(c["lossless"] for c in allowed)
    assert r["best"] == min((c for c in r["ranking"] if c["lossless"]), key=lambda c: c["total_ms"])
    measured = {"device only": {"float32": {"accuracy": 0.80}}, "cut 0 + TL, int8": {"float32": {"accuracy": 0.795}},
                "cut 0 + TL": {"float32": {"accuracy": 0.70}}}
    r = planned(d, e, NET, cons, measured)
    by = {c["name"]: c for c in r["ranking"]}
    assert by["cut 0 + TL, int8"]["accuracy_drop_pts"] == pytest.approx(0.5)
    assert r["best"]["name"] == "cut 0 + TL, int8"
    assert not by["cut 0 + TL"]["allowed"] and "accuracy" in by["cut 0 + TL"]["why_not"]
    assert not by["cut 0 + TL, float16"]["allowed"] and "unknown" in by["cut 0 + TL, float16"]["why_not"]


def test_old_profiles_without_encodings_still_plan():
    r = planned(dev(), edge(), NET)
    assert {c["placement"]["encoding"] for c in r["ranking"]} == {"raw"}


def test_throughput_is_one_over_the_slowest_stage():
    r = planned(dev(), edge(), NET, objective="throughput")
    by = {c["name"]: c for c in r["ranking"]}
    c = by["cut 1"]  # device 40 ms + 0.01; 100 KB at 8 Mbit/s = 100.08 ms uplink; edge 6 ms
    assert c["bottleneck"] == "uplink" and c["stages_ms"]["uplink"] == pytest.approx((100_000 + 80) * 8 / 8e6 * 1e3)
    assert c["throughput_fps"] == pytest.approx(1e3 / c["stages_ms"]["uplink"])
    assert by["device only"]["throughput_fps"] == pytest.approx(1e3 / 100)
    assert [x["throughput_fps"] for x in r["ranking"]] == sorted((x["throughput_fps"] for x in r["ranking"]), reverse=True)
    # cut 3 sends 8 KB after 90 ms of device work: the device is its bottleneck (11.1 fps)
    assert by["cut 3"]["bottleneck"] == "device"
    # a latency bound removes placements that are fast on average but slow per frame
    bound = planned(dev(), edge(), NET, plan.Constraints(max_latency_ms=110), objective="throughput")
    assert all(x["total_ms"] <= 110 for x in bound["ranking"] if x["allowed"])
    with pytest.raises(TlcutError, match="--objective"):
        planned(dev(), edge(), NET, objective="speed")


def with_input_encodings(p, jpeg_bytes=9_000, uint8_bytes=150_000):
    """The input as uint8 pixels (a quarter of float32) and as JPEG q90 and q75, with their costs."""
    p["input"]["encodings"] = [
        {"encoding": "uint8", "quality": None, "serialize": st(0.1), "deserialize": st(0.2), "bytes": uint8_bytes},
        {"encoding": "jpeg", "quality": 90, "serialize": st(0.3), "deserialize": st(0.4), "bytes": jpeg_bytes},
        {"encoding": "jpeg", "quality": 75, "serialize": st(0.3), "deserialize": st(0.4), "bytes": jpeg_bytes // 2}]
    return p


def test_input_codecs_are_edge_only_placements_with_known_arithmetic():
    r = planned(with_input_encodings(dev()), with_input_encodings(edge()), NET)
    by = {c["name"]: c for c in r["ranking"]}
    reply = 0.01 + (4000 + 80) * 8 / 80e6 * 1e3 + 0.01
    for name, nbytes, ser, de in (("edge only", 600_000, 0.01, 0.01), ("edge only, uint8", 150_000, 0.1, 0.2),
                                  ("edge only, JPEG q90", 9_000, 0.3, 0.4), ("edge only, JPEG q75", 4_500, 0.3, 0.4)):
        c = by[name]
        assert c["upload_bytes"] == nbytes + 80
        assert c["total_ms"] == pytest.approx(ser + 20 + (nbytes + 80) * 8 / 8e6 * 1e3 + de + 10 + reply)
    # JPEG q75 beats every split here: 4.5 KB at 8 Mbit/s is 4.6 ms, the edge is 10x faster
    assert r["best"]["name"] == "edge only, JPEG q75" and r["edge_only_best"]["name"] == "edge only, JPEG q75"
    # uint8 pixels lose nothing; a JPEG's accuracy is unknown until measured, so a bound excludes it
    assert by["edge only, uint8"]["lossless"] and by["edge only, uint8"]["accuracy_drop_pts"] == 0.0
    assert by["edge only, JPEG q90"]["accuracy_drop_pts"] is None
    fast = plan.Network(up_mbps=100.0, rtt_ms=20.0, down_mbps=800.0, wire_overhead=1.0)
    r = planned(with_input_encodings(dev()), with_input_encodings(edge()), fast, plan.Constraints(max_accuracy_drop=0.5))
    assert r["best"]["name"] == "edge only, uint8"  # 12 ms to send, against 48 for float32
    assert not {c["name"]: c for c in r["ranking"]}["edge only, JPEG q75"]["allowed"]
    measured = {"device only": {"float32": {"accuracy": 0.80}}, "edge only, JPEG q90": {"float32": {"accuracy": 0.799}},
                "edge only, JPEG q75": {"float32": {"accuracy": 0.75}}}
    r = planned(with_input_encodings(dev()), with_input_encodings(edge()), NET,
                  plan.Constraints(max_accuracy_drop=0.5), measured)
    assert r["best"]["name"] == "edge only, JPEG q90"
    # a codec the edge did not measure is not offered
    e = with_input_encodings(edge())
    e["input"]["encodings"] = e["input"]["encodings"][:1]
    names = {c["name"] for c in planned(with_input_encodings(dev()), e, NET)["ranking"]}
    assert "edge only, uint8" in names and "edge only, JPEG q90" not in names


def test_placement_encodings_are_checked_where_they_apply():
    from tlcut.placement import EDGE, SPLIT, Placement

    assert Placement(EDGE, encoding="jpeg").label == "edge only, JPEG q90"
    assert Placement(EDGE, encoding="jpeg", quality=75).label == "edge only, JPEG q75"
    assert Placement.from_json(Placement(EDGE, encoding="jpeg", quality=75).to_json()).quality == 75
    with pytest.raises(TlcutError, match="does not apply to a cut"):
        Placement(SPLIT, 3, encoding="jpeg")
    with pytest.raises(TlcutError, match="does not apply to the model input"):
        Placement(EDGE, encoding="int8")
    with pytest.raises(TlcutError, match="1..100"):
        Placement(EDGE, encoding="jpeg", quality=0)
    with pytest.raises(TlcutError, match="only to --encoding jpeg"):
        Placement(EDGE, encoding="uint8", quality=90)


def _tiles(start, to, fractions, weights, in_bytes=10_000, out_bytes=20_000, sha="abc"):
    bands = [{"index": k, "work_fraction": f, "in_bytes": in_bytes, "out_bytes": out_bytes, "out_rows": [k, k + 1]}
             for k, f in enumerate(fractions)]
    return {"model": "m", "model_sha256": sha, "from": {"cut": start}, "to": {"cut": to}, "weights": weights,
            "bands": bands, "_path": "tiles"}


def test_tiles_at_the_edge_replace_the_edge_time_by_the_slowest_band_and_the_tail():
    base = planned(dev(), edge(), NET)
    by0 = {c["name"]: c for c in base["ranking"]}
    # input -> cut 1 on the edge: its head to cut 1, 4 ms; the tail after cut 1, 6 ms
    r = planned(dev(), edge(), NET, tiles=[_tiles("input", 1, [0.6, 0.6], [1, 1])])
    by = {c["name"]: c for c in r["ranking"]}
    t = by["edge only, tiles to cut 1 on 2 nodes"]
    assert t["tiles"]["predicted_ms"]["total_ms"] == pytest.approx(4 * 0.6 + 6)
    assert t["total_ms"] == pytest.approx(by0["edge only"]["total_ms"] - 10 + 8.4)
    assert not any("tiles" in n for n in by if not n.startswith("edge only"))  # only what sends the input
    # unequal nodes: the slower one (speed 1, 60% of the work) decides; a LAN adds its latency and bytes
    link = plan.Network(up_mbps=100.0, rtt_ms=1.0, down_mbps=100.0, wire_overhead=1.0)
    r = planned(dev(), edge(), NET, tiles=[_tiles("input", 1, [0.6, 0.6], [2, 1])], tiles_link=link)
    t = next(c for c in r["ranking"] if c.get("tiles"))
    assert t["tiles"]["predicted_ms"]["slowest_band"] == 1
    assert t["tiles"]["predicted_ms"]["bands_ms"] == pytest.approx(2.4 + 1 + 30_000 * 8 / 100e6 * 1e3)
    # tiles from cut 0 sit beside cut 0 sent as it is (not through the TL): segment cut 0 -> cut 2
    r = planned(dev(), edge(), NET, tiles=[_tiles(0, 2, [0.5, 0.5, 0.5], [1, 1, 1])])
    names = [c["name"] for c in r["ranking"] if c.get("tiles")]
    assert len(names) == 1 and names[0].startswith("cut 0,")  # cut 0's float32 and no other encoding
    seg = 6.0 - 1.0 + max(0.0, 1.0 + 9 - 10)  # heads 6 - 1, plus the call overhead (none here)
    assert r["ranking"][[c["name"] for c in r["ranking"]].index(names[0])]["tiles"]["predicted_ms"]["total_ms"] \
        == pytest.approx(seg * 0.5 + 4)
    with pytest.raises(TlcutError, match="another model"):
        planned(dev(), edge(), NET, tiles=[_tiles("input", 1, [1], [1], sha="zzz")])


# -- the typed plan: one load/save with a version, read by every later step -----------------------

def test_a_plan_saved_loads_as_the_same_deployments(tmp_path):
    from tlcut.deployment import Engine, Plan
    from tlcut.placement import SPLIT, Placement

    p = plan.plan(with_encodings(dev()), with_encodings(edge()), NET, plan.Constraints(min_cut=1),
                  tiles=[_tiles(1, 3, [0.5, 0.5], [1, 1])])
    assert p.best.device == Engine(None, "float32", None)  # what bench profiled (these profiles name no backend)
    p.save(tmp_path / "plan.json")
    d = json.loads((tmp_path / "plan.json").read_text())
    assert (d["format"], d["version"]) == ("tlcut-plan", 2)
    q = Plan.load(tmp_path / "plan.json")
    assert q.ranking == p.ranking and q.best == p.best and q.best in q.ranking
    assert [c.allowed for c in q.ranking] == [c.allowed for c in p.ranking]
    assert q.to_json() == json.loads(json.dumps(p.to_json()))
    assert q.find(Placement(SPLIT, 2, True, "int8")).upload_bytes == 100_000 // 4 + 80
    # a deployment is what it runs: the same placement with tiles is another one, a label is no key
    tiled = [c for c in q.ranking if c.tiles]
    assert tiled and all(c != q.find(c.placement) for c in tiled)


def test_an_older_plan_is_read_and_an_unknown_version_refused(tmp_path):
    from tlcut.deployment import Engine, Plan

    d = plan.plan(dev(), edge(), NET).to_json()
    f = tmp_path / "plan.json"
    def v1(x):  # as version 1 wrote it: no engines
        return {k: v1(v) for k, v in x.items() if k != "engines"} if isinstance(x, dict) else \
            [v1(v) for v in x] if isinstance(x, list) else x
    f.write_text(json.dumps({**v1(d), "version": 1}))
    q = Plan.load(f)
    assert q.best.placement.label == d["best"]["name"] and q.best.edge == Engine() and q.best in q.ranking
    f.write_text(json.dumps({**d, "version": 99}))
    with pytest.raises(TlcutError, match=r"version 99.*tlcut plan") as e:
        Plan.load(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    f.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(TlcutError, match="not a plan written by `tlcut plan -o`"):
        Plan.load(f)


def test_a_three_tier_plan_round_trips_and_is_not_taken_for_two(tmp_path):
    from test_tiers import HOPS, host, tiers
    from tlcut.deployment import Plan, TierPlan
    from tlcut.toolchain.plan_tiers import plan_tiers as search

    p = search(("device", host("device")), [("edge", host("edge"))], [("cloud", host("cloud"))], HOPS)
    p.save(tmp_path / "tiers.json", top=5)
    q = TierPlan.load(tmp_path / "tiers.json")
    assert q.ranking == p.ranking[:5] and q.best == p.best and q.best.forward.cut == 1
    assert q.to_json() == {**tiers(), "ranking": tiers()["ranking"][:5]}
    with pytest.raises(TlcutError, match="three-tier plan"):
        Plan.load(tmp_path / "tiers.json")


def test_compile_plan_builds_exactly_the_chosen_halves(tmp_path, residual_bundle, capsys):
    from tlcut import cli
    from tlcut.bundle import Bundle
    from tlcut.deployment import Deployment, Plan
    from tlcut.placement import DEVICE, SPLIT, Placement

    b = residual_bundle(hw=16, tl="off")
    k = next(c.index for c in b.cuts if c.tl)
    comp = {key: 1.0 for key in plan.COMPONENTS}
    other = Deployment(Placement(DEVICE), {**comp, "device": 9.0}, 0)

    def compile_plan(best, *flags):
        Plan(b.name, b.model_sha256, {"up_mbps": 57, "rtt_ms": 28, "down_mbps": 570}, [best, other], best).save(
            tmp_path / "plan.json")
        code = cli.main(["compile", str(b.path), "--plan", str(tmp_path / "plan.json"), *flags])
        return code, capsys.readouterr().err, Bundle.open(b.path)

    # without the TL: no TL half anywhere (the TL applies at cut k, but the plan chose against it)
    code, err, got = compile_plan(Deployment(Placement(SPLIT, k, False, "float16"), comp, 1000))
    assert code == 0 and not any(got.find("head", c.index, True) for c in got.cuts)
    assert f"--cut {k} --tl off --encoding float16" in err
    # with the TL: its halves at cut k and nowhere else; the encoding is the run's, so said for it
    code, err, got = compile_plan(Deployment(Placement(SPLIT, k, True, "int8"), comp, 1000))
    assert code == 0 and got.find("head", k, True) and got.find("tail", k, True)
    assert not any(got.find("head", c.index, True) for c in got.cuts if c.index != k)
    assert f"--cut {k} --tl on --encoding int8" in err
    code, err, _ = compile_plan(Deployment(Placement(SPLIT, k, True, "int8"), comp, 1000), "--tl", "off")
    assert code == 2 and "disagrees with the plan" in err
    code, err, _ = compile_plan(other)
    assert code == 2 and "device only, which has no cut to compile" in err
