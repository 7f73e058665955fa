"""A transfer layer's kind in the placement, the accuracy records and the verbs: labels and JSON that
stay as they were for the pool TL, accuracy keyed by identity (old label-keyed records still read),
the plan choosing among a learned TL's encodings by recorded accuracy, and --tl KIND on compile and
serve refused where the bundle holds no such kind trained. Hand-made records; no training."""

import json

import numpy as np
import pytest

from profiles import profile, st
from tlcut import transfer
from tlcut.accuracy import accuracy_rows
from tlcut.bundle import Bundle
from tlcut.deployment import Plan
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, SPLIT, Placement
from tlcut.toolchain import plan

NET = plan.Network(up_mbps=8.0, rtt_ms=20.0, down_mbps=80.0, wire_overhead=1.0)

# -- the placement ----------------------------------------------------------------------------------


def test_pool_labels_and_json_read_as_before():
    p = Placement(SPLIT, 5, True, "int8")
    assert p.label == "cut 5 + TL, int8" and p.tl_kind is None and p.kind == "pool"
    assert p.to_json() == {"where": "split", "cut": 5, "tl": True, "encoding": "int8", "label": "cut 5 + TL, int8"}
    assert Placement(SPLIT, 5, True, tl_kind="pool") == Placement(SPLIT, 5, True)  # pool is None, spelled or not
    assert Placement(SPLIT, 5).kind is None


def test_a_learned_kind_names_itself_in_the_label_and_the_json():
    p = Placement(SPLIT, 5, True, "int8+zstd", tl_kind="Bottleneck:8")
    assert p.tl_kind == "bottleneck:8" and p.label == "cut 5 + bottleneck:8, int8+zstd"
    d = p.to_json()
    assert d["tl"] is True and d["tl_kind"] == "bottleneck:8"  # tl stays a bool: pool-only readers still read it
    assert Placement.from_json(d) == p and Placement.from_json(json.loads(json.dumps(d))).label == p.label
    assert p.slug == "cut-5-bottleneck-8-int8-zstd"
    assert p.identity == {"where": "split", "cut": 5, "tl": True, "tl_kind": "bottleneck:8", "encoding": "int8+zstd",
                          "quality": None}
    with pytest.raises(TlcutError, match="only with the TL on"):
        Placement(SPLIT, 5, False, tl_kind="bottleneck:8")


@pytest.mark.parametrize("p", [
    Placement(DEVICE), Placement(EDGE), Placement(EDGE, encoding="uint8"), Placement(EDGE, encoding="jpeg", quality=75),
    Placement(SPLIT, 3), Placement(SPLIT, 3, True), Placement(SPLIT, 3, True, "int8"), Placement(SPLIT, 0, False, "float16"),
    Placement(SPLIT, 2, True, "int4+zstd", tl_kind="pool+bottleneck:4"), Placement(SPLIT, 7, True, tl_kind="bottleneck:16/s2"),
])
def test_every_label_names_its_placement(p):
    assert Placement.from_label(p.label) == p


def test_a_plus_tl_label_stands_for_the_kind_it_is_given():
    assert Placement.from_label("cut 4 + TL, int8", "bottleneck:8") == Placement(SPLIT, 4, True, "int8", tl_kind="bottleneck:8")
    with pytest.raises(ValueError):
        Placement.from_label("cut four")


# -- accuracy records -------------------------------------------------------------------------------

OLD = {"device only": {"float32": {"accuracy": 0.8, "n": 100}}, "cut 2 + TL, int8": {"float32": {"accuracy": 0.79},
                                                                                  "int8": {"accuracy": 0.78}},
       "edge only, JPEG q90": {"float32": {"accuracy": 0.799}}, "_source": "b", "no such placement": {"float32": {}}}


def test_label_keyed_records_convert_on_read():
    rows = accuracy_rows(OLD)
    assert len(rows) == 4  # the caller's note and a label that names nothing are left out
    by = {(r["label"], r["precision"]): r for r in rows}
    assert by[("cut 2 + TL, int8", "int8")] | {"accuracy": 0} == {
        "where": "split", "cut": 2, "tl": True, "tl_kind": "pool", "encoding": "int8", "quality": None,
        "precision": "int8", "label": "cut 2 + TL, int8", "accuracy": 0}
    assert by[("edge only, JPEG q90", "float32")]["quality"] == 90 and by[("device only", "float32")]["n"] == 100
    # where the bundle held a learned kind at the cut, "+ TL" was that kind
    assert {r["tl_kind"] for r in accuracy_rows(OLD, {2: "bottleneck:8"}) if r["tl"]} == {"bottleneck:8"}


def test_an_old_bundle_reads_its_records_and_rewrites_them_as_rows(small_bundle):
    b = small_bundle(tl=None)
    c = next(c for c in b.cuts if c.tl)
    b.manifest["accuracy"] = {"device only": {"float32": {"accuracy": 0.8}},
                              f"cut {c.index} + TL, int8": {"float32": {"accuracy": 0.7}}}
    b.save_manifest()
    b = Bundle.open(b.path)
    assert {(r["label"], r["tl_kind"]) for r in b.accuracy} == {("device only", None), (f"cut {c.index} + TL, int8", "pool")}
    p = Placement(SPLIT, c.index, True, "int8")
    b.record_accuracy({**p.identity, "precision": "float32", "label": p.label, "accuracy": 0.75})  # replaces its key
    b.record_accuracy({**p.with_(encoding="raw").identity, "precision": "float32", "accuracy": 0.76})
    rows = Bundle.open(b.path).manifest["accuracy"]
    assert isinstance(rows, list) and len(rows) == 3
    assert [r["accuracy"] for r in rows if r["encoding"] == "int8"] == [0.75]


# -- the plan ---------------------------------------------------------------------------------------


def _profiles(kind=None, edge_kind="same"):
    """Cut 0 holds ``kind`` (None: pool), benched with raw, int8 and int8+zstd (measured) on the wire."""
    out = []
    for role, scale in (("device", 1), ("edge", 0.1)):
        p = profile(role, [10 * scale, 40 * scale], [90 * scale, 60 * scale], [800_000, 100_000], [True, False],
                    full=100 * scale)
        c = p["cuts"][0]
        k = kind if edge_kind == "same" or role == "device" else edge_kind
        if k:
            c["tl_kind"], c["tl_bytes"] = k, 10_000
        c["encodings_tl"] = {"int8": {"serialize": st(0.2), "deserialize": st(0.2), "bytes": c["tl_bytes"] // 4},
                             "int8+zstd": {"serialize": st(0.3), "deserialize": st(0.3), "bytes": c["tl_bytes"] // 10,
                                           "measured": True}}
        out.append(p)
    return out


def test_the_plan_offers_the_kind_the_bundle_holds_at_each_cut():
    r = plan.plan(*_profiles("bottleneck:8"), NET)
    tl = [c for c in r.ranking if c.placement.tl]
    assert tl and {c.placement.tl_kind for c in tl} == {"bottleneck:8"}
    assert {c.label for c in tl} == {"cut 0 + bottleneck:8", "cut 0 + bottleneck:8, int8", "cut 0 + bottleneck:8, int8+zstd"}
    j = r.to_json()
    assert j["best"]["placement"]["tl_kind"] == "bottleneck:8" and j["best"]["placement"]["tl"] is True
    assert Plan.from_json(json.loads(json.dumps(j))).best.placement == r.best.placement
    # pool profiles (no tl_kind in the cut row) plan as before
    assert {c.label for c in plan.plan(*_profiles(), NET).ranking if c.placement.tl} == {
        "cut 0 + TL", "cut 0 + TL, int8", "cut 0 + TL, int8+zstd"}
    # profiles of bundles with different TLs at the cut: no TL there is known to run
    assert not [c for c in plan.plan(*_profiles("bottleneck:8", None), NET).ranking if c.placement.tl]


def test_max_accuracy_drop_chooses_among_a_learned_tls_encodings_by_identity():
    d, e = _profiles("bottleneck:8")
    cons = plan.Constraints(max_accuracy_drop=1.0, min_cut=0)

    def row(p, acc):
        return {**p.identity, "precision": "float32", "label": p.label, "accuracy": acc}

    bn = Placement(SPLIT, 0, True, tl_kind="bottleneck:8")
    rows = [row(Placement(DEVICE), 0.80), row(bn.with_(encoding="int8+zstd"), 0.70), row(bn.with_(encoding="int8"), 0.795),
            row(Placement(SPLIT, 0, True, "int8+zstd"), 0.80)]  # the pool TL's: says nothing of the bottleneck
    r = plan.plan(d, e, NET, cons, rows)
    by = {c.label: c for c in r.ranking}
    assert by["cut 0 + bottleneck:8, int8"].accuracy_drop_pts == pytest.approx(0.5)
    assert not by["cut 0 + bottleneck:8, int8+zstd"].allowed and "accuracy" in by["cut 0 + bottleneck:8, int8+zstd"].why_not
    assert "unknown" in by["cut 0 + bottleneck:8"].why_not
    assert r.best.label == "cut 0 + bottleneck:8, int8"
    # the smaller wire wins once its accuracy is within the bound
    rows[1] = row(bn.with_(encoding="int8+zstd"), 0.799)
    assert plan.plan(d, e, NET, cons, rows).best.label == "cut 0 + bottleneck:8, int8+zstd"
    # a label-keyed table (bundles before rows) reads through the same function: "+ TL" is the pool TL
    assert plan.accuracy_of(plan.measured_accuracy(OLD), Placement(SPLIT, 2, True, "int8"), "int8") == 0.78
    assert plan.accuracy_of(plan.measured_accuracy(OLD), Placement(SPLIT, 2, True, "int8", tl_kind="bottleneck:8"),
                            "int8") is None


# -- the verbs --------------------------------------------------------------------------------------


def _one_error(capsys, code, needle):
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.startswith("tlcut: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_compile_and_serve_take_a_kind_only_where_the_bundle_holds_it(small_bundle, capsys, tmp_path):
    from tlcut import cli

    b = small_bundle(tl=None)
    c = next(c for c in b.cuts if c.tl)
    for verb in (["compile", str(b.path), "--cuts", str(c.index)],
                 ["compile", str(b.path), "--target", "jetson", "--cut", str(c.index), "-o", str(tmp_path / "j")],
                 ["compile", str(b.path), "--target", "triton", "--cut", str(c.index), "-o", str(tmp_path / "t")],
                 ["serve", str(b.path), "--cut", str(c.index), "--bind", "tcp://127.0.0.1:1"]):
        _one_error(capsys, cli.main([*verb, "--tl", "bottleneck:2"]), f"holds no trained bottleneck:2 transfer layer at cut {c.index}")
        _one_error(capsys, cli.main([*verb, "--tl", "maybe"]), "--tl must be on, off, both or a transfer layer's kind")
    assert not (tmp_path / "j").exists() and not (tmp_path / "t").exists()
    assert cli.main(["compile", str(b.path), "--cuts", str(c.index), "--tl", "pool"]) == 0  # the kind it holds: --tl on
    b = Bundle.open(b.path)
    assert b.find("tail", c.index, True) is not None and b.find("tail", c.index, False) is None


def test_a_learned_kind_resolves_into_the_placement(small_bundle):
    b = small_bundle(tl=None)
    c = next(c for c in b.cuts if c.tl)
    kind = transfer.parse("bottleneck:2")
    fshape = c.shape if c.layout == "NHWC" else tuple(c.shape[i] for i in (0, 2, 3, 1))
    rng = np.random.default_rng(0)
    c = transfer.record(b, c, kind, kind.init_weights(rng.standard_normal(fshape).astype(np.float32)), {})
    p = Placement.resolve(b, str(c.index), True, "int8")
    assert p.tl_kind == "bottleneck:2" and p.label == f"cut {c.index} + bottleneck:2, int8"
    assert Placement.resolve(b, str(c.index), False).tl_kind is None
