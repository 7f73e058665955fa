"""Writes the C edge's test data, runtime/c/tests/data, and the request seeds of its fuzzer,
runtime/c/fuzz/corpus_edge. Re-run after a bundle-format change:

    python scripts/make_c_test_bundle.py

- bundle/: a tiny opset-12 classifier, compiled at every cut, with reference tensors for cut 1
  (plain and with the TL) from ONNX Runtime.
- bundle_u8/: a classifier whose input is uint8 (Cast to float inside the model), as image
  models exported with their preprocessing take it; reference input and ONNX Runtime's output.
- bundle_rank9/: a model whose output has rank 9, one more than the wire protocol carries, so
  the edge must answer with an error instead of a header it could not write.
"""

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tlcut.runtime import protocol as P
from tlcut.toolchain import surgery
from tlcut.toolchain.compile import compile_cuts
from tlcut.toolchain.export import export

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "runtime" / "c" / "tests" / "data"
SEEDS = ROOT / "runtime" / "c" / "fuzz" / "corpus_edge"


def _model(name, nodes, inp, out, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, [inp], [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])  # OpenCV 4.6 reads opset 12
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    return _model("tiny", nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), [w1, w2])


def model_u8() -> onnx.ModelProto:
    """uint8 NCHW image -> Cast -> scale to [0, 1] -> Conv -> Relu -> pool -> 4 scores."""
    rng = np.random.default_rng(11)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32), "w")
    s = numpy_helper.from_array(np.array(1 / 255, np.float32), "s")
    nodes = [helper.make_node("Cast", ["x"], ["xf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xf", "s"], ["xs"], name="scale"),
             helper.make_node("Conv", ["xs", "w"], ["a"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    return _model("tiny_u8", nodes, helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 6, 6]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), [w, s])


def model_rank9() -> onnx.ModelProto:
    shape = numpy_helper.from_array(np.array([1, 1, 1, 1, 1, 1, 1, 1, 4], np.int64), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape")]
    return _model("rank9", nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] * 8 + [4]), [shape])


def build(name: str, m: onnx.ModelProto, compile_all: bool = True):
    src = HERE / f"{name}.onnx"
    onnx.save(m, src)
    b = export(str(src), HERE / name, progress=print)
    src.unlink()
    if compile_all and b.cuts:
        compile_cuts(b, b.cuts, tl="both")
    return b


def seed(name: str, frames, mode: int = 0) -> None:
    """A fuzz_edge input: a mode byte (runtime/c/fuzz/fuzz_edge.c), the header, the payload."""
    header, payload = (bytes(f) for f in frames)
    (SEEDS / f"{name}.bin").write_bytes(bytes([mode]) + header + payload)


def main():
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    b = build("bundle", model())
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

    bu = build("bundle_u8", model_u8())
    xu = np.random.default_rng(3).integers(0, 256, (1, 3, 6, 6), dtype=np.uint8)
    yu = ort.InferenceSession(str(bu.model_path)).run(None, {"x": xu})[0]
    xu.tofile(HERE / "u8_in.u8")
    yu.astype(np.float32).tofile(HERE / "u8_out.f32")

    build("bundle_rank9", model_rank9(), compile_all=False)

    # fuzz_edge seeds: well-formed requests for what it serves (cuts 0 and 1, both TL modes, the
    # whole model), in every encoding, so mutations start deep in the request path
    shutil.rmtree(SEEDS, ignore_errors=True)
    SEEDS.mkdir(parents=True)
    seed("cut1", P.tensor_frames(P.REQUEST, mid, 1, 1))
    seed("cut1-peer-twice", P.tensor_frames(P.REQUEST, mid, 2, 1), mode=3)
    seed("cut0", P.tensor_frames(P.REQUEST, np.maximum(mid, 0.5), 3, 0))
    seed("cut1-tl", P.tensor_frames(P.REQUEST, p, 4, 1, P.FLAG_TL))
    seed("input", P.tensor_frames(P.REQUEST, x, 5))
    for enc in ("float16", "int8"):
        wire, code, scale, zp = P.encode(mid, enc)
        seed(f"cut1-{enc}", P.tensor_frames(P.REQUEST, wire, 6, 1, encoding=code, scale=scale, zero_point=zp))
    seed("ping", [P.Header(type=P.PING, request_id=7).pack(), b""])
    seed("no-tensor", [P.Header(type=P.REQUEST, request_id=8, cut_id=1).pack(), b""])


if __name__ == "__main__":
    main()
