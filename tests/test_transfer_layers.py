"""Transfer-layer kinds (tlcut/transfer): spellings, bytes, their ONNX nodes against numpy, and a
learned bottleneck retrained in a tiny model, split into a bundle and served only where trained."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from tlcut import transfer
from tlcut.bundle import Bundle, Cut
from tlcut.errors import TlcutError
from tlcut.toolchain import surgery

# -- unit: no model -------------------------------------------------------------------------------


@pytest.mark.parametrize("text,name,family", [
    ("pool", "pool", "pool"), (" Bottleneck:16 ", "bottleneck:16", "bottleneck"),
    ("bottleneck:16/s2", "bottleneck:16/s2", "bottleneck"), ("pool+bottleneck:8", "pool+bottleneck:8", "pool+bottleneck"),
])
def test_spellings_parse_and_name_themselves(text, name, family):
    kind = transfer.parse(text)
    assert kind.name == name and kind.family == family and transfer.parse(kind.name) == kind
    assert kind.has_weights == (family != "pool")


@pytest.mark.parametrize("text,match", [
    ("max", "unknown transfer layer 'max'; use one of pool, bottleneck:C"), ("bottleneck", "needs a width"),
    ("bottleneck:0", "C >= 1"), ("bottleneck:x", "C >= 1"), ("bottleneck:16/s3", "only /s2"),
    ("pool:4", "takes no width"), ("pool+bottleneck", "needs a width"), ("pool+bottleneck:4/s2", "C >= 1"),
])
def test_bad_spellings_are_refused_in_one_line(text, match):
    with pytest.raises(TlcutError, match=match) as e:
        transfer.parse(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("layout,shape", [("NHWC", (1, 15, 15, 32)), ("NCHW", (1, 32, 15, 15))])
def test_bytes_per_kind(layout, shape):
    hw = lambda h, w, c: (1, h, w, c) if layout == "NHWC" else (1, c, h, w)  # noqa: E731
    want = {"pool": hw(8, 8, 32), "bottleneck:4": hw(15, 15, 4), "bottleneck:4/s2": hw(8, 8, 4),
            "pool+bottleneck:4": hw(8, 8, 4)}
    for text, wire in want.items():
        kind = transfer.parse(text)
        assert kind.wire_shape(shape, layout) == wire
        assert kind.wire_bytes(shape, "float32", layout) == 4 * np.prod(wire)
        assert kind.factor(shape, layout) == pytest.approx(np.prod(wire) / np.prod(shape))
    # the learned kinds at the pool's spatial size send C/32 of the pool's bytes
    pool = transfer.parse("pool").wire_bytes(shape, "float32", layout)
    assert transfer.parse("pool+bottleneck:4").wire_bytes(shape, "float32", layout) * 8 == pool


def test_a_bottleneck_must_code_into_fewer_values():
    transfer.parse("bottleneck:31").check_fits((1, 15, 15, 32), "NHWC")
    transfer.parse("bottleneck:100/s2").check_fits((1, 15, 15, 32), "NHWC")  # 128 values a 2x2 patch
    for text in ("bottleneck:32", "bottleneck:128/s2", "pool+bottleneck:40"):
        with pytest.raises(TlcutError, match="choose C below"):
            transfer.parse(text).check_fits((1, 15, 15, 32), "NHWC")


def test_an_old_cut_row_is_pool_and_reads_as_before():
    row = {"index": 3, "tensor": "t", "layer": "l", "shape": [1, 8, 8, 4], "dtype": "float32", "layout": "NHWC",
           "node_index": 7, "tl": True, "tl_shape": [1, 4, 4, 4]}
    c = Cut.from_json(row)
    assert c.tl_kind == "pool" and "tl_kind" not in c.to_json()
    learned = Cut.from_json({**row, "tl_kind": "bottleneck:2", "tl_shape": [1, 8, 8, 2]})
    assert learned.to_json()["tl_kind"] == "bottleneck:2" and learned.tl_bytes == 8 * 8 * 2 * 4


def _numpy_learned(kind, f, w):
    """Reference DeviceTL and EdgeTL of a learned kind on NHWC maps ``f`` (Keras weight layouts)."""
    from tlcut.transfer.bottleneck import _pool_nhwc

    n, h, wd, c = f.shape
    if kind.family == "pool+bottleneck":
        f = _pool_nhwc(f)
    if kind.family == "bottleneck" and kind.stride == 2:
        p = np.zeros((n, h + h % 2, wd + wd % 2, c), np.float32)
        p[:, :h, :wd] = f
        p = p.reshape(n, p.shape[1] // 2, 2, p.shape[2] // 2, 2, c)
        z = np.einsum("nyaxbc,abcd->nyxd", p, w["device_kernel"]) + w["device_bias"]
        up = np.einsum("nyxd,abod->nyaxbo", z, w["edge_kernel"]) + w["edge_bias"]
        return z, up.reshape(n, 2 * z.shape[1], 2 * z.shape[2], c)[:, :h, :wd]
    z = np.einsum("nhwc,cd->nhwd", f, w["device_kernel"][0, 0]) + w["device_bias"]
    up = np.einsum("nhwd,dc->nhwc", z, w["edge_kernel"][0, 0]) + w["edge_bias"]
    if kind.family == "pool+bottleneck":
        up = up.repeat(2, 1).repeat(2, 2)[:, :h, :wd]
    return z, up


def _run(m, feed):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize("text", ["bottleneck:2", "bottleneck:3/s2", "pool+bottleneck:2"])
def test_learned_nodes_compute_the_reference_and_the_halves_compose(text):
    """NCHW and NHWC cuts, odd sizes: the surgery's nodes are the kind's function, and head + tail
    with the TL equal head, DeviceTL, EdgeTL, tail run one after another."""
    from tlcut.models import graphs
    from tlcut.toolchain.annotate import annotate, infer_shapes
    from tlcut.toolchain.cuts import enumerate_cuts

    kind, rng = transfer.parse(text), np.random.default_rng(0)
    for m in (infer_shapes(graphs.residual(hw=9)), infer_shapes(graphs.nhwc_classifier(h=7, w=5))):
        cut0 = next(c for c in enumerate_cuts(m, annotate(m, None, None)) if c.tl)
        cut = dataclasses.replace(cut0, tl_kind=kind.name, tl_shape=kind.wire_shape(cut0.shape, cut0.layout))
        nhwc = cut.layout == "NHWC"
        fshape = cut.shape if nhwc else tuple(cut.shape[i] for i in (0, 2, 3, 1))
        w = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in kind.init_weights(rng.standard_normal((2, *fshape[1:])).astype(np.float32)).items()}
        f = rng.standard_normal(fshape).astype(np.float32)
        p = _run(surgery.device_tl(cut, w), {cut.tensor: f if nhwc else f.transpose(0, 3, 1, 2)})
        up = _run(surgery.edge_tl(cut, w), {surgery.PAYLOAD_TL: p})
        z, want = _numpy_learned(kind, f, w)
        if not nhwc:
            z, want = z.transpose(0, 3, 1, 2), want.transpose(0, 3, 1, 2)
        assert p.shape == cut.tl_shape and up.shape == cut.shape
        np.testing.assert_allclose(p, z, atol=1e-4)
        np.testing.assert_allclose(up, want, atol=1e-4)
        name = m.graph.input[0].name
        x = rng.standard_normal([d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
        y = _run(surgery.tail(m, cut, True, w), {surgery.PAYLOAD_TL: _run(surgery.head(m, cut, True, w), {name: x})})
        feat = _run(surgery.head(m, cut), {name: x})
        mid = _run(surgery.edge_tl(cut, w), {surgery.PAYLOAD_TL: _run(surgery.device_tl(cut, w), {cut.tensor: feat})})
        np.testing.assert_allclose(y, _run(surgery.tail(m, cut), {cut.tensor: mid}), atol=1e-4)
        with pytest.raises(TlcutError, match="no trained weights"):
            surgery.head(m, cut, True)


def test_a_kind_the_bundle_does_not_hold_is_refused(small_bundle):
    from tlcut.toolchain.compile import compile_cuts

    b = small_bundle(tl=None)
    c = next(c for c in b.cuts if c.tl)
    assert transfer.held(c, "pool").name == "pool" and transfer.weights_of(b, c) is None
    with pytest.raises(TlcutError, match=rf"holds no trained bottleneck:2 transfer layer at cut {c.index}, its TL "
                                         r"there is pool; train one with `tlcut retrain"):
        compile_cuts(b, [c], tl="bottleneck:2")
    compile_cuts(b, [c], tl="pool")  # the kind the bundle holds compiles as --tl on
    assert b.find("tail", c.index, True) is not None


def test_run_and_eval_refuse_a_kind_the_bundle_does_not_hold(small_bundle, capsys):
    """--tl KIND on the device's verbs: a bad spelling or a kind not trained at the cut is one line."""
    from tlcut import cli

    b = small_bundle(tl=None)
    c = next(c for c in b.cuts if c.tl)
    for tl, needle in (("bottleneck:2", "holds no trained bottleneck:2"), ("bottlenek:2", "unknown transfer layer")):
        code = cli.main(["run", str(b.path), "--cut", str(c.index), "--tl", tl, "--edge", "tcp://127.0.0.1:1"])
        err = capsys.readouterr().err
        lines = [x for x in err.strip().splitlines() if x.startswith("tlcut: error:")]
        assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_both_edges_serve_a_learned_tl(small_bundle, tmp_path):
    """A learned kind recorded at a cut (random weights: no training needed) compiles into halves
    that the Python edge and, where built, the C edge serve as the ONNX halves compute."""
    import os
    import subprocess
    import threading
    from pathlib import Path

    from tlcut.lab.loopback import free_port
    from tlcut.runtime.client import wait_for_edge
    from tlcut.runtime.run import Device
    from tlcut.runtime.serve import Edge
    from tlcut.toolchain.compile import compile_cuts

    b, rng = small_bundle(tl=None), np.random.default_rng(2)
    c, kind = next(c for c in b.cuts if c.tl), transfer.parse("pool+bottleneck:2")
    fshape = c.shape if c.layout == "NHWC" else tuple(c.shape[i] for i in (0, 2, 3, 1))
    w = {k: rng.standard_normal(v.shape).astype(np.float32)
         for k, v in kind.init_weights(rng.standard_normal(fshape).astype(np.float32)).items()}
    c = transfer.record(b, c, kind, w, {})
    compile_cuts(b, [c], tl="on")
    b = Bundle.open(b.path)
    assert b.cuts[c.index].tl_kind == kind.name and transfer.weights_of(b, c)["edge_kernel"].shape == w["edge_kernel"].shape
    head = ort.InferenceSession(str(b.runnable("head", c.index, True)), providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(b.runnable("tail", c.index, True)), providers=["CPUExecutionProvider"])
    xs = [rng.random(b.inputs[0]["shape"]).astype(np.float32) for _ in range(2)]
    want = [tail.run(None, {surgery.PAYLOAD_TL: head.run(None, {b.inputs[0]["name"]: x})[0]})[0] for x in xs]
    assert np.abs(want[0] - want[1]).max() > 1e-6
    edged = os.environ.get("TLCUT_EDGED") or str(Path(__file__).resolve().parents[1] / "build" / "tlcut-edged")
    for which in ("python", "c") if os.access(edged, os.X_OK) else ("python",):
        ep, stop, proc = f"tcp://127.0.0.1:{free_port()}", threading.Event(), None
        if which == "python":
            edge = Edge(b, [str(c.index)], tl="on")
            t = threading.Thread(target=edge.serve, args=(ep,), kwargs={"stop": stop}, daemon=True)
            t.start()
        else:
            log = tmp_path / "edged.log"
            proc = subprocess.Popen([edged, str(b.path), "--cut", str(c.index), "--tl", "on", "--bind", ep], stderr=log.open("w"))
        try:
            wait_for_edge(ep, timeout_s=60, insecure=True)
            with Device(b, str(c.index), tl=True, edge=ep) as d:
                for x, y in zip(xs, want):
                    got, _ = d.infer(x)
                    assert got.shape == y.shape and np.abs(got - y).max() <= 1e-4, (which, got, y)
        finally:
            stop.set()
            if proc:
                proc.terminate()
                assert proc.wait(30) == 0, log.read_text()[-2000:]
            else:
                t.join(10)
                edge.close()


# -- integration: a learned bottleneck retrained in a tiny model (TensorFlow) ------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny InspectNet trained for two epochs on 40 images of two kinds of stripes."""
    from PIL import Image

    from tlcut.toolchain.train import train

    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(1)
    for k, cls in enumerate(("rows", "columns")):
        (root / cls).mkdir()
        for i in range(20):
            a = rng.integers(0, 80, (32, 32), dtype=np.uint8)
            a[::4, :] = 220 if k == 0 else a[::4, :]
            a[:, ::4] = 220 if k == 1 else a[:, ::4]
            Image.fromarray(a).save(root / cls / f"{i}.png")
    out = tmp_path_factory.mktemp("tiny") / "m.keras"
    train("InspectNet", str(root), out, size=30, epochs=2, seed=0, say=lambda *_: None)
    return out


@pytest.mark.tf
@pytest.mark.parametrize("layer,text", [("s1_pool", "pool+bottleneck:4"), ("s2_pool", "bottleneck:4/s2")])
def test_a_retrained_bottleneck_bundle_serves_what_keras_computed(tiny_model, tmp_path, layer, text):
    from tlcut.placement import Placement
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.eval import evaluate
    from tlcut.toolchain.train import retrain

    r = retrain(str(tiny_model), layer, tmp_path / "b", tl=text, epochs=1, say=lambda *_: None)
    assert r["split_max_abs_diff"] <= 1e-4 and r["tl"] == text
    b = Bundle.open(tmp_path / "b")
    c = b.cuts[r["cut"]]
    pool_bytes = transfer.parse("pool").wire_bytes(c.shape, c.dtype, c.layout)
    channels = c.shape[1 if c.layout == "NCHW" else 3]  # 16 at s1_pool, 32 at s2_pool
    assert c.tl_kind == text and c.tl_bytes * channels == pool_bytes * 4  # 4 channels where the pool sends them all
    assert tuple(b.find("head", c.index, True).output["shape"]) == c.tl_shape
    row = next(t for t in transfer.records(b) if t["cut"] == c.index)
    assert row["kind"] == text and (b.path / row["weights"]).is_file()
    assert transfer.weights_of(b, c)["device_kernel"].shape[-1] == 4
    # the deployed halves' output moves with the input (a bottleneck of zeros would not)
    head = ort.InferenceSession(str(b.runnable("head", c.index, True)), providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(b.runnable("tail", c.index, True)), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, *b.inputs[0]["shape"][1:])).astype(np.float32)
    ys = [tail.run(None, {surgery.PAYLOAD_TL: head.run(None, {b.inputs[0]["name"]: xi})[0]})[0] for xi in x]
    assert np.abs(ys[0] - ys[1]).max() > 1e-6
    # served through the runtime: the payload is the kind's bytes (plus the 80-byte header)
    res = evaluate(b, Placement.resolve(b, layer, True, "raw"), limit=8)
    assert res["payload_bytes"] - 80 == c.tl_bytes
    # the bundle holds this kind here, and nothing else trained
    with pytest.raises(TlcutError, match="its TL there is " + text.replace("+", r"\+")):
        compile_cuts(b, [c], tl="pool")
    other = next(o for o in b.cuts if o.tl and o.index != c.index)
    with pytest.raises(TlcutError, match=f"holds no trained {text}".replace("+", r"\+")):
        compile_cuts(b, [other], tl=text)
