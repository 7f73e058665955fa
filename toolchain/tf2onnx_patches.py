"""Patches applied to Keras and tf2onnx only while a Keras model converts (``keras_to_onnx``).

One makes Keras 3's grouped convolutions traceable; the others take out tf2onnx's copies of every
weight, which made large models (VGG16, ConvNeXt) run out of memory. Each keeps tf2onnx's output
graph the same, and each is undone when the conversion ends.
"""

from __future__ import annotations

import contextlib
import copy
import re

import numpy as np
import onnx


@contextlib.contextmanager
def convolutions_without_xla():
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
def lean_tf2onnx():
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

