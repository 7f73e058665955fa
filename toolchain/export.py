"""`tlcut export`: a Keras model (or an ONNX file) becomes a bundle with a fully annotated ONNX graph.

Every activation tensor gets a static shape, a dtype, a layout (NHWC/NCHW where it can be known)
and the Keras layer it came from, because every later step needs them: cuts are reported per
layer, the TL must pool the right axes, and runtimes need static input shapes.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import difflib
import gc
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from tlcut import __version__, dtypes
from tlcut.bundle import FORMAT, MANIFEST, MODEL, ONNX, VERSION, Artifact, Bundle, artifact_file, sha256_file, staged_dir, write_json_atomic
from tlcut.errors import TlcutError

DEFAULT_OPSET = 17

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


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        raise TlcutError(
            "exporting a Keras model needs TensorFlow; install it with `pip install 'tlcut[tf]'`"
        ) from None
    return keras


def load_keras(model: str, weights: str | None = None, input_shape=None, classes: int | None = None):
    """A Keras model from a saved file (.keras, .h5) or a `keras.applications` / tlcut zoo name."""
    from tlcut.models import zoo

    path = Path(model)
    if path.suffix in (".keras", ".h5", ".hdf5"):
        if not path.is_file():
            raise TlcutError(f"model file '{model}' does not exist")
        keras = _keras()
        try:
            m = keras.models.load_model(path, compile=False)
        except Exception as e:  # Keras raises many types for a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TlcutError(f"cannot load Keras model '{model}': {first[:200]}; is it a complete .keras/.h5 file?") from None
        if weights:
            _load_weights(m, weights)
        source = {"kind": "keras-file", "name": path.stem, "path": str(path.resolve()), "sha256": sha256_file(path)}
        report = Path(str(path) + ".json")  # written beside the model by `tlcut train` / `tlcut retrain`
        if report.is_file():
            try:
                source["training"] = json.loads(report.read_text())
            except ValueError:
                pass
        return m, source
    if path.suffix or os.sep in model:
        raise TlcutError(
            f"'{model}' is neither an existing .keras/.h5/.onnx file nor an architecture name; "
            "list architectures with `tlcut export --list`"
        )
    names = zoo.names()
    match = {n.lower(): n for n in names}.get(model.lower())
    if match is None:
        close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise TlcutError(f"unknown architecture '{model}'; {hint}list them with `tlcut export --list`")
    m = zoo.build(match, input_shape=input_shape, classes=classes)
    if weights:
        _load_weights(m, weights)
    return m, {"kind": "keras-application" if match in zoo.keras_application_names() else "tlcut-zoo",
               "name": match, "weights": str(Path(weights).resolve()) if weights else None}


def _load_weights(m, weights: str) -> None:
    if not Path(weights).is_file():
        raise TlcutError(f"weights file '{weights}' does not exist")
    try:
        m.load_weights(weights)
    except Exception as e:
        raise TlcutError(f"weights '{weights}' do not fit this model: {str(e).splitlines()[0][:200]}") from None


@contextlib.contextmanager
def _convolutions_without_xla():
    """Trace Keras 3's grouped convolutions as plain Conv2D ops.

    Keras 3 wraps a grouped convolution (ConvNeXt's depthwise ones) in `tf.function(jit_compile=True)`
    because TensorFlow's CPU kernels lack it; freezing never inlines an XLA-compiled function, so
    tf2onnx meets an opaque StatefulPartitionedCall (tensorflow-onnx issues 2099, 2347). Traced
    without the wrapper it is one Conv2D, which tf2onnx turns into an ONNX Conv with `group`. Only
    the trace sees this: nothing runs the traced TensorFlow graph.
    """
    try:
        import tensorflow as tf
        from keras.src import backend as kbackend
        from keras.src.backend.tensorflow import nn as tfnn

        original, to_tf_format = tfnn.conv, tfnn._convert_data_format
    except (ImportError, AttributeError):  # another Keras layout: convert as it is, leftovers are reported
        yield
        return

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        data_format = kbackend.standardize_data_format(data_format)
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                 data_format=to_tf_format(data_format, len(inputs.shape)), dilations=dilation_rate)

    tfnn.conv = conv
    try:
        yield
    finally:
        tfnn.conv = original


@contextlib.contextmanager
def _lean_tf2onnx():
    """tf2onnx 1.17 with the copies of every weight that made exports run out of memory taken out.

    Measured on VGG16 (528 MiB of weights), which the OOM killer stopped at 24 GiB, and on
    ConvNeXtTiny at 32x32 (109 MiB: 6.9 GiB resident before). Patched while converting, restored
    after; each patch keeps tf2onnx's output graph the same:

    - Freezing: tf2onnx's ordinary path wraps the frozen GraphDef in a new TensorFlow function,
      serialises it again and imports it into a session; its large-model path freezes straight
      to a GraphDef, which is what this does, but it skips grappler, which this keeps.
    - Grappler held about ten copies of the GraphDef it was given (VGG16: 2.4 -> 9.0 GiB). The
      weights it has nothing to fold into are swapped for placeholders while it runs
      (``_hide_weights``) and handed to tf2onnx's large-model value table afterwards, never
      copied back into a GraphDef.
    - tf2onnx's optimizer ends each of its passes (36 for ConvNeXtTiny) in ``Node.update_proto``,
      which empties the node's NodeProto and refills it; protobuf's upb arenas never free what is
      removed, so every pass left a copy of every constant (ConvNeXtTiny: 1.4 -> 5.1 GiB). Now a
      fresh NodeProto each time, without the constant's value, which only the initializer uses.
    - Moving a tensor out to the large-model storage deep-copied it and kept the copy; now the
      bytes move once and the graph's copy is released. (Also: 1.17 calls np.product, gone in
      NumPy 2.)
    - The value table of large constants is emptied once the graph is built from it.
    - Its large-model format also stops catching a failing optimizer (MobileNetV3's hard-swish
      trips the transpose optimizer's Add handler on a scalar), which the ordinary format skips
      by running each optimizer on a deep copy of the graph. That is kept, and the copies share
      the constants' values, which optimizers replace but never modify.
    """
    from onnx import NodeProto
    from tf2onnx import convert, optimizer, tf_loader
    from tf2onnx.graph import Node

    saved = (Node.update_proto, Node.get_value_attr, tf_loader.from_function, convert.compress_graph_def,
             convert.process_tf_graph, optimizer.optimize_graph)
    pending: dict[str, bytes] = {}  # weights taken out of the frozen graph, for the value table

    def update_proto(self, external_tensor_storage=None):
        for attr_name, sub_graph in (self.get_body_graphs() or {}).items():
            self.set_attr(attr_name, sub_graph.make_graph("graph for " + self.name + " " + attr_name,
                                                          external_tensor_storage=external_tensor_storage))
        const = self.is_const()
        attrs = self.get_onnx_attrs(None if const else external_tensor_storage)
        if const:
            attrs.pop("value", None)  # make_graph takes a constant's value from the attribute, never from here
        op = NodeProto(name=self._op.name, op_type=self._op.op_type, domain=self._op.domain,
                       doc_string=self._op.doc_string)
        op.input.extend(self.input)
        op.output.extend(self.output)
        op.attribute.extend(attrs.values())
        self._op = op

    def get_value_attr(self, external_tensor_storage=None):
        storage = external_tensor_storage
        if storage is not None and self in storage.node_to_modified_value_attr:
            return storage.node_to_modified_value_attr[self]
        src = self._attr["value"]
        if storage is None or src.type != onnx.AttributeProto.TENSOR or not src.t.raw_data or \
                int(np.prod(src.t.dims)) <= storage.external_tensor_size_threshold:
            return src
        tensor_name = re.sub(r'[~"#%&*:<>?/\\{|}]', "_", self.name.strip()) + "_" + str(storage.name_counter)
        storage.name_counter += 1
        storage.name_to_tensor_data[tensor_name] = src.t.raw_data
        a = onnx.AttributeProto(name=src.name, type=src.type)
        a.t.CopyFrom(onnx.TensorProto(name=src.t.name, dims=src.t.dims, data_type=src.t.data_type,
                                      data_location=onnx.TensorProto.EXTERNAL))
        e = a.t.external_data.add()
        e.key, e.value = "location", tensor_name
        storage.node_to_modified_value_attr[self] = a
        self._attr["value"] = a  # the graph is being written out: its own copy can go
        return a

    def from_function(func, input_names, output_names, large_model=False):
        import tensorflow as tf

        graph_def = tf_loader.fix_freezing_errors_part2(tf_loader.convert_variables_to_constants_large_model(func))
        resource = {n.name for n in graph_def.node if n.op == "Placeholder" and n.attr["dtype"].type == tf.resource.as_datatype_enum}
        input_names = [n for n in input_names if n.split(":")[0] not in resource]
        graph_def, hidden = _hide_weights(graph_def)
        with tf.Graph().as_default():  # grappler's meta-graph export wants graph mode
            optimized = tf_loader.tf_optimize(input_names, output_names, graph_def)
        del graph_def
        if large_model:
            pending.update((name, w.attr["value"].tensor.tensor_content) for name, w in hidden.items())
        return _restore_weights(optimized, hidden, with_values=not large_model)

    def compress_graph_def(graph_def):
        values = saved[3](graph_def)
        values.update(pending)
        pending.clear()
        return values

    def process_tf_graph(*args, const_node_values=None, **kwargs):
        try:
            return saved[4](*args, const_node_values=const_node_values, **kwargs)
        finally:
            if const_node_values:
                const_node_values.clear()  # now in the tf2onnx graph; tf2onnx keeps the table to the end

    def optimize_graph(graph, catch_errors=True, optimizers=None):
        return saved[5](graph, True, optimizers=optimizers)

    def deepcopy_node(self, memo):
        new = Node.__new__(Node)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_attr":
                value = {k: a if k == "value" else copy.deepcopy(a, memo) for k, a in value.items()}
            elif key == "_op" and self.is_const():  # its value is in _attr; update_proto rebuilds it
                value = NodeProto(name=value.name, op_type=value.op_type, domain=value.domain, output=value.output)
            else:
                value = copy.deepcopy(value, memo)
            setattr(new, key, value)
        return new

    Node.update_proto, Node.get_value_attr, Node.__deepcopy__ = update_proto, get_value_attr, deepcopy_node
    tf_loader.from_function, convert.compress_graph_def, convert.process_tf_graph, optimizer.optimize_graph = \
        from_function, compress_graph_def, process_tf_graph, optimize_graph
    try:
        yield
    finally:
        (Node.update_proto, Node.get_value_attr, tf_loader.from_function, convert.compress_graph_def,
         convert.process_tf_graph, optimizer.optimize_graph) = saved
        del Node.__deepcopy__
        pending.clear()


# Ops that take a weight as their input 1. Grappler's constant folding folds into such a weight
# through MulConvPushDown: a convolution whose result (also across a bias add) is multiplied by
# something constant after folding, such as a BatchNormalization scale, gets it folded into its
# filter. A weight whose product is multiplied or divided at all downstream is left visible, for
# matrix products too (hiding ConvNeXt's, whose GELU and LayerNorm multiply, changed its graph).
_WEIGHT_CONSUMERS = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"}
_SCALES = {"Mul", "RealDiv", "Div", "MulNoNan", "DivNoNan"}
_PASSES_SCALE = {"BiasAdd", "Add", "AddV2", "Sub", "Identity", "Reshape", "Squeeze", "ExpandDims"}
_HIDE_BYTES = 1 << 20


def _hide_weights(graph_def):
    """Give grappler placeholders instead of the large weights it has nothing to fold into.

    A weight qualifies when it reaches, through a chain of single-use Identity ops, only input 1
    of convolutions and matrix products whose results are never multiplied or divided downstream
    (through bias adds and reshapes): grappler then folds nothing into it, and its output is the
    same graph. (Checked against unhidden conversions of 14 Keras applications: equal, but for the
    run-to-run variation tf2onnx shows between two unhidden conversions of ConvNeXt, NASNet and
    Inception, which dedupe and order equal nodes differently.)
    The placeholder takes the name of the chain's last node, the name grappler's folding would
    give the weight. Returns the new GraphDef and {that name: the weight's Const NodeDef}.
    """
    from tensorflow.core.framework import graph_pb2

    users: dict[str, list[tuple]] = {}
    for n in graph_def.node:
        for k, i in enumerate(n.input):
            users.setdefault(i[1:] if i.startswith("^") else i.split(":")[0], []).append((n, -1 if i.startswith("^") else k))

    def scaled(name, depth=0):
        return depth < 6 and any(u.op in _SCALES or (u.op in _PASSES_SCALE and scaled(u.name, depth + 1))
                                 for u, k in users.get(name, []) if k >= 0)

    hidden, dropped = {}, set()
    for n in graph_def.node:
        if n.op != "Const" or len(n.attr["value"].tensor.tensor_content) < _HIDE_BYTES:
            continue
        chain, end = [n.name], n.name
        while len(users.get(end, [])) == 1 and users[end][0][0].op == "Identity" and users[end][0][1] == 0:
            end = users[end][0][0].name
            chain.append(end)
        data_users = [(u, k) for u, k in users.get(end, []) if k >= 0]
        if not data_users or any(u.op not in _WEIGHT_CONSUMERS or k != 1 or scaled(u.name) for u, k in data_users):
            continue
        if any(k < 0 for name in chain[:-1] for _, k in users.get(name, [])):
            continue  # a control edge on a node that would vanish
        hidden[end] = n
        dropped.update(chain[:-1])
    if not hidden:
        return graph_def, {}
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.name in dropped:
            continue
        if n.name in hidden:
            w = hidden[n.name]
            ph = out.node.add(name=n.name, op="Placeholder", device=n.device)
            ph.attr["dtype"].type = w.attr["dtype"].type
            ph.attr["shape"].shape.CopyFrom(w.attr["value"].tensor.tensor_shape)
            for i in n.input:
                if i.startswith("^"):
                    ph.input.append(i)
        else:
            out.node.add().CopyFrom(n)
    return out, hidden


def _restore_weights(graph_def, hidden: dict, with_values: bool = True):
    """Put the weights ``_hide_weights`` took out back as constants named like their placeholders;
    ``with_values=False`` leaves their tensor content out, as tf2onnx's large-model format does."""
    if not hidden:
        return graph_def
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.op == "Placeholder" and n.name in hidden:
            w = out.node.add(name=n.name, op="Const", device=n.device)
            w.attr["dtype"].CopyFrom(hidden[n.name].attr["dtype"])
            if with_values:
                w.attr["value"].CopyFrom(hidden[n.name].attr["value"])
            else:
                src = hidden[n.name].attr["value"].tensor
                w.attr["value"].tensor.dtype = src.dtype
                w.attr["value"].tensor.tensor_shape.CopyFrom(src.tensor_shape)
            w.input.extend(i for i in n.input if i.startswith("^"))
        else:
            out.node.add().CopyFrom(n)
    return out


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler for TF's Erfc, which exact GELU (`approximate=False`) lowers to: 1 - Erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    node.type = "Erf"
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_one_minus"),
                                  inputs=[one.output[0], node.output[0]])
    return node


# TF ops tf2onnx 1.17 lacks, converted by tlcut: {TF op: (handler, args)} in tf2onnx's format.
_OP_HANDLERS = {"Erfc": (_erfc_as_one_minus_erf, [])}


def unconverted_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Node op types that are no ONNX operator at the model's opset: what the converter left as it was.

    tf2onnx only logs an op it cannot convert and keeps the TensorFlow node, so a "converted" model
    may hold ops no ONNX runtime knows; counting them turns that into an error the user can act on.
    """
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    found: dict[str, int] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        version = opsets.get(domain)
        if domain in ("ai.onnx", "ai.onnx.ml") and version is not None and \
                onnx.defs.has(node.op_type, version, "" if domain == "ai.onnx" else domain):
            continue
        if domain not in ("ai.onnx", "ai.onnx.ml") and version is not None:
            continue  # a declared custom domain: the model says which runtime it needs
        found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


_TF_OP_IN_MESSAGE = re.compile(r"\[[^\]:]+: (\w+)\]")


def _unsupported(name: str, converter: str, ops: dict[str, int] | None, detail: str | None = None) -> TlcutError:
    """The one line a user gets when the converter cannot do a model: which ops, and what to do."""
    what = f"{converter} cannot convert {name}"
    if ops:
        what += ": unsupported ops " + ", ".join(f"{op} (x{n})" for op, n in sorted(ops.items()))
    elif detail:
        what += f": {detail}"
    return TlcutError(f"{what}; convert the model to ONNX with another tool and run `tlcut export MODEL.onnx`, "
                      "or choose another architecture")


def keras_to_onnx(m, batch: int = 1, opset: int = DEFAULT_OPSET, large_model: bool = False):
    """Convert with tf2onnx, which keeps Keras layer names in node names (needed to map cuts back).

    Returns (model, producer, external tensors): with ``large_model`` the weights stay out of the
    proto, in the dict tf2onnx returns, so no step after it copies them.
    """
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError:
        raise TlcutError("exporting needs tf2onnx; install it with `pip install 'tlcut[tf]'`") from None
    spec = []
    for i, t in enumerate(m.inputs):
        shape = (batch,) + tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise TlcutError(
                f"model input {i} has an unknown size {tuple(t.shape)}; give it with --input-shape H,W,C"
            )
        spec.append(tf.TensorSpec(shape, t.dtype, name=f"input_{i}" if len(m.inputs) > 1 else "input"))
    converter = f"tf2onnx {tf2onnx.__version__}"
    log = logging.getLogger("tf2onnx")
    level = log.level
    log.setLevel(logging.CRITICAL)  # it logs every unsupported op; the one-line error below says it once
    try:
        with _convolutions_without_xla(), _lean_tf2onnx():
            proto, external = tf2onnx.convert.from_keras(m, input_signature=tuple(spec), opset=opset,
                                                         custom_op_handlers=dict(_OP_HANDLERS),
                                                         large_model=large_model)
    except TlcutError:
        raise
    except Exception as e:  # tf2onnx raises ValueError, KeyError, TypeError, ... for what it cannot do
        text = str(e).strip()
        ops = {op: 1 for op in _TF_OP_IN_MESSAGE.findall(text)}
        first = text.splitlines()[0][:200] if text else type(e).__name__
        raise _unsupported(m.name, converter, ops, f"{type(e).__name__}: {first}") from None
    finally:
        log.setLevel(level)
    leftover = unconverted_ops(proto)
    if leftover:
        raise _unsupported(m.name, converter, leftover)
    return proto, f"{converter}, tensorflow {tf.__version__}", external


# --------------------------------------------------------------------------------------------
# Weights: inside model.onnx, or beside it for a large model
# --------------------------------------------------------------------------------------------
#: Where a large model's weights go, next to model.onnx (ONNX external data, resolved from its folder).
WEIGHTS_FILE = MODEL + ".data"
#: Above this many bytes of weights they go to WEIGHTS_FILE: every later step then reads them from
#: disk instead of holding and serialising copies, and the 2 GiB protobuf limit cannot bite. Below
#: it model.onnx stays one self-contained file (the C edge and other single-file readers take it).
EXTERNAL_WEIGHTS_BYTES = 100 * 2**20
_EXTERNAL_MIN_TENSOR = 1024  # smaller tensors stay inline, as onnx.save does
_ALIGN = 4096  # page-aligned offsets let ONNX Runtime map the file instead of reading it


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _location(t: onnx.TensorProto) -> str | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in t.external_data if e.key == "location"), None)


def place_weights(model: onnx.ModelProto, folder: Path, storage: dict[str, bytes] | None = None) -> dict | None:
    """Put the weights where the bundle keeps them; return the weights file's facts, or None.

    ``storage`` holds the tensors tf2onnx kept out of the proto (its large-model format), keyed by
    each tensor's ``location``; entries are dropped as they are written, so the bytes exist once.
    Small models get them back inline. The model still needs saving (``save_model``).
    """
    storage = storage if storage is not None else {}
    tensors = list(_all_tensors(model.graph))
    for t in tensors:
        loc = _location(t)
        if loc is not None and loc not in storage:
            raise TlcutError(f"tensor '{t.name}' refers to external data '{loc}' that the converter did not return; "
                             "re-run the export, and report it if it persists")

    def size(t):
        loc = _location(t)
        return len(storage[loc]) if loc is not None else len(t.raw_data)

    total = sum(size(t) for t in tensors if size(t) >= _EXTERNAL_MIN_TENSOR)
    if total <= EXTERNAL_WEIGHTS_BYTES:
        for t in tensors:
            loc = _location(t)
            if loc is not None:
                t.raw_data = storage.pop(loc)
                del t.external_data[:]
                t.data_location = onnx.TensorProto.DEFAULT
        return None
    digest, offset = hashlib.sha256(), 0
    with open(Path(folder) / WEIGHTS_FILE, "wb") as f:
        for t in tensors:
            if size(t) < _EXTERNAL_MIN_TENSOR:
                continue
            loc = _location(t)
            data = storage.pop(loc) if loc is not None else t.raw_data
            pad = -offset % _ALIGN
            f.write(b"\0" * pad)
            digest.update(b"\0" * pad)
            offset += pad
            f.write(data)
            digest.update(data)
            t.ClearField("raw_data")
            del t.external_data[:]
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(data)))):
                e = t.external_data.add()
                e.key, e.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL
            offset += len(data)
            del data
    return {"file": WEIGHTS_FILE, "bytes": offset, "sha256": digest.hexdigest()}


def has_external_weights(model: onnx.ModelProto) -> bool:
    """Whether some tensor's data is outside the proto (then ONNX Runtime must load from a path)."""
    return any(_location(t) is not None for t in _all_tensors(model.graph))


def save_model(model: onnx.ModelProto, path: Path, weights: dict | None) -> None:
    """Write model.onnx. With a weights file its sha256 goes into the model's metadata, so the
    model file's own sha256, which profiles and plans carry, changes whenever the weights do."""
    if weights is not None:
        meta = {p.key: p for p in model.metadata_props}
        entry = meta.get("tlcut.weights_sha256") or model.metadata_props.add()
        entry.key, entry.value = "tlcut.weights_sha256", weights["sha256"]
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


# --------------------------------------------------------------------------------------------
# Annotation: static shapes, dtypes, layouts, Keras layers
# --------------------------------------------------------------------------------------------
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


VALIDATION_TOLERANCE = 1e-4


def compare_with_keras(km, model, batch: int, seed: int = 0) -> dict:
    """Run the converted graph and the Keras model on the same random input, as Polygraphy would.

    ``model`` is a ModelProto or the path of a saved model.onnx (which ONNX Runtime reads with its
    weights file, so no serialised copy of a large model is made).
    """
    import onnxruntime as ort
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    xs = [rng.random((batch, *t.shape[1:])).astype(np.float32) for t in km.inputs]
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # Keras' XLA-compiled grouped convolutions warn about retracing
    try:
        want = km(xs if len(xs) > 1 else xs[0], training=False)
    finally:
        tf.get_logger().setLevel(level)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
    diff = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    return {"against": "keras", "input": f"uniform [0,1), seed {seed}", "max_abs_diff": diff}


# --------------------------------------------------------------------------------------------
# The verb
# --------------------------------------------------------------------------------------------
def export(model: str, out, *, weights: str | None = None, input_shape=None, classes: int | None = None,
           batch: int = 1, opset: int = DEFAULT_OPSET, input_layout: str | None = None, force: bool = False,
           progress=print) -> Bundle:
    """Build a bundle for MODEL in OUT. Nothing appears at OUT unless every step succeeded."""
    from tlcut.toolchain.cuts import enumerate_cuts

    out = Path(out)
    if out.exists() and not force:
        raise TlcutError(f"'{out}' already exists; choose another -o or pass --force to replace it")
    if batch < 1:
        raise TlcutError(f"--batch must be at least 1, got {batch}")
    layer_names = None
    if str(model).endswith(".onnx"):
        src = Path(model)
        if not src.is_file():
            raise TlcutError(f"model file '{model}' does not exist")
        try:
            proto = onnx.load(str(src))
            onnx.checker.check_model(proto)
        except Exception as e:
            raise TlcutError(f"'{model}' is not a valid ONNX model ({str(e).splitlines()[0][:160]})") from None
        source = {"kind": "onnx-file", "name": src.stem, "path": str(src.resolve()), "sha256": sha256_file(src)}
        producer = f"{proto.producer_name} {proto.producer_version}".strip()
        if input_layout not in (None, "NCHW", "NHWC"):
            raise TlcutError(f"--input-layout must be NCHW or NHWC, got '{input_layout}'")
        fix_batch(proto, batch)
        storage = None
    else:
        progress(f"[export] building {model} in Keras")
        km, source = load_keras(model, weights=weights, input_shape=input_shape, classes=classes)
        layer_names = {layer.name for layer in km.layers}
        progress(f"[export] converting {len(km.layers)} Keras layers to ONNX (opset {opset})")
        proto, producer, external = keras_to_onnx(km, batch=batch, opset=opset, large_model=True)
        storage = external.name_to_tensor_data
        del external
        gc.collect()  # the converter's TensorFlow and tf2onnx graphs are cycles: free them before the ONNX steps
        input_layout = "NHWC"  # Keras image models are channels-last
    with staged_dir(out, overwrite=force) as tmp:
        weights_file = place_weights(proto, tmp, storage)
        del storage
        progress("[export] inferring static shapes and layouts")
        proto = infer_shapes(proto, tmp)
        if weights_file is not None:
            progress(f"[export] weights in {weights_file['file']} ({weights_file['bytes'] / 2**20:.1f} MiB)")
        save_model(proto, tmp / MODEL, weights_file)
        validation = None
        if layer_names is not None:
            validation = compare_with_keras(km, tmp / MODEL, batch)
            progress(f"[export] ONNX vs Keras on a random input: max abs diff {validation['max_abs_diff']:.2e}")
            if validation["max_abs_diff"] > VALIDATION_TOLERANCE:
                progress(f"[export] warning: the conversion differs from Keras by more than {VALIDATION_TOLERANCE:g}")
        tensors = annotate(proto, input_layout, layer_names)
        cuts = enumerate_cuts(proto, tensors)
        g = proto.graph
        inits = {i.name for i in g.initializer}

        def io(vi):
            t = tensors.get(vi.name) or {"shape": list(_static_shape(vi) or ()), "dtype": _np_dtype(vi.type.tensor_type.elem_type), "layout": None}
            return {"name": vi.name, "shape": t["shape"], "dtype": t["dtype"], "layout": t.get("layout")}

        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tlcut_version": __version__,
            "source": source,
            "model": {"file": MODEL, "sha256": sha256_file(tmp / MODEL),
                      "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
                      "producer": producer, "batch": batch, "nodes": len(g.node)},
            "inputs": [io(vi) for vi in g.input if vi.name not in inits],
            "outputs": [io(vi) for vi in g.output],
            "validation": validation,
            "tensors": tensors,
            "cuts": [c.to_json() for c in cuts],
            "artifacts": [],
        }
        if weights_file is not None:
            manifest["model"]["weights"] = weights_file
        if len(manifest["inputs"]) == 1:
            strip = lambda d: {k: d[k] for k in ("name", "dtype", "shape")}  # noqa: E731
            manifest["artifacts"].append(Artifact("model", None, False, ONNX, "float32", artifact_file("model", None),
                                                  strip(manifest["inputs"][0]), strip(manifest["outputs"][0])).to_json())
        write_json_atomic(tmp / MANIFEST, manifest)
    progress(f"[export] wrote {out} ({len(g.node)} nodes, {len(cuts)} cuts, "
             f"{sum(c.tl for c in cuts)} take the TL)")
    return Bundle.open(out)
