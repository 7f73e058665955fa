"""Cut enumeration on small graphs whose cuts are known by construction."""

import onnx
import pytest

from tlcut.models import graphs
from tlcut.toolchain.annotate import annotate, infer_shapes
from tlcut.toolchain.cuts import enumerate_cuts, tl_shape


def cuts_of(model, layout=None):
    m = infer_shapes(model)
    return enumerate_cuts(m, annotate(m, layout, None))


@pytest.mark.parametrize("build, expected", [
    (graphs.chain, ["a", "b", "c"]),
    (graphs.residual, ["a", "s"]),
    (graphs.branches, ["t", "cat"]),
    (graphs.long_skip, ["a"]),
    (graphs.nhwc_classifier, ["x_nchw", "f", "f_nhwc", "r", "m"]),
])
def test_cut_tensors_are_exactly_the_single_live_points(build, expected):
    assert [c.tensor for c in cuts_of(build())] == expected


def test_cuts_do_not_depend_on_the_topological_order():
    m = graphs.branches()
    # the same graph with the three branches listed in another valid order
    nodes = list(m.graph.node)
    reordered = [nodes[0], nodes[4], nodes[2], nodes[3], nodes[1], nodes[5], nodes[6]]
    del m.graph.node[:]
    m.graph.node.extend(reordered)
    onnx.checker.check_model(m)
    assert [c.tensor for c in cuts_of(m)] == ["t", "cat"]


def test_cut_indices_node_positions_and_bytes():
    cuts = cuts_of(graphs.residual(hw=9, c=4))
    assert [c.index for c in cuts] == [0, 1]
    assert [c.node_index for c in cuts] == [0, 3]
    assert cuts[0].shape == (1, 4, 9, 9) and cuts[0].bytes == 4 * 4 * 9 * 9
    # odd 9x9 pools to 5x5: a quarter, rounded up
    assert cuts[0].tl and cuts[0].tl_shape == (1, 4, 5, 5) and cuts[0].tl_bytes == 4 * 4 * 5 * 5


def test_layouts_follow_transposes_and_the_tl_uses_the_right_axes():
    by = {c.tensor: c for c in cuts_of(graphs.nhwc_classifier(h=7, w=5, c=3))}
    assert by["f"].layout == "NCHW" and by["f"].tl_shape == (1, 3, 4, 3)
    assert by["f_nhwc"].layout == "NHWC" and by["f_nhwc"].tl_shape == (1, 4, 3, 3)
    assert by["r"].layout == "NHWC"
    assert not by["m"].tl and "2-D" in by["m"].why_no_tl


def test_input_layout_given_for_an_onnx_source():
    by = {c.tensor: c for c in cuts_of(graphs.nhwc_classifier(), layout="NHWC")}
    assert by["x_nchw"].layout == "NCHW"


@pytest.mark.parametrize("shape, layout, dtype, expect, why", [
    ((1, 8, 1, 1), "NCHW", "float32", None, "1x1"),
    ((1, 8, 1, 6), "NCHW", "float32", None, "1x6"),
    ((1, 6, 6, 8), None, "float32", None, "layout unknown"),
    ((1, 8), None, "float32", None, "2-D"),
    ((1, 8, 4, 4), "NCHW", "int64", None, "int64"),
    ((1, 7, 7, 8), "NHWC", "float32", (1, 4, 4, 8), None),
    ((2, 3, 2, 3), "NCHW", "float16", (2, 3, 1, 2), None),
])
def test_where_the_tl_applies(shape, layout, dtype, expect, why):
    got, reason = tl_shape(shape, layout, dtype)
    assert got == expect
    if why:
        assert why in reason


def test_export_of_an_onnx_file_writes_a_complete_bundle(small_bundle):
    b = small_bundle(tl=None)
    assert [c.tensor for c in b.cuts] == ["a", "s"]
    assert b.manifest["source"]["kind"] == "onnx-file"
    assert b.inputs[0]["shape"] == [1, 3, 9, 9]
    assert set(b.manifest["tensors"]) == {"x", "a", "b", "r", "s", "y"}
    assert b.cut("s").index == 1 and b.cut("1").tensor == "s"
