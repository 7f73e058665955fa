"""Horizontal tiles: the halo each band needs, derived from the graph, and bands that stitch back
to the untiled segment exactly.

Hand-built graphs (onnx.helper) check the halo arithmetic against answers worked out by hand
(strides, dilations, asymmetric pads, auto_pad, ceil_mode, Pad, branches) and exactness with 2-4
bands of equal and unequal heights on odd sizes; real Keras models (random weights) check
segments of DenseNet169, ResNet101 and EfficientNetB0. Every exactness check also checks that the
output moves with the input, so an output that ignores it cannot pass.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tlcut import cli
from tlcut.tiles_folder import read_tiles
from tlcut.errors import TlcutError
from tlcut.toolchain import tiles

RNG = np.random.default_rng(0)


# -- building graphs by hand ----------------------------------------------------------------
class G:
    """A tiny graph builder: NCHW float32 activations, random weights."""

    def __init__(self, c, h, w, layout="NCHW"):
        self.nodes, self.inits, self.k = [], [], 0
        shape = [1, c, h, w] if layout == "NCHW" else [1, h, w, c]
        self.inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        self.layout = layout

    def name(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def const(self, arr, dtype=np.float32):
        n = self.name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype), n))
        return n

    def op(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k=3, group=1, **attrs):
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.const(RNG.standard_normal((cout, cin // group, kh, kw)) * 0.3)
        b = self.const(RNG.standard_normal(cout) * 0.1)
        return self.op("Conv", [x, w, b], kernel_shape=[kh, kw], group=group, **attrs)

    def model(self, y):
        g = helper.make_graph(self.nodes, "hand", [self.inp], [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
                              initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m)
        onnx.checker.check_model(m)
        return m


def _run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _need(m, out_rows, layout="NCHW"):
    seg = tiles.Segment(m, layout)
    return seg.band(0, *out_rows).in_rows


def check_exact(m, heights, layout="NCHW", tol=1e-5):
    """Stitched bands == the untiled segment, and the output depends on the input."""
    seg = tiles.Segment(m, layout)
    shape = seg.shapes[seg.input]
    x = RNG.standard_normal(shape).astype(np.float32)
    want = _run(m, x)
    assert np.abs(want - _run(m, RNG.standard_normal(shape).astype(np.float32))).max() > 1e-3, "output ignores input"
    assert np.abs(want).max() > 1e-3
    parts = []
    for band in tiles.split(seg, heights):
        bm = tiles.band_model(seg, band)
        bm_in = [d.dim_value for d in bm.graph.input[0].type.tensor_type.shape.dim]
        assert bm_in[seg.h[seg.input]] == band.in_rows[1] - band.in_rows[0]
        parts.append(_run(bm, np.take(x, range(*band.in_rows), axis=seg.h[seg.input])))
    got = np.concatenate(parts, axis=seg.h[seg.output])
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    assert diff <= tol, f"max abs diff {diff}"
    return seg


# -- halo arithmetic, answers by hand --------------------------------------------------------
def test_conv_3x3_pad1_needs_one_row_each_side():
    g = G(2, 8, 5)
    m = g.model(g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1]))
    assert _need(m, (3, 6)) == (2, 7)
    assert _need(m, (0, 3)) == (0, 4)  # the top row's halo is the padding
    assert _need(m, (6, 8)) == (5, 8)


def test_stride2_asymmetric_pads():
    # TF 'same' with stride 2 on an even height: pad 0 on top, 1 at the bottom; out 4 rows
    g = G(2, 8, 6)
    m = g.model(g.conv("x", 2, 3, 3, strides=[2, 2], pads=[0, 0, 1, 1]))
    assert tiles.Segment(m, "NCHW").height(m.graph.output[0].name) == 4
    assert _need(m, (1, 3)) == (2, 7)  # rows 2o .. 2o+2
    assert _need(m, (3, 4)) == (6, 8)  # 6, 7 and the bottom pad


def test_dilation_and_odd_height():
    g = G(2, 9, 7)
    m = g.model(g.conv("x", 2, 2, 3, dilations=[2, 2], pads=[2, 2, 2, 2]))
    assert _need(m, (4, 6)) == (2, 8)  # o - 2 + {0, 2, 4}


@pytest.mark.parametrize("auto, want", [("SAME_UPPER", (0, 4)), ("SAME_LOWER", (0, 3))])
def test_auto_pad_resolved_against_the_full_height(auto, want):
    # k=4 on 7 rows: 3 rows of padding, SAME_UPPER puts 1 on top and 2 below, SAME_LOWER 2 and 1
    g = G(2, 7, 7)
    m = g.model(g.conv("x", 2, 2, 4, auto_pad=auto))
    assert _need(m, (0, 2)) == want
    check_exact(m, [3, 4])


def test_maxpool_ceil_mode_overhangs_the_bottom():
    g = G(3, 8, 8)
    m = g.model(g.op("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    seg = tiles.Segment(m, "NCHW")
    assert seg.height(seg.output) == 4
    assert _need(m, (3, 4)) == (6, 8)
    check_exact(m, [1, 3])
    check_exact(m, [2, 1, 1])


def test_pad_op_then_valid_conv():
    g = G(2, 5, 5)
    pads = g.const([0, 0, 2, 0, 0, 0, 1, 0], np.int64)  # 2 rows on top, 1 below: 8 rows
    p = g.op("Pad", ["x", pads])
    m = g.model(g.conv(p, 2, 2, 3))  # 6 rows out
    assert _need(m, (0, 2)) == (0, 2)  # padded rows 0..3 = 2 pad rows + input rows 0, 1
    assert _need(m, (4, 6)) == (2, 5)
    check_exact(m, [2, 2, 2])


def test_branches_take_the_union():
    # concat of a 3x3 and a 5x5 branch: the 5x5 one decides
    g = G(2, 8, 4)
    a = g.conv("x", 2, 2, 3, pads=[1, 1, 1, 1])
    b = g.conv("x", 2, 3, 5, pads=[2, 2, 2, 2])
    m = g.model(g.op("Concat", [a, b], axis=1))
    assert _need(m, (2, 4)) == (0, 6)
    # residual: two 3x3 convs added to the input
    g = G(2, 8, 4)
    c = g.conv(g.op("Relu", [g.conv("x", 2, 2, 3, pads=[1, 1, 1, 1])]), 2, 2, 3, pads=[1, 1, 1, 1])
    m = g.model(g.op("Add", ["x", c]))
    assert _need(m, (3, 5)) == (1, 7)


# -- exactness on hand-built graphs ----------------------------------------------------------
def _zoo_graph(h=23, w=13):
    """Stride, dilation, asymmetric pads, a dense concat, a residual add, pooling, BN, constants."""
    g = G(3, h, w)
    x = g.op("Mul", ["x", g.const(RNG.standard_normal((3, 1, 1)))])
    x = g.conv(x, 3, 8, 3, strides=[2, 2], pads=[0, 1, 1, 0])  # 12 rows
    x = g.op("Relu", [x])
    a = g.conv(x, 8, 8, 3, dilations=[2, 2], pads=[2, 2, 2, 2])
    a = g.op("BatchNormalization", [a] + [g.const(RNG.random(8) + 0.5) for _ in range(2)]
             + [g.const(RNG.standard_normal(8) * 0.1), g.const(RNG.random(8) + 0.5)])
    x = g.op("Add", [x, g.op("Sigmoid", [a])])
    b = g.conv(x, 8, 4, (5, 3), pads=[2, 1, 2, 1])
    x = g.op("Concat", [x, b], axis=1)  # 12 channels
    x = g.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 6 rows
    x = g.conv(x, 12, 12, 3, group=12, auto_pad="SAME_UPPER")
    x = g.op("Clip", [x, g.const(-1.0), g.const(1.5)])
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1])
    return g.model(x)


@pytest.mark.parametrize("heights", [[3, 3], [2, 2, 2], [1, 2, 2, 1], [1, 1, 4], [5, 1]])
def test_zoo_graph_stitches_exactly(heights):
    check_exact(_zoo_graph(), heights)


@pytest.mark.parametrize("h, heights", [(17, [5, 4]), (17, [3, 3, 3]), (18, [2, 3, 2, 2])])
def test_odd_sizes_and_unequal_bands(h, heights):
    g = G(2, h, 11)
    x = g.conv("x", 2, 4, 3, pads=[1, 1, 1, 1])
    x = g.op("Relu", [x])
    x = g.conv(x, 4, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1])  # ceil(h/2) rows
    m = g.model(g.op("LeakyRelu", [x], alpha=0.1))
    check_exact(m, heights)


def test_nhwc_input_through_transposes():
    # Keras-style: NHWC elementwise, Transpose to NCHW, conv, Transpose back
    g = G(3, 15, 9, layout="NHWC")
    x = g.op("Sub", ["x", g.const(RNG.standard_normal(3))])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.conv(x, 3, 5, 3, strides=[2, 2], pads=[0, 0, 1, 1])
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    m = g.model(g.op("Relu", [x]))
    seg = check_exact(m, [3, 1, 3], layout="NHWC")  # (15 + 1 - 3) // 2 + 1 = 7 rows
    assert seg.h[seg.input] == 1 and seg.h[seg.output] == 1


def test_band_pads_only_at_the_border():
    g = G(2, 9, 4)
    m = g.model(g.conv("x", 2, 2, 3, pads=[1, 1, 1, 1]))
    seg = tiles.Segment(m, "NCHW")
    top, mid, bottom = (tiles.band_model(seg, b) for b in tiles.split(seg, [3, 3, 3]))

    def pads(bm):
        conv = next(n for n in bm.graph.node if n.op_type == "Conv")
        return next(a.ints for a in conv.attribute if a.name == "pads")

    assert list(pads(top)) == [1, 1, 0, 1] and list(pads(mid)) == [0, 1, 0, 1] and list(pads(bottom)) == [0, 1, 1, 1]


def _upsample(h, mode, ctm, nearest="round_prefer_floor", sizes=False, s=2):
    g = G(2, h, 5)
    x = g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])
    if sizes:
        ins = [x, "", "", g.const([1, 3, h * s, 5], np.int64)]
    else:
        ins = [x, "", g.const([1, 1, s, 1])]
    up = g.op("Resize", ins, mode=mode, coordinate_transformation_mode=ctm, nearest_mode=nearest)
    return g.model(g.conv(up, 3, 2, 3, pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("mode, ctm, nearest, sizes", [
    ("nearest", "asymmetric", "floor", False), ("nearest", "half_pixel", "round_prefer_floor", True),
    ("nearest", "asymmetric", "round_prefer_ceil", False), ("linear", "half_pixel", "floor", False),
    ("linear", "asymmetric", "floor", True), ("nearest", "tf_half_pixel_for_nn", "floor", False)])
def test_resize_upsampling_stitches_exactly(mode, ctm, nearest, sizes):
    m = _upsample(7, mode, ctm, nearest, sizes)  # 14 rows out
    for heights in ([7, 7], [5, 4, 5], [3, 4, 4, 3], [1, 13]):
        check_exact(m, heights)


def test_resize_halo_by_hand():
    # nearest, asymmetric, floor, x2, then a 3x3 conv: out rows [5, 9) read upsampled rows [4, 10), input rows 2..4,
    # and the first conv one more each side
    m = _upsample(7, "nearest", "asymmetric", "floor")
    assert _need(m, (5, 9)) == (1, 6)


def test_resize_refusals():
    g = G(2, 6, 6)
    y = g.op("Resize", ["x", "", g.const([1, 1, 2, 2])], mode="nearest", coordinate_transformation_mode="align_corners")
    _refused(g.model(y), "align_corners")
    g = G(2, 6, 6)
    y = g.op("Resize", ["x", "", g.const([1, 1, 1.5, 1])], mode="nearest", coordinate_transformation_mode="asymmetric")
    _refused(g.model(y), "not by an integer factor")


# -- refusals --------------------------------------------------------------------------------
def _refused(m, needle):
    with pytest.raises(TlcutError) as e:
        tiles.Segment(m, "NCHW")
    msg = str(e.value)
    assert "\n" not in msg and needle in msg, msg
    return msg


def test_refuses_global_pooling_and_dense():
    g = G(2, 8, 8)
    x = g.conv("x", 2, 4, 3, pads=[1, 1, 1, 1])
    gap = g.op("GlobalAveragePool", [x])
    assert "pools over the whole map" in _refused(g.model(gap), gap)
    flat = g.op("Flatten", [gap])
    m = g.model(g.op("MatMul", [flat, g.const(RNG.standard_normal((4, 3)))]))
    _refused(m, gap)  # the first non-local node is named


@pytest.mark.parametrize("case", ["instancenorm", "concat_h", "const_varies", "unknown", "reshape"])
def test_refuses_what_is_not_local(case):
    g = G(2, 6, 6)
    if case == "instancenorm":
        y = g.op("InstanceNormalization", ["x", g.const(np.ones(2)), g.const(np.zeros(2))])
    elif case == "concat_h":
        y = g.op("Concat", ["x", "x"], axis=2)
    elif case == "const_varies":
        y = g.op("Mul", ["x", g.const(RNG.standard_normal((1, 6, 1)))])
    elif case == "unknown":
        y = g.op("LRN", ["x"], size=3)
    else:
        y = g.op("Reshape", ["x", g.const([1, 2, 36], np.int64)])
    _refused(g.model(y), y)


# -- band heights and the prediction ---------------------------------------------------------
def test_plan_bands_follows_speeds():
    assert tiles.plan_bands(56, [1, 1, 2]) == [14, 14, 28]
    assert sum(tiles.plan_bands(17, [1, 1, 1])) == 17
    assert tiles.plan_bands(3, [1, 1000]) == [1, 2]  # at least one row each
    assert tiles.plan_bands(7, [1]) == [7]
    for speeds in ([1, 2, 3], [0.3, 5, 1, 1], [1] * 5):
        hs = tiles.plan_bands(29, speeds)
        assert sum(hs) == 29 and min(hs) >= 1
    with pytest.raises(TlcutError):
        tiles.plan_bands(2, [1, 1, 1])
    with pytest.raises(TlcutError):
        tiles.plan_bands(8, [1, 0])


def test_predict_tiled_ms():
    bands = [{"index": 0, "out_rows": [0, 10], "work_fraction": 0.6, "in_bytes": 1000, "out_bytes": 0},
             {"index": 1, "out_rows": [10, 20], "work_fraction": 0.6, "in_bytes": 1000, "out_bytes": 0}]
    p = tiles.predict_tiled_ms(bands, [1, 2], segment_ms=100, bandwidth_bps=8e6, stitch_ms=1)
    assert p["bands"][0]["compute_ms"] == pytest.approx(60) and p["bands"][1]["compute_ms"] == pytest.approx(30)
    assert p["bands"][0]["transfer_ms"] == pytest.approx(1.0)
    assert p["slowest"] == 0 and p["total_ms"] == pytest.approx(62)
    q = tiles.predict_tiled_ms(bands, [1, 1], row_ms=5, band_ms=None)
    assert q["total_ms"] == pytest.approx(60)


# -- the command -----------------------------------------------------------------------------
def test_cli_writes_bands_and_manifest(tmp_path, capsys):
    src = tmp_path / "zoo.onnx"
    onnx.save(_zoo_graph(), src)
    b = tmp_path / "bundle"
    assert cli.main(["export", str(src), "-o", str(b), "--input-layout", "NCHW"]) == 0
    cuts = json.loads((b / "manifest.json").read_text())["cuts"]
    out = tmp_path / "tiles"
    last = str(len(cuts) - 1)
    assert cli.main(["tiles", str(b), "--from", "0", "--to", last, "--weights", "1,2", "-o", str(out)]) == 0
    t = read_tiles(out)
    assert t["format"] == "tlcut-tiles" and [r["out_rows"] for r in t["bands"]] == [[0, 2], [2, 6]]
    x = RNG.standard_normal(t["input"]["shape"]).astype(np.float32)
    m = onnx.load(str(b / "model.onnx"))
    want = _run(tiles.extract(m, t["input"]["name"], t["output"]["name"]), x)
    got = np.concatenate([_run(onnx.load(str(out / r["file"])), x[:, :, slice(*r["in_rows"])]) for r in t["bands"]], axis=2)
    assert np.abs(got - want).max() <= 1e-5
    capsys.readouterr()
    assert cli.main(["tiles", str(b), "--from", "0", "--to", last, "-o", str(out)]) == 2  # exists, no --force
    assert cli.main(["tiles", str(b), "--from", last, "--to", "0", "-o", str(tmp_path / "t2")]) == 2
    assert cli.main(["tiles", str(b), "--from", "0", "--to", last, "--bands", "3", "--weights", "1,1",
                     "-o", str(tmp_path / "t3")]) == 2
    err = capsys.readouterr().err
    assert err.count("tlcut: error:") == 3 and "Traceback" not in err


# -- real Keras models -----------------------------------------------------------------------
KERAS = [
    # (model, input, from layer (None: first cut), to layer)
    ("DenseNet169", (67, 67, 3), None, "pool2_bn"),  # stem, padded max-pool, dense block 1 (concats)
    ("DenseNet169", (67, 67, 3), "pool2_bn", "conv3_block4_concat"),  # transition (avg-pool s2), concats
    ("ResNet101", (75, 75, 3), None, "conv3_block1_out"),  # stem, bottlenecks, strided projection adds
    ("EfficientNetB0", (69, 69, 3), None, "block1a_activation"),  # NHWC scaling, transpose, swish, depthwise
    ("EfficientNetB0", (69, 69, 3), "block2a_expand_activation", "block2a_activation"),  # Pad + dw stride 2
]


def _cut(b, layer):
    return b.cuts[0] if layer is None else b.cut(layer)


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.parametrize("name, shape, a, z", KERAS)
def test_keras_segments_stitch_exactly(keras_bundles, name, shape, a, z):
    b = keras_bundles(name, shape)
    ca, cz = _cut(b, a), _cut(b, z)
    seg_model = tiles.extract(onnx.load(str(b.model_path)), ca.tensor, cz.tensor)
    seg = tiles.Segment(seg_model, ca.layout)
    out_h = seg.height(seg.output)
    for weights in ([1, 1], [1, 2, 3], [1, 1, 1, 1], [3, 1, 1]):
        if len(weights) <= out_h:
            check_exact(seg_model, tiles.plan_bands(out_h, weights), layout=ca.layout)


@pytest.mark.slow
@pytest.mark.tf
def test_keras_segment_with_squeeze_excite_is_refused(keras_bundles):
    b = keras_bundles("EfficientNetB0", (69, 69, 3))
    seg_model = tiles.extract(onnx.load(str(b.model_path)), b.cut("block2a_activation").tensor,
                              b.cut("block3a_expand_bn").tensor)
    with pytest.raises(TlcutError, match="GlobalAveragePool"):
        tiles.Segment(seg_model, "NCHW")


# -- serving: the bands on several nodes -----------------------------------------------------
@pytest.fixture(scope="module")
def tiled(small_bundle, tmp_path_factory):
    """A 16x16 residual graph's bundle and its input -> cut 1 segment in three bands (1:1:2)."""
    from tlcut.toolchain.tiles import write_tiles

    b = small_bundle(hw=16, tl="off")
    root = tmp_path_factory.mktemp("tiles")
    write_tiles(b, "input", "1", [1, 1, 2], root / "three")
    write_tiles(b, "input", "1", [1, 1], root / "two")
    write_tiles(b, "0", "1", [2, 1], root / "from0")
    return b, root


def _untiled(b, x):
    s = ort.InferenceSession(str(b.model_path))
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _x(seed, shape=(1, 3, 16, 16)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_bands_on_three_nodes_give_the_untiled_result(tiled):
    from tlcut.runtime import protocol as P
    from tlcut.runtime.client import EdgeClient, EdgeError
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge
    from tlcut.runtime.tiles import Tiles

    b, root = tiled
    w0, w2 = (Edge(b, ["input"], tiles=str(root / "three"), band=k) for k in (0, 2))
    with serving(w0) as e0, serving(w2) as e2:
        co = Edge(b, ["input"], tiles=Tiles(str(root / "three"), (e0, "local", e2), 5.0))
        assert "3 bands" in co.describe()
        with serving(co) as ec, EdgeClient(ec, 10) as c:
            ys = []
            for seed in (1, 2):
                x = _x(seed)
                y, _ = c.request(x, P.INPUT_CUT)
                assert np.abs(y - _untiled(b, x)).max() <= 1e-5
                ys.append(y)
            assert np.abs(ys[0] - ys[1]).max() > 1e-2  # the output moves with the input
            with pytest.raises(EdgeError) as e:  # a band is not what the coordinator serves
                c.request(_x(3)[:, :, :6], P.INPUT_CUT, P.band_flags(0))
            assert e.value.code == P.E_WRONG_CUT
        co.close()
        assert w0.stats["ok"] == 2 and w2.stats["ok"] == 2  # each node ran its band once per request
        band2_rows = _x(4)[:, :, slice(*read_tiles(root / "three")["bands"][2]["in_rows"])]
        with EdgeClient(e0, 10) as c0, pytest.raises(EdgeError) as e:  # band 2 sent to band 0's node
            c0.request(band2_rows, P.INPUT_CUT, P.band_flags(2))
        assert e.value.code == P.E_WRONG_CUT and "band 2 of the input" in e.value.message
    for w in (w0, w2):
        w.close()


def test_tiles_from_a_cut_all_local(tiled):
    from tlcut.runtime.client import EdgeClient
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge
    from tlcut.runtime.tiles import Tiles

    b, root = tiled
    s = ort.InferenceSession(str(b.path / b.find("head", 0).file))
    co = Edge(b, ["0"], tiles=Tiles(str(root / "from0"), ("local", "local")))
    with serving(co) as ec, EdgeClient(ec, 10) as c:
        x = _x(5)
        a = s.run(None, {s.get_inputs()[0].name: x})[0]
        y, _ = c.request(a, 0)
        assert np.abs(y - _untiled(b, x)).max() <= 1e-5 and np.abs(y).max() > 0
    co.close()


def test_a_silent_or_wrong_node_fails_the_request_with_its_cause_and_the_edge_serves_on(tiled):
    import socket
    import time

    from tlcut.runtime import protocol as P
    from tlcut.runtime.client import EdgeClient, EdgeError
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge
    from tlcut.runtime.tiles import Tiles

    b, root = tiled
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{sk.getsockname()[1]}"
    co = Edge(b, ["input"], tiles=Tiles(str(root / "three"), (dead, "local", "local"), 1.0))
    x = _x(6)
    with serving(co) as ec, EdgeClient(ec, 10) as c:
        t0 = time.monotonic()
        with pytest.raises(EdgeError) as e:
            c.request(x, P.INPUT_CUT)
        assert e.value.code == P.E_UPSTREAM and f"band 0's node ({dead})" in e.value.message
        assert time.monotonic() - t0 < 5
        wrong = Edge(b, ["input"], tiles=str(root / "two"), band=0)  # band 0 of another split: other rows
        with serving(wrong, dead):
            with pytest.raises(EdgeError) as e:
                c.request(x, P.INPUT_CUT)
            assert e.value.code == P.E_WRONG_TENSOR and "band 0's node" in e.value.message
        wrong.close()
        right = Edge(b, ["input"], tiles=str(root / "three"), band=0)
        with serving(right, dead):  # the node is back: served again, on a fresh socket
            y, _ = c.request(x, P.INPUT_CUT)
            assert np.abs(y - _untiled(b, x)).max() <= 1e-5
        right.close()
    co.close()


@pytest.mark.parametrize("args, needle", [
    (["--cut", "input", "--band", "0"], "--band belongs to --tiles"),
    (["--cut", "input", "--tiles", "{three}", "--band", "0", "--workers", "local"], "not both"),
    (["--cut", "input", "--tiles", "{three}", "--workers", "local,local"], "3 bands but 2 workers"),
    (["--cut", "0", "--tiles", "{three}", "--band", "0"], "the tiles start at cut input"),
    (["--cut", "input", "--tiles", "{three}", "--band", "5"], "bands 0..2"),
    (["--cut", "input", "--tiles", "{three}", "--workers", "tcp://10.0.0.9:5555,local,local"], "refusing plain TCP"),
    (["--cut", "input", "--tiles", "{three}", "--workers", "10.0.0.9,local,local"], "one endpoint per band"),
    (["--cut", "input", "--tiles", "{three}", "--tl", "on", "--band", "0"], "not the TL's"),
])
def test_serve_tiles_refuses_bad_flags_in_one_line(tiled, capsys, args, needle):
    b, root = tiled
    args = [a.format(three=root / "three") for a in args]
    assert cli.main(["serve", str(b.path), "--bind", "tcp://127.0.0.1:0", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("tlcut: error:") == 1 and needle in err and "Traceback" not in err
