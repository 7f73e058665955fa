"""Writes runtime/c/tests/data/bundle: a tiny opset-12 classifier, compiled at every cut, and
reference tensors for the C validation test. Re-run after a bundle-format change:

    python runtime/c/tests/make_test_bundle.py
"""

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tlcut.toolchain import surgery
from tlcut.toolchain.compile import compile_cuts
from tlcut.toolchain.export import export

HERE = Path(__file__).resolve().parent / "data"


def model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 7
    return m


def main():
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    onnx.save(model(), HERE / "tiny.onnx")
    b = export(str(HERE / "tiny.onnx"), HERE / "bundle", progress=print)
    (HERE / "tiny.onnx").unlink()
    compile_cuts(b, b.cuts, tl="both")
    # reference: cut 1 (relu output, 7x7: the TL pads and crops), plain and TL
    c = b.cuts[1]
    m = onnx.load(str(b.model_path))
    x = np.linspace(-1, 1, 3 * 7 * 7, dtype=np.float32).reshape(1, 3, 7, 7)
    mid = ort.InferenceSession(surgery.head(m, c).SerializeToString()).run(None, {"x": x})[0]
    y = ort.InferenceSession(surgery.tail(m, c).SerializeToString()).run(None, {c.tensor: mid})[0]
    p = ort.InferenceSession(surgery.head(m, c, True).SerializeToString()).run(None, {"x": x})[0]
    ytl = ort.InferenceSession(surgery.tail(m, c, True).SerializeToString()).run(None, {surgery.PAYLOAD_TL: p})[0]
    for name, a in (("cut1_in", mid), ("cut1_out", y), ("cut1_tl_in", p), ("cut1_tl_out", ytl)):
        a.astype(np.float32).tofile(HERE / f"{name}.f32")
    print("cuts:", [(k.index, k.tensor, k.shape) for k in b.cuts])


if __name__ == "__main__":
    main()
