"""Small hand-built ONNX graphs whose cuts are known: for tests and lab scenarios that need no TensorFlow."""

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_rng = np.random.default_rng(0)


def _seeded(build):
    """The same weights for the same graph whatever was built before: one module-wide generator made
    a test's weights depend on the tests that ran first (an int8 tolerance held in one order only)."""
    @functools.wraps(build)
    def wrapper(*a, **kw):
        global _rng
        _rng = np.random.default_rng(0)
        return build(*a, **kw)

    return wrapper


def _conv(name, x, y, cin, cout, k=3, stride=1, inits=None):
    w = numpy_helper.from_array((_rng.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32), name + "_w")
    b = numpy_helper.from_array(_rng.standard_normal(cout).astype(np.float32) * 0.1, name + "_b")
    inits += [w, b]
    p = k // 2
    return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, kernel_shape=[k, k], pads=[p, p, p, p],
                            strides=[stride, stride])


def make(nodes, inits, shape, out_shape, name="g", input_name="x", output_name="y", opset=17):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


@_seeded
def chain(hw=7, c=4):
    """x -> conv -> relu -> conv -> relu -> y. Cuts: a, b, c (y is the output)."""
    i = []
    nodes = [_conv("c1", "x", "a", c, c, inits=i), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             _conv("c2", "b", "c", c, c, inits=i), helper.make_node("Relu", ["c"], ["y"], name="r2")]
    return make(nodes, i, [1, c, hw, hw], [1, c, hw, hw])


@_seeded
def residual(hw=9, c=4):
    """x -> conv a; a -> conv b -> relu r; add(a, r) -> s; s -> relu y. Inside the skip, a is live
    beside b and r, so the only cuts are a and s."""
    i = []
    nodes = [_conv("stem", "x", "a", 3, c, inits=i), _conv("body", "a", "b", c, c, inits=i),
             helper.make_node("Relu", ["b"], ["r"], name="body_relu"), helper.make_node("Add", ["a", "r"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="out_relu")]
    return make(nodes, i, [1, 3, hw, hw], [1, c, hw, hw])


@_seeded
def branches(hw=8, c=4):
    """x -> conv t; three parallel branches of t (one of two nodes) concatenated -> cat; conv -> y.
    Cuts: t, cat."""
    i = []
    nodes = [_conv("stem", "x", "t", 3, c, inits=i),
             _conv("b1", "t", "p", c, 2, k=1, inits=i),
             _conv("b2a", "t", "q0", c, 2, inits=i), helper.make_node("Relu", ["q0"], ["q"], name="b2_relu"),
             helper.make_node("MaxPool", ["t"], ["m"], name="b3_pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["p", "q", "m"], ["cat"], name="concat", axis=1),
             _conv("head", "cat", "y", c + 4, c, inits=i)]
    return make(nodes, i, [1, 3, hw, hw], [1, c, hw, hw])


@_seeded
def long_skip(hw=6, c=2):
    """x -> relu a; a -> relu b -> relu d -> relu e; add(a, e) -> y. a stays live across b, d, e,
    so the only cut is a."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r0"), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Sigmoid", ["b"], ["d"], name="r2"), helper.make_node("Relu", ["d"], ["e"], name="r3"),
             helper.make_node("Add", ["a", "e"], ["y"], name="add")]
    return make(nodes, [], [1, c, hw, hw], [1, c, hw, hw])


@_seeded
def nhwc_classifier(h=7, w=5, c=3, classes=4):
    """Keras-style: NHWC input -> transpose -> conv (NCHW) -> transpose back -> relu (NHWC) ->
    mean over H,W -> flatten -> matmul. Odd 7x5 maps; the relu output is an NHWC cut."""
    i = []
    wmat = numpy_helper.from_array(_rng.standard_normal((c, classes)).astype(np.float32), "fc_w")
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "mean_axes")
    i += [wmat, axes]
    nodes = [helper.make_node("Transpose", ["x"], ["x_nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
             _conv("conv", "x_nchw", "f", c, c, inits=i),
             helper.make_node("Transpose", ["f"], ["f_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["f_nhwc"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "mean_axes"], ["m"], name="gap", keepdims=0),
             helper.make_node("MatMul", ["m", "fc_w"], ["y"], name="fc")]
    return make(nodes, i, [1, h, w, c], [1, classes], opset=18)
