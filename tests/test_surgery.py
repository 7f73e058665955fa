"""Graph surgery on hand-built graphs: the halves compose to the model; the TL does exactly
max-pool 2x2/2 (padded) then nearest 2x upsample cropped back to the original size."""

import numpy as np
import onnxruntime as ort
import pytest

from tlcut.models import graphs
from tlcut.errors import TlcutError
from tlcut.toolchain import surgery
from tlcut.toolchain.annotate import annotate, infer_shapes
from tlcut.toolchain.cuts import enumerate_cuts


def _sess(m):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(m, feed):
    return _sess(m).run(None, feed)[0]


def _model_and_cuts(build, **kw):
    m = infer_shapes(build(**kw))
    return m, enumerate_cuts(m, annotate(m, None, None))


def numpy_tl(x, layout):
    """Reference DeviceTL + EdgeTL in numpy: what the surgery must compute."""
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + h % 2, w + w % 2), -np.inf, dtype=x.dtype)
    xp[:, :, :h, :w] = x
    pooled = xp.reshape(n, c, xp.shape[2] // 2, 2, xp.shape[3] // 2, 2).max(axis=(3, 5))
    up = pooled.repeat(2, axis=2).repeat(2, axis=3)[:, :, :h, :w]
    if layout == "NHWC":
        pooled, up = pooled.transpose(0, 2, 3, 1), up.transpose(0, 2, 3, 1)
    return pooled, up


@pytest.mark.parametrize("build, kw", [
    (graphs.chain, {"hw": 7}), (graphs.residual, {"hw": 9}), (graphs.branches, {"hw": 8}),
    (graphs.long_skip, {"hw": 6}), (graphs.nhwc_classifier, {"h": 7, "w": 5}),
])
def test_head_then_tail_is_the_model(build, kw):
    m, cuts = _model_and_cuts(build, **kw)
    x = np.random.default_rng(0).standard_normal(tuple(d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim)).astype(np.float32)
    name = m.graph.input[0].name
    ref = _run(m, {name: x})
    for c in cuts:
        mid = _run(surgery.head(m, c), {name: x})
        assert mid.shape == c.shape
        y = _run(surgery.tail(m, c), {c.tensor: mid})
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("build, kw", [(graphs.residual, {"hw": 9}), (graphs.branches, {"hw": 8})])
def test_a_segment_between_two_cuts_maps_one_cut_tensor_to_the_next(build, kw):
    m, cuts = _model_and_cuts(build, **kw)
    assert len(cuts) >= 2
    name = m.graph.input[0].name
    x = np.random.default_rng(2).standard_normal(tuple(d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim)).astype(np.float32)
    for a, b in zip(cuts, cuts[1:]):
        seg = surgery.extract_segment(m, [a.tensor], [b.tensor])
        assert [i.name for i in seg.graph.input] == [a.tensor] and [o.name for o in seg.graph.output] == [b.tensor]
        assert len(seg.graph.node) < len(m.graph.node), "the nodes before the first cut are gone"
        want = _run(surgery.head(m, b), {name: x})
        np.testing.assert_array_equal(_run(seg, {a.tensor: _run(surgery.head(m, a), {name: x})}), want)
    with pytest.raises(TlcutError, match="'nope' is not in the model"):
        surgery.extract_segment(m, ["nope"], [cuts[-1].tensor])


@pytest.mark.parametrize("build, kw", [
    (graphs.chain, {"hw": 7}), (graphs.residual, {"hw": 10}), (graphs.nhwc_classifier, {"h": 7, "w": 5}),
])
def test_tl_halves_match_the_numpy_reference(build, kw):
    m, cuts = _model_and_cuts(build, **kw)
    name = m.graph.input[0].name
    x = np.random.default_rng(1).standard_normal(tuple(d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim)).astype(np.float32)
    tl_cuts = [c for c in cuts if c.tl]
    assert tl_cuts
    for c in tl_cuts:
        feature = _run(surgery.head(m, c), {name: x})
        payload = _run(surgery.head(m, c, tl=True), {name: x})
        want_payload, want_up = numpy_tl(feature, c.layout)
        assert payload.shape == c.tl_shape
        np.testing.assert_array_equal(payload, want_payload)
        assert payload.nbytes == c.tl_bytes
        assert payload.nbytes * 4 >= feature.nbytes  # a quarter, rounded up for odd sizes
        # the tail with EdgeTL equals the plain tail fed the reference upsampled map
        y_tl = _run(surgery.tail(m, c, tl=True), {surgery.PAYLOAD_TL: payload})
        y_ref = _run(surgery.tail(m, c), {c.tensor: want_up})
        np.testing.assert_allclose(y_tl, y_ref, atol=1e-6, rtol=0)
        # and the standalone TL models agree with the halves
        p2 = _run(surgery.device_tl(c), {c.tensor: feature})
        np.testing.assert_array_equal(p2, payload)
        np.testing.assert_array_equal(_run(surgery.edge_tl(c), {surgery.PAYLOAD_TL: payload}), want_up)


def test_odd_sizes_come_back_to_the_original_shape():
    """The ScissionLite bug: 7x7 -> 3x3 -> 6x6. Here 7x7 -> 4x4 -> 7x7."""
    m, cuts = _model_and_cuts(graphs.chain, hw=7)
    c = cuts[0]
    assert c.tl_shape == (1, 4, 4, 4)
    up = _run(surgery.edge_tl(c), {surgery.PAYLOAD_TL: np.ones(c.tl_shape, np.float32)})
    assert up.shape == (1, 4, 7, 7)


def test_halves_have_static_input_shapes_and_no_dead_nodes():
    m, cuts = _model_and_cuts(graphs.branches)
    c = next(c for c in cuts if c.tensor == "cat")
    for half in (surgery.head(m, c), surgery.tail(m, c), surgery.head(m, c, True), surgery.tail(m, c, True)):
        for inp in half.graph.input:
            dims = inp.type.tensor_type.shape.dim
            assert dims and all(d.HasField("dim_value") for d in dims)
    tail = surgery.tail(m, c)
    assert [n.name for n in tail.graph.node] == ["head"]
    head = surgery.head(m, c)
    assert "head" not in [n.name for n in head.graph.node]


def test_tl_refused_where_it_cannot_apply():
    from tlcut.errors import TlcutError

    m, cuts = _model_and_cuts(graphs.nhwc_classifier)
    c = next(c for c in cuts if not c.tl)
    with pytest.raises(TlcutError, match="TL cannot apply"):
        surgery.head(m, c, tl=True)
