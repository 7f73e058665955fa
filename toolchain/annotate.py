"""Annotation: a static shape, a dtype, a layout and the Keras layer for every activation tensor.

Every later step needs them: cuts are reported per layer, the TL must pool the right axes, and
runtimes need static input shapes.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from tlcut import dtypes
from tlcut.errors import TlcutError
from tlcut.toolchain.weights import has_external_weights

# ONNX ops whose 4-D data input and output are NCHW by the operator's definition.
_NCHW_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "GlobalAveragePool", "GlobalMaxPool", "DepthToSpace",
    "SpaceToDepth", "MaxUnpool", "QLinearConv", "ConvInteger",
}
# Ops that keep the layout of their (4-D) data input: elementwise, concat along an axis, pads.
_SAME_LAYOUT_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow",
    "Sqrt", "Exp", "Log", "Abs", "Neg", "Erf", "Gelu", "Mish", "Identity", "Dropout", "Cast",
    "Concat", "Pad", "Where", "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Equal", "Less",
    "Greater", "Not", "And", "Or", "QuantizeLinear", "DequantizeLinear", "Swish",
}



def _np_dtype(elem_type: int) -> str:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _static_shape(t) -> tuple | None:
    if not t.type.HasField("tensor_type") or not t.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in t.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def fix_batch(model: onnx.ModelProto, batch: int) -> None:
    """Give every graph input a static batch size so that every intermediate shape can be static."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if not d.HasField("dim_value"):
                if k == 0:
                    d.Clear()
                    d.dim_value = batch
                else:
                    raise TlcutError(
                        f"model input '{inp.name}' has a dynamic dimension {k} ({d.dim_param or '?'}); "
                        "export it with a fixed input shape"
                    )


def infer_shapes(model: onnx.ModelProto, folder: Path | None = None) -> onnx.ModelProto:
    """Static shapes for every tensor: ONNX shape inference, then one ORT run for what it misses.

    A model whose weights are external data (``place_weights``) needs ``folder``, the folder of
    its weights file: the probe run is written there and loaded from disk, never serialised whole.
    """
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    known = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output) if _static_shape(vi)}
    known |= {i.name for i in inferred.graph.input}
    missing = [o for n in inferred.graph.node for o in n.output if o and o not in known]
    if not missing:
        return inferred
    import onnxruntime as ort

    have = {o.name for o in inferred.graph.output}
    added = [name for name in missing if name not in have]
    for name in added:
        inferred.graph.output.append(helper.ValueInfoProto(name=name))
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if has_external_weights(inferred):
            if folder is None:
                raise ValueError("infer_shapes: a model with external weights needs the folder of its weights")
            fd, probe = tempfile.mkstemp(prefix="probe.", suffix=".onnx", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(inferred.SerializeToString())
                sess = ort.InferenceSession(probe, so, providers=["CPUExecutionProvider"])
            finally:
                os.unlink(probe)
        else:
            sess = ort.InferenceSession(inferred.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros(i.shape, dtype=dtypes.from_ort(i.type)) for i in sess.get_inputs()}
        values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        del sess
    finally:
        del inferred.graph.output[len(inferred.graph.output) - len(added):]
    vis = {vi.name: vi for vi in inferred.graph.value_info}
    for name in missing:
        v = np.asarray(values[name])
        elem = helper.np_dtype_to_tensor_dtype(v.dtype)
        new = helper.make_tensor_value_info(name, elem, list(v.shape))
        if name in vis:
            vis[name].CopyFrom(new)
        else:
            inferred.graph.value_info.append(new)
    return inferred


def activation_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that depend on a graph input; the rest are weights or constants and are never cut."""
    inits = {i.name for i in graph.initializer}
    live = {i.name for i in graph.input if i.name not in inits}
    for node in graph.node:
        if any(i in live for i in node.input if i):
            live.update(o for o in node.output if o)
    return live


def propagate_layouts(graph: onnx.GraphProto, input_layouts: dict[str, str | None],
                      shapes: dict[str, tuple]) -> dict[str, str | None]:
    """Follow the layout of every 4-D tensor from the inputs through transposes and NCHW-only ops."""
    layout: dict[str, str | None] = dict(input_layouts)
    consts = {i.name for i in graph.initializer}  # names only: decoding every weight would copy the model
    for node in graph.node:
        outs = [o for o in node.output if o]
        data_in = [i for i in node.input if i and len(shapes.get(i, ())) == 4 and i not in consts]
        known = [layout.get(i) for i in data_in if layout.get(i)]
        result = None
        if node.op_type == "Transpose" and data_in and layout.get(node.input[0]):
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
            src = layout[node.input[0]]
            result = "".join(src[p] for p in perm) if len(perm) == 4 else None
        elif node.op_type in _NCHW_OPS:
            result = "NCHW"
        elif node.op_type in _SAME_LAYOUT_OPS and known and all(k == known[0] for k in known):
            result = known[0]
        elif node.op_type == "Resize" and known:
            result = known[0]
        for o in outs:
            if len(shapes.get(o, ())) == 4:
                layout[o] = result
    return layout


_SUFFIX = re.compile(r"_\d+$")


def keras_layer_of(node_name: str, layer_names: set[str]) -> str | None:
    """tf2onnx names nodes `model/layer_scope/op`; Keras 3 appends `_<n>` to each scope."""
    parts = node_name.split("/")
    for part in parts[1:] + parts[:1]:
        stripped = _SUFFIX.sub("", part)
        for cand in (stripped, part):
            if cand in layer_names:
                return cand
    return None


def annotate(model: onnx.ModelProto, input_layout: str | None, layer_names: set[str] | None):
    """Per-tensor facts the later steps need, for every activation tensor of the model."""
    g = model.graph
    vinfo = {vi.name: vi for vi in list(g.value_info) + list(g.output) + list(g.input)}
    shapes, types = {}, {}
    for name, vi in vinfo.items():
        s = _static_shape(vi)
        if s is not None:
            shapes[name] = s
            types[name] = _np_dtype(vi.type.tensor_type.elem_type)
    act = activation_tensors(g)
    inits = {i.name for i in g.initializer}
    in_names = [i.name for i in g.input if i.name not in inits]
    layouts = propagate_layouts(g, {n: input_layout for n in in_names if len(shapes.get(n, ())) == 4}, shapes)
    producer = {o: node for node in g.node for o in node.output}
    tensors = {}
    for name in [*in_names, *(o for n in g.node for o in n.output if o)]:
        if name not in act:
            continue
        if name not in shapes:
            raise TlcutError(f"tensor '{name}' has no static shape after inference; export with a fixed input shape")
        node = producer.get(name)
        layer = keras_layer_of(node.name, layer_names) if (node is not None and layer_names) else None
        tensors[name] = {"shape": list(shapes[name]), "dtype": types[name], "layout": layouts.get(name), "layer": layer}
    return tensors



def io_entry(vi: onnx.ValueInfoProto, tensors: dict[str, dict]) -> dict:
    """A model input or output as the manifest lists it, from its annotation where it has one."""
    t = tensors.get(vi.name) or {"shape": list(_static_shape(vi) or ()), "dtype": _np_dtype(vi.type.tensor_type.elem_type), "layout": None}
    return {"name": vi.name, "shape": t["shape"], "dtype": t["dtype"], "layout": t.get("layout")}
