"""Graph surgery: cut the model at one tensor, optionally inserting the Transfer Layer.

The head runs model input -> cut tensor (-> DeviceTL); the tail runs (EdgeTL ->) cut tensor ->
model output. DeviceTL is a 2x2, stride-2 max-pool; EdgeTL a 2x nearest-neighbour upsample. For an
odd size the pool pads the last row/column (ONNX max-pool padding never wins the max), giving
ceil(n/2), and the tail crops the upsampled map back to n, so the tail sees exactly the original
shape: the same as Keras' MaxPool2D(2, padding="same") + UpSampling2D(2) + Cropping2D, which the
retraining step builds. Pooling runs on NCHW (ONNX MaxPool's only layout), so an NHWC cut is
transposed around it; the wire tensor keeps the cut tensor's layout.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from tlcut.bundle import Cut
from tlcut.errors import TlcutError

#: Names of the tensors that cross the link, so both halves and the wire agree on them.
PAYLOAD_TL = "tlcut_payload_tl"


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


def head(model, cut: Cut, tl: bool = False) -> onnx.ModelProto:
    """Model input -> cut tensor, ending with DeviceTL when ``tl``."""
    g = _load(model)
    t = _tensor(g, cut)
    if tl:
        _require_tl(cut)
        t = _append_device_tl(g, t, cut)
    g.outputs = [t]
    return _export(g)


def tail(model, cut: Cut, tl: bool = False) -> onnx.ModelProto:
    """(EdgeTL ->) cut tensor -> model outputs. The input has the static shape of what crosses."""
    g = _load(model)
    t = _tensor(g, cut)
    t.inputs.clear()  # a tensor that becomes a graph input must lose its producer, or cleanup keeps the head
    if not tl:
        g.inputs = [t]
        return _export(g)
    _require_tl(cut)
    g.inputs = [_prepend_edge_tl(g, t, cut)]
    return _export(g)


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


def device_tl(cut: Cut) -> onnx.ModelProto:
    """The DeviceTL alone, cut tensor -> payload: what bench times for the device's TL cost."""
    _require_tl(cut)
    g = gs.Graph(opset=_OPSET)
    x = gs.Variable(cut.tensor, dtype=np.dtype(cut.dtype), shape=list(cut.shape))
    g.inputs = [x]
    g.outputs = [_append_device_tl(g, x, cut)]
    return _export(g)


def edge_tl(cut: Cut) -> onnx.ModelProto:
    """The EdgeTL alone, payload -> cut tensor: what bench times for the edge's TL cost."""
    _require_tl(cut)
    g = gs.Graph(opset=_OPSET)
    y = gs.Variable(cut.tensor, dtype=np.dtype(cut.dtype), shape=list(cut.shape))
    g.inputs = [_prepend_edge_tl(g, y, cut)]
    g.outputs = [y]
    return _export(g)


_OPSET = 17


def _append_device_tl(g: gs.Graph, x: gs.Variable, cut: Cut) -> gs.Variable:
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


def _prepend_edge_tl(g: gs.Graph, t: gs.Variable, cut: Cut) -> gs.Variable:
    """Nodes payload -> ``t`` (upsample, then crop an odd size back); return the payload input."""
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
