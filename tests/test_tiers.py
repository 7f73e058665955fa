"""Three tiers (device | edge | cloud) planned on hand-made profiles whose best pair is known."""

import time

import numpy as np
import onnxruntime as ort
import pytest

from profiles import profile
from tlcut.errors import TlcutError
from tlcut.lab.loopback import free_port
from tlcut.runtime import protocol as P
from tlcut.runtime.client import EdgeError
from tlcut.runtime.edge import serving
from tlcut.runtime.forward import Forward
from tlcut.runtime.run import Device, inputs
from tlcut.runtime.serve import Edge, local_edge
from tlcut.toolchain import plan, plan_tiers

HEADS = {"device": [10, 40, 60, 90], "edge": [5, 20, 30, 45], "cloud": [1, 4, 6, 9]}
FULL = {"device": 100, "edge": 50, "cloud": 10}
SIZES = [800_000, 100_000, 400_000, 8_000]  # TL at cuts 0 and 2 sends a quarter
TLOK = [True, False, True, False]


def host(tier):
    h = HEADS[tier]
    return profile("device" if tier == "device" else "edge", h, [FULL[tier] - x for x in h], SIZES, TLOK, FULL[tier])


HOPS = {("device", "edge"): plan.Network(up_mbps=80.0, rtt_ms=20.0, down_mbps=800.0, wire_overhead=1.0),
        ("edge", "cloud"): plan.Network(up_mbps=1000.0, rtt_ms=10.0, down_mbps=1000.0, wire_overhead=1.0)}


def tiers(cons=None, clouds=True):
    return plan_tiers.plan_tiers(("device", host("device")), [("edge", host("edge"))],
                                 [("cloud", host("cloud"))] if clouds else [], HOPS, cons).to_json()


def test_the_known_best_pair_and_its_arithmetic():
    r = tiers()
    b = r["best"]
    # device runs to cut 0 and sends it through the TL (200 KB, 20 ms at 80 Mbit/s); the edge runs
    # cut 1 (15 ms, the slow edge) and sends 100 KB to the fast cloud, which runs the rest (6 ms)
    assert b["cuts"] == [0, 1] and b["crossings"][0]["tl"] and not b["crossings"][1]["tl"]
    assert b["name"] == "device > cut 0 (TL) > edge > cut 1 > cloud"
    ser = 0.01
    reply = ser + 4080 * 8 / 800e6 * 1e3 + ser + ser + ser + 4080 * 8 / 1000e6 * 1e3
    expect = (10 + 0.5 + ser + 20 + 200_080 * 8 / 80e6 * 1e3 + ser + 0.5  # device, TL, crossing 1
              + 15                                                     # edge: cuts (0, 1]
              + ser + 10 + 100_080 * 8 / 1000e6 * 1e3 + ser            # crossing 2
              + 6 + reply)                                             # cloud tail, the reply back
    assert b["total_ms"] == pytest.approx(expect)
    assert b["upload_bytes"] == {"device": 200_080, "edge": 100_080}
    # the best with two tiers is slower: the edge would have to run the whole tail itself
    two = r["best_two_tiers"]
    assert "cloud" not in two["hosts"] and two["total_ms"] > b["total_ms"] + 10
    assert two["cuts"] == [0, 4]


def test_without_a_cloud_it_is_the_two_tier_plan():
    r = tiers(clouds=False)
    assert all("cloud" not in c["hosts"] for c in r["ranking"])
    assert r["best"]["cuts"] == [0, 4]


def test_each_scission_constraint():
    C = plan_tiers.TierConstraints
    # a layer that must stay on the device (cut 1): the device runs at least to cut 1
    assert tiers(C(must={1: "device"}))["best"]["cuts"] == [1, 2]
    # a layer that must not run on the device: the input itself crosses
    assert tiers(C(must_not={0: ["device"]}))["best"]["cuts"][0] == -1
    # an upload cap on the device: only cut 3 (8 KB) fits, and the device alone is faster
    r = tiers(C(max_upload_bytes={"device": 50_000}))
    assert r["best"]["name"] == "device only"
    assert all(c["upload_bytes"].get("device", 0) <= 50_000 for c in r["ranking"])
    # a time cap on the edge (ms): cut 0 -> 1 costs it 15.5 ms; cut 1 -> 2 fits in 12
    r = tiers(C(max_time_ms={"edge": 12}))
    assert r["best"]["cuts"] == [1, 2] and all(c["tiers_ms"]["edge"] <= 12 for c in r["ranking"])
    # a time cap in percent: the device may take at most 10% of the total
    r = tiers(C(max_time_pct={"device": 10}))
    assert r["best"]["cuts"][0] == -1
    assert all(c["tiers_ms"]["device"] <= 0.1 * c["total_ms"] for c in r["ranking"])
    with pytest.raises(TlcutError, match="no placement"):
        tiers(C(must={0: "cloud"}, max_upload_bytes={"device": 10, "edge": 10}))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(TlcutError, match="no row edge,cloud"):
        plan_tiers.plan_tiers(("device", host("device")), [("edge", host("edge"))], [("cloud", host("cloud"))],
                              {("device", "edge"): HOPS[("device", "edge")]})
    with pytest.raises(TlcutError, match="cuts are 0..3"):
        tiers(plan_tiers.TierConstraints(must={7: "edge"}))
    with pytest.raises(TlcutError, match="unknown tier 'fog'"):
        tiers(plan_tiers.TierConstraints(must={1: "fog"}))
    other = host("cloud")
    other["model_sha256"] = "zzz"
    with pytest.raises(TlcutError, match="another model"):
        plan_tiers.plan_tiers(("device", host("device")), [("edge", host("edge"))], [("cloud", other)], HOPS)


def test_several_hosts_per_tier_pick_the_best():
    slow = host("cloud")
    for c in slow["cuts"]:
        c["tail"] = {k: v * 10 if isinstance(v, float | int) and k != "n" else v for k, v in c["tail"].items()}
    r = plan_tiers.plan_tiers(("device", host("device")), [("edge", host("edge"))],
                              [("slow", slow), ("cloud", host("cloud"))],
                              {**HOPS, ("edge", "slow"): HOPS[("edge", "cloud")]})
    assert r.best.hosts["cloud"] == "cloud"


# -- the runtime chain: device -> edge (middle part) -> cloud, over the same protocol ---------------

@pytest.fixture(scope="module")
def chain_bundle(small_bundle):
    from tlcut.toolchain.compile import compile_middle

    b = small_bundle()
    assert b.cuts[0].tl and b.cuts[1].tl
    for to_tl in (False, True):
        compile_middle(b, b.cuts[0], b.cuts[1], tl="both", to_tl=to_tl)
    return b


def whole(b, x):
    s = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    return s.run(None, {b.inputs[0]["name"]: x})[0]


def two_tier(b, cut, tl, x):
    """The bundle's own head and tail of one cut, run here: the reference for a TL at that cut."""
    def run(kind, feed):
        s = ort.InferenceSession(str(b.runnable(kind, cut, tl)), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: feed})[0]
    return run("tail", run("head", x))


def both_tls(b, x):
    """The TL at both crossings, composed here from separate pieces: the head with the TL at cut 0,
    its EdgeTL alone, the middle part without TLs (checked against the whole model by the no-TL
    case), the DeviceTL of cut 1 alone, and the tail with the TL at cut 1."""
    from tlcut.toolchain import surgery

    def run(model, feed):
        s = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: feed})[0]

    c0, c1 = b.cuts[0], b.cuts[1]
    z = run(b.runnable("head", 0, True), x)
    z = run(surgery.edge_tl(c0).SerializeToString(), z)
    z = run(b.path / b.find("middle", 0, False, to=(1, False)).file, z)
    z = run(surgery.device_tl(c1).SerializeToString(), z)
    return run(b.runnable("tail", 1, True), z)


@pytest.mark.parametrize("tl0,tl1", [(False, False), (True, False), (False, True), (True, True)])
def test_a_chain_of_three_tiers_computes_what_two_tiers_do(chain_bundle, tl0, tl1):
    """No TL: the whole model; a TL at one crossing: exactly what the two-tier halves with that TL
    give; at both: the two TLs in turn, with the middle part between them."""
    b = chain_bundle
    with local_edge(b, ["1"], tl="both") as cloud:
        edge = Edge(b, ["0"], tl="both", forward=Forward(cloud, 1, tl1, timeout_s=5))
        with serving(edge) as ep, Device(b, "0", tl=tl0, edge=ep) as dev:
            ys = []
            for x in inputs(b, None, 3, seed=4):
                y, rec = dev.infer(x)
                if tl0 and tl1:
                    ref = both_tls(b, x)
                    # each TL changes the result: the one-TL references are not what the chain gives
                    assert min(np.abs(y - two_tier(b, k, True, x)).max() for k in (0, 1)) > 1e-2
                else:
                    ref = two_tier(b, 0, True, x) if tl0 else two_tier(b, 1, True, x) if tl1 else whole(b, x)
                assert np.abs(y - ref).max() <= 1e-5
                assert rec["edge_ms"] > 0
                ys.append(y)
            assert np.abs(ys[0] - ys[1]).max() > 1e-3, "the output must move with the input"
        edge.close()


def test_a_cloud_that_is_down_comes_back_as_error_10_within_the_timeout(chain_bundle):
    b = chain_bundle
    dead = f"tcp://127.0.0.1:{free_port()}"
    edge = Edge(b, ["0"], tl="off", forward=Forward(dead, 1, False, timeout_s=0.5))
    with serving(edge) as ep, Device(b, "0", tl=False, edge=ep, timeout_s=5) as dev:
        t0 = time.monotonic()
        with pytest.raises(EdgeError) as e:
            dev.infer(inputs(b, None, 1)[0])
        assert e.value.code == P.E_UPSTREAM and dead in str(e.value)
        assert time.monotonic() - t0 < 3, "the device must hear of it before its own timeout"
        # the edge keeps serving: a ping is answered
        dev.client.ping(timeout_s=2)
    edge.close()


def test_the_clouds_error_travels_back_with_its_cause(chain_bundle):
    b = chain_bundle
    with local_edge(b, ["0"], tl="off") as cloud:  # serves cut 0, not the cut the edge forwards
        edge = Edge(b, ["0"], tl="off", forward=Forward(cloud, 1, False, timeout_s=5))
        with serving(edge) as ep, Device(b, "0", tl=False, edge=ep) as dev:
            with pytest.raises(EdgeError) as e:
                dev.infer(inputs(b, None, 1)[0])
            assert e.value.code == P.E_WRONG_CUT and "next tier" in str(e.value)
        edge.close()


def test_a_missing_middle_part_is_a_one_line_error(chain_bundle):
    with pytest.raises(TlcutError, match="compile .* --to 0"):
        Edge(chain_bundle, ["1"], tl="off", forward=Forward("tcp://127.0.0.1:1", 0))
