"""Graph surgery: cut the model at one tensor, optionally inserting the Transfer Layer, or take
out the segment between tensors (``extract_segment``), all with onnx-graphsurgeon.

The head runs model input -> cut tensor (-> DeviceTL); the tail runs (EdgeTL ->) cut tensor ->
model output. Which TL a cut carries is the cut's ``tl_kind`` (tlcut/transfer/: the kinds build
their own nodes); a learned kind needs its trained ``weights``, which the bundle holds.

The paper's ``pool`` keeps its own path here: DeviceTL is a 2x2, stride-2 max-pool; EdgeTL a 2x
nearest-neighbour upsample. For an odd size the pool pads the last row/column (ONNX max-pool
padding never wins the max), giving ceil(n/2), and the tail crops the upsampled map back to n, so
the tail sees exactly the original shape: the same as Keras' MaxPool2D(2, padding="same") +
UpSampling2D(2) + Cropping2D, which the retraining step builds. Pooling runs on NCHW (ONNX
MaxPool's only layout), so an NHWC cut is transposed around it; the wire tensor keeps the cut
tensor's layout. Learned kinds run their nodes on NCHW likewise, then crop an odd size back.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from tlcut import transfer
from tlcut.bundle import Cut
from tlcut.errors import TlcutError

#: Names of the tensors that cross the link, so both halves and the wire agree on them.
PAYLOAD_TL = transfer.PAYLOAD


def _load(model) -> gs.Graph:
    return gs.import_onnx(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))


def _export(graph: gs.Graph) -> onnx.ModelProto:
    graph.cleanup(remove_unused_graph_inputs=True).toposort()
    m = gs.export_onnx(graph)
    onnx.checker.check_model(m)
    return m


def payload_name(cut: Cut, tl: bool) -> str:
    return PAYLOAD_TL if tl else cut.tensor


def _spatial_axes(cut: Cut) -> tuple[int, int]:
    return (2, 3) if cut.layout == "NCHW" else (1, 2)


def head(model, cut: Cut, tl: bool = False, weights: dict | None = None) -> onnx.ModelProto:
    """Model input -> cut tensor, ending with DeviceTL when ``tl`` (a learned one with ``weights``)."""
    g = _load(model)
    t = _tensor(g, cut)
    if tl:
        _require_tl(cut)
        t = _append_device_tl(g, t, cut, weights)
    g.outputs = [t]
    return _export(g)


def tail(model, cut: Cut, tl: bool = False, weights: dict | None = None) -> onnx.ModelProto:
    """(EdgeTL ->) cut tensor -> model outputs. The input has the static shape of what crosses."""
    g = _load(model)
    t = _tensor(g, cut)
    t.inputs.clear()  # a tensor that becomes a graph input must lose its producer, or cleanup keeps the head
    if not tl:
        g.inputs = [t]
        return _export(g)
    _require_tl(cut)
    g.inputs = [_prepend_edge_tl(g, t, cut, weights)]
    return _export(g)


def middle(model, start: Cut, start_tl: bool, end: Cut, end_tl: bool, start_weights: dict | None = None,
           end_weights: dict | None = None) -> onnx.ModelProto:
    """(EdgeTL ->) start cut tensor -> end cut tensor (-> DeviceTL): what the middle tier runs."""
    if end.node_index <= start.node_index:
        raise TlcutError(f"a middle part runs from one cut to a later one; cut {end.index} is not after cut {start.index}")
    g = _load(model)
    t_end = _tensor(g, end)
    if end_tl:
        _require_tl(end)
        t_end = _append_device_tl(g, t_end, end, end_weights)
        t_end.name = PAYLOAD_TL + "_next"  # the EdgeTL's input below holds the plain name
    g.outputs = [t_end]
    t = _tensor(g, start)
    t.inputs.clear()
    if start_tl:
        _require_tl(start)
        g.inputs = [_prepend_edge_tl(g, t, start, start_weights)]
    else:
        g.inputs = [t]
    return _export(g)


def extract_segment(model, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The subgraph that computes tensors ``outputs`` from tensors ``inputs``: the graph's inputs
    and outputs reassigned, then cleanup and toposort. ``model`` is a ModelProto, a path or an
    onnx-graphsurgeon graph (changed in place)."""
    g = model if isinstance(model, gs.Graph) else _load(model)
    tensors = g.tensors()
    for name in [*inputs, *outputs]:
        if name not in tensors:
            raise TlcutError(f"tensor '{name}' is not in the model; the bundle is stale, re-export it")
    ins = [tensors[name] for name in inputs]
    for t in ins:
        t.inputs.clear()  # a new graph input must lose its producer, or cleanup keeps all that is upstream of it
    g.inputs, g.outputs = ins, [tensors[name] for name in outputs]
    return _export(g)


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the nodes and initializers its outputs do not need, checked."""
    return _export(_load(model))


def logits(model) -> onnx.ModelProto:
    """The model (or a tail) with the input of its final Softmax as its output, unchanged if it has
    none. Random-weight classifiers give near-uniform softmax outputs, where a wrong half hides;
    comparisons of engines, precisions and halves are made on logits."""
    g = _load(model)
    soft = [n for n in g.nodes if n.op == "Softmax" and n.outputs[0] in g.outputs]
    if not soft:
        return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    g.outputs = [soft[0].inputs[0].to_variable(dtype=np.float32)]
    return _export(g)


def device_tl(cut: Cut, weights: dict | None = None) -> onnx.ModelProto:
    """The DeviceTL alone, cut tensor -> payload: what bench times for the device's TL cost. A
    learned kind without ``weights`` gets zeros of their shapes: the time does not depend on them."""
    _require_tl(cut)
    g = gs.Graph(opset=_OPSET)
    x = gs.Variable(cut.tensor, dtype=np.dtype(cut.dtype), shape=list(cut.shape))
    g.inputs = [x]
    g.outputs = [_append_device_tl(g, x, cut, weights or _timing_weights(cut))]
    return _export(g)


def edge_tl(cut: Cut, weights: dict | None = None) -> onnx.ModelProto:
    """The EdgeTL alone, payload -> cut tensor: what bench times for the edge's TL cost (zero
    weights for a learned kind without ``weights``, as ``device_tl``)."""
    _require_tl(cut)
    g = gs.Graph(opset=_OPSET)
    y = gs.Variable(cut.tensor, dtype=np.dtype(cut.dtype), shape=list(cut.shape))
    g.inputs = [_prepend_edge_tl(g, y, cut, weights or _timing_weights(cut))]
    g.outputs = [y]
    return _export(g)


def _timing_weights(cut: Cut) -> dict | None:
    kind = transfer.parse(cut.tl_kind)
    if not kind.has_weights:
        return None
    _, c, h, w = _nchw(cut)
    shapes = kind.init_weights(np.zeros((1, min(h, 4), min(w, 4), c), np.float32))
    return {k: np.zeros_like(v) for k, v in shapes.items()}


_OPSET = 17


def _nchw(cut: Cut) -> list[int]:
    s = list(cut.shape)
    return s if cut.layout == "NCHW" else [s[0], s[3], s[1], s[2]]


def _learned(cut: Cut, weights):
    kind = transfer.parse(cut.tl_kind)
    return kind, kind.check_weights(weights, cut.shape, cut.layout)


def _append_device_tl(g: gs.Graph, x: gs.Variable, cut: Cut, weights=None) -> gs.Variable:
    if cut.tl_kind != transfer.DEFAULT:
        kind, w = _learned(cut, weights)
        if cut.layout == "NHWC":
            x = g.layer(op="Transpose", inputs=[x], outputs=["tlcut_device_tl_nchw"], attrs={"perm": [0, 3, 1, 2]})[0]
        y = kind.onnx_device(g, x, _nchw(cut), w)
        if cut.layout == "NHWC":
            y = g.layer(op="Transpose", inputs=[y], outputs=["tlcut_device_tl_nhwc"], attrs={"perm": [0, 2, 3, 1]})[0]
        y.name, y.dtype, y.shape = PAYLOAD_TL, np.dtype(cut.dtype), list(cut.tl_shape)
        return y
    h_ax, w_ax = _spatial_axes(cut)
    pads = [0, 0, cut.shape[h_ax] % 2, cut.shape[w_ax] % 2]
    if cut.layout == "NHWC":
        x = g.layer(op="Transpose", inputs=[x], outputs=["tlcut_device_tl_nchw"], attrs={"perm": [0, 3, 1, 2]})[0]
    pooled = g.layer(op="MaxPool", name="tlcut_device_tl", inputs=[x], outputs=["tlcut_device_tl_pool"],
                     attrs={"kernel_shape": [2, 2], "strides": [2, 2], "pads": pads})[0]
    if cut.layout == "NHWC":
        pooled = g.layer(op="Transpose", inputs=[pooled], outputs=["tlcut_device_tl_nhwc"], attrs={"perm": [0, 2, 3, 1]})[0]
    pooled.name = PAYLOAD_TL
    pooled.dtype = np.dtype(cut.dtype)
    pooled.shape = list(cut.tl_shape)
    return pooled


def _prepend_learned_edge_tl(g: gs.Graph, t: gs.Variable, cut: Cut, weights) -> gs.Variable:
    """Nodes payload -> ``t`` for a learned kind: its NCHW nodes, the crop of an odd size, the layout."""
    kind, w = _learned(cut, weights)
    payload = gs.Variable(PAYLOAD_TL, dtype=np.dtype(cut.dtype), shape=list(cut.tl_shape))
    p = payload
    if cut.layout == "NHWC":
        p = g.layer(op="Transpose", inputs=[p], outputs=["tlcut_edge_tl_nchw"], attrs={"perm": [0, 3, 1, 2]})[0]
    shape = _nchw(cut)
    y = kind.onnx_edge(g, p, shape, w)
    if kind.halves and (shape[2] % 2 or shape[3] % 2):
        y = g.layer(op="Slice", name="tlcut_edge_tl_crop", outputs=["tlcut_edge_tl_cropped"],
                    inputs=[y, np.zeros(2, np.int64), np.array(shape[2:], np.int64), np.array([2, 3], np.int64)])[0]
    if cut.layout == "NHWC":
        g.layer(op="Transpose", inputs=[y], outputs=[t], attrs={"perm": [0, 2, 3, 1]})
    else:
        producer = y.inputs[0]
        producer.outputs.clear()
        producer.outputs.append(t)
    return payload


def _prepend_edge_tl(g: gs.Graph, t: gs.Variable, cut: Cut, weights=None) -> gs.Variable:
    """Nodes payload -> ``t`` (upsample, then crop an odd size back); return the payload input."""
    if cut.tl_kind != transfer.DEFAULT:
        return _prepend_learned_edge_tl(g, t, cut, weights)
    h_ax, w_ax = _spatial_axes(cut)
    payload = gs.Variable(PAYLOAD_TL, dtype=np.dtype(cut.dtype), shape=list(cut.tl_shape))
    scales = np.ones(4, dtype=np.float32)
    scales[[h_ax, w_ax]] = 2.0
    up_shape = list(cut.tl_shape)
    up_shape[h_ax] *= 2
    up_shape[w_ax] *= 2
    crop = up_shape != list(cut.shape)
    up = gs.Variable("tlcut_edge_tl_up", dtype=np.dtype(cut.dtype), shape=up_shape) if crop else t
    # Resize's roi input is optional from opset 13; before that it must be given (and is unused)
    roi = gs.Variable.empty() if (g.opset or _OPSET) >= 13 else gs.Constant("tlcut_edge_tl_roi", np.zeros(0, np.float32))
    g.nodes.append(gs.Node(
        op="Resize", name="tlcut_edge_tl",
        inputs=[payload, roi, gs.Constant("tlcut_edge_tl_scales", scales)], outputs=[up],
        attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    ))
    if crop:
        axes = [h_ax, w_ax]
        g.nodes.append(gs.Node(
            op="Slice", name="tlcut_edge_tl_crop",
            inputs=[up, gs.Constant("tlcut_crop_starts", np.zeros(2, np.int64)),
                    gs.Constant("tlcut_crop_ends", np.array([cut.shape[a] for a in axes], np.int64)),
                    gs.Constant("tlcut_crop_axes", np.array(axes, np.int64))],
            outputs=[t],
        ))
    return payload


def _tensor(g: gs.Graph, cut: Cut) -> gs.Variable:
    t = g.tensors().get(cut.tensor)
    if t is None:
        raise TlcutError(f"cut tensor '{cut.tensor}' is not in the model; the bundle is stale, re-export it")
    return t


def _require_tl(cut: Cut) -> None:
    if not cut.tl:
        raise TlcutError(f"the TL cannot apply at cut {cut.index} ({cut.why_no_tl}); use --tl off for this cut")


#: The symbolic batch dimension of a tail compiled with ``--batch dynamic``.
BATCH_DIM = "batch"


def with_batch(model: onnx.ModelProto, batch) -> onnx.ModelProto:
    """A copy of a batch-1 half whose leading (batch) dimension is ``batch``: an int, or
    ``"dynamic"`` for a symbolic one. Every inner shape is dropped (ORT re-infers them); a Reshape
    whose constant target starts with the baked batch 1 gets 0 there (copy the input's batch).
    Whether the result really batches is checked by ``check_batched``, not assumed."""
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            if batch == "dynamic":
                dims[0].dim_param = BATCH_DIM
            else:
                dims[0].dim_value = int(batch)
    del g.value_info[:]
    consts = {i.name: i for i in g.initializer}
    consts.update({n.output[0]: a.t for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    for n in g.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in consts:
            t = consts[n.input[1]]
            target = numpy_helper.to_array(t).copy()
            if target.ndim == 1 and target.size and target[0] == 1 and not any(a.name == "allowzero" and a.i for a in n.attribute):
                target[0] = 0
                t.CopyFrom(numpy_helper.from_array(target, t.name))
    return m


def check_batched(half: onnx.ModelProto, batched: onnx.ModelProto, batch, what: str) -> None:
    """Run ``batched`` on a stack of distinct random inputs and compare each row with ``half`` run
    alone: a graph with batch 1 baked in somewhere fails here, at compile time, with one line."""
    import onnxruntime as ort

    from tlcut.dtypes import from_ort

    def session(m):
        so = ort.SessionOptions()
        so.log_severity_level = 4  # a graph that fails here is reported in one line below
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    one = session(half)
    inp = one.get_inputs()[0]
    n = 3 if batch == "dynamic" else int(batch)
    rng = np.random.default_rng(0)
    dt = from_ort(inp.type)
    xs = [(rng.standard_normal(inp.shape) * 2).astype(dt) for _ in range(n)]
    try:
        got = session(batched).run(None, {inp.name: np.concatenate(xs)})[0]
    except Exception as e:
        raise TlcutError(f"{what} does not run at batch {batch}: {str(e).splitlines()[0][:200]}") from None
    want = np.concatenate([one.run(None, {inp.name: x})[0] for x in xs])
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max()))):
        raise TlcutError(f"{what} gives other results at batch {batch} than one at a time (batch 1 is baked into "
                         f"the graph); serve it with --max-batch 1")
