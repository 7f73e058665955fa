"""Writes the C edge's test data, runtime/c/tests/data, and the request seeds of its fuzzer,
runtime/c/fuzz/corpus_edge. Re-run after a bundle-format change:

    python scripts/make_c_test_bundle.py

- bundle/: a tiny opset-12 classifier, compiled at every cut, with reference tensors for cut 1
  (plain and with the TL) from ONNX Runtime.
- bundle_u8/: a classifier whose input is uint8 (Cast to float inside the model), as image
  models exported with their preprocessing take it; reference input and ONNX Runtime's output.
- bundle_rank9/: a model whose output has rank 9, one more than the wire protocol carries, so
  the edge must answer with an error instead of a header it could not write.
- bundle_op17/: an opset-17 classifier (Squeeze with axes as an input, LayerNormalization) that
  OpenCV 4.6 cannot load and OpenVINO can, whose output is float16: the reply carries the model's
  dtype. Reference input and ONNX Runtime's output for the whole model and for cut 1.
- bundle_int8/: a classifier taking an NHWC image, compiled at float32 and at int8 (QDQ, as
  `tlcut compile --precision int8 --calib calib/` makes it, calibrated on the PNGs in calib/);
  reference input, ONNX Runtime's output of the int8 whole model as exact QDQ arithmetic (graph
  optimizations off: the fused int8 kernels' answer depends on the CPU, see below) and the
  output's quantization step.
"""

import shutil
from pathlib import Path

from PIL import Image

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


def _model(name, nodes, inp, out, inits, opset=12) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, [inp], [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])  # OpenCV 4.6 reads opset 12
    m.ir_version = 7 if opset <= 12 else 8
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


def model_op17() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> pool -> Squeeze (axes an input, opset 13+) -> LayerNormalization
    (opset 17) -> Cast to float16: 4 scores in float16."""
    rng = np.random.default_rng(17)
    w1 = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    gamma = numpy_helper.from_array(np.array([1.0, 0.5, 2.0, 1.5], np.float32), "gamma")
    beta = numpy_helper.from_array(np.array([0.1, -0.2, 0.0, 0.3], np.float32), "beta")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["g"], name="gap"),
             helper.make_node("Squeeze", ["g", "axes"], ["s"], name="squeeze"),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], name="norm", axis=-1),
             helper.make_node("Cast", ["n"], ["y"], name="half", to=TensorProto.FLOAT16)]
    return _model("tiny_op17", nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4]), [w1, w2, axes, gamma, beta], opset=17)


def model_int8() -> onnx.ModelProto:
    """An NHWC image (as Keras exports take it, so calibration reads PNGs) -> Transpose -> Conv ->
    Relu -> Conv -> Relu -> pool -> 1x1 Conv (a classifier OpenCV 4.6 reads, unlike its Gemm):
    4 scores. Opset 13: per-channel QDQ needs it."""
    rng = np.random.default_rng(8)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32), "w2")
    wf = numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.5).astype(np.float32), "wf")
    bf = numpy_helper.from_array(np.array([0.1, 0.0, -0.1, 0.2], np.float32), "bf")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w1"], ["a"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Conv", ["g", "wf", "bf"], ["f"], name="fc", kernel_shape=[1, 1]),
             helper.make_node("Flatten", ["f"], ["y"], name="flat")]
    return _model("tiny_int8", nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), [w1, w2, wf, bf], opset=13)


def calibration_images(folder: Path, n: int = 8) -> None:
    """``n`` small RGB PNGs: smooth gradients with noise, so activations spread over a range."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[0:16, 0:16]
    for i in range(n):
        base = np.stack([xx * (8 + i), yy * (12 - i), (xx + yy) * 4 + 20 * i], -1)
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(folder / f"calib{i}.png")


def build(name: str, m: onnx.ModelProto, compile_all: bool = True):
    src = HERE / f"{name}.onnx"
    onnx.save(m, src)
    b = export(str(src), HERE / name, progress=print)
    src.unlink()
    if compile_all and b.cuts:
        compile_cuts(b, b.cuts, tl="both")
    return b


def output_step(m: onnx.ModelProto) -> float:
    """The scale of the QuantizeLinear that makes the graph's output: every int8 answer is a whole
    number of these."""
    out = m.graph.output[0].name
    dq = next(n for n in m.graph.node if out in n.output)
    q = next(n for n in m.graph.node if dq.input[0] in n.output)
    assert dq.op_type == "DequantizeLinear" and q.op_type == "QuantizeLinear", (dq.op_type, q.op_type)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return float(init[q.input[1]])


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

    bo = build("bundle_op17", model_op17())
    mo = onnx.load(str(bo.model_path))
    xo = np.linspace(-1, 1, 3 * 7 * 7, dtype=np.float32).reshape(1, 3, 7, 7)[..., ::-1].copy()
    yo = ort.InferenceSession(str(bo.model_path)).run(None, {"x": xo})[0]
    co = bo.cuts[1]
    mido = ort.InferenceSession(surgery.head(mo, co).SerializeToString()).run(None, {"x": xo})[0]
    yco = ort.InferenceSession(surgery.tail(mo, co).SerializeToString()).run(None, {co.tensor: mido})[0]
    assert yo.dtype == yco.dtype == np.float16 and co.tensor == "r", (yo.dtype, co)
    xo.tofile(HERE / "op17_in.f32")
    yo.tofile(HERE / "op17_out.f16")
    mido.astype(np.float32).tofile(HERE / "op17_cut1_in.f32")
    yco.tofile(HERE / "op17_cut1_out.f16")

    calib = HERE / "calib"
    calibration_images(calib)
    bq = build("bundle_int8", model_int8(), compile_all=False)
    picks = [c for c in bq.cuts if c.tensor in ("r", "r2")]
    compile_cuts(bq, picks, tl="both")
    compile_cuts(bq, picks, tl="both", precision="int8", calib=str(calib))
    xq = np.random.default_rng(4).random((1, 8, 8, 3), dtype=np.float32)
    # The reference is the QDQ graph computed as written (Quantize/Dequantize in float), which no
    # CPU changes; fused int8 kernels may (with 8-bit weights on an AVX2 CPU without VNNI, both
    # engines' answers moved off it: docs/engines.md).
    exact = ort.SessionOptions()
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    mq = bq.path / bq.find("model", precision="int8").file
    yq = ort.InferenceSession(str(mq), exact).run(None, {"x": xq})[0]
    yf = ort.InferenceSession(str(bq.model_path)).run(None, {"x": xq})[0]
    print("int8 whole model vs float32:", np.abs(yq - yf).max(), "of", np.abs(yf).max())
    xq.tofile(HERE / "int8_in.f32")
    yq.astype(np.float32).tofile(HERE / "int8_out.f32")
    np.array([output_step(onnx.load(str(mq)))], np.float32).tofile(HERE / "int8_out_step.f32")
    yf.astype(np.float32).tofile(HERE / "int8_out_f32model.f32")

    # fuzz_edge seeds: well-formed requests for what it serves (cuts 0 and 1, both TL modes, the
    # whole model), in every encoding, so mutations start deep in the request path
    shutil.rmtree(SEEDS, ignore_errors=True)
    SEEDS.mkdir(parents=True)
    seed("cut1", P.tensor_frames(P.REQUEST, mid, 1, 1))
    seed("cut1-peer-twice", P.tensor_frames(P.REQUEST, mid, 2, 1), mode=3)
    seed("cut0", P.tensor_frames(P.REQUEST, np.maximum(mid, 0.5), 3, 0))
    seed("cut1-tl", P.tensor_frames(P.REQUEST, p, 4, 1, P.FLAG_TL))
    seed("input", P.tensor_frames(P.REQUEST, x, 5))
    for enc in ("float16", "int8", "int8+zstd", "int4+zstd"):
        wire, code, scale, zp = P.encode(mid, enc)
        seed(f"cut1-{enc.replace('+', '-')}", P.tensor_frames(P.REQUEST, wire, 6, 1, encoding=code, scale=scale, zero_point=zp))
    seed("ping", [P.Header(type=P.PING, request_id=7).pack(), b""])
    seed("no-tensor", [P.Header(type=P.REQUEST, request_id=8, cut_id=1).pack(), b""])
    pixel_seeds()


def pixel_seeds() -> None:
    """fuzz_edge seeds for the model input as pixels (uint8, JPEG; docs/protocol.md encodings 3, 4),
    and fuzz_jpeg's: JPEG files, a few that fit the test bundle's input (7x7 RGB) and a few that do not."""
    from tlcut.encodings import jpeg as codec

    img = np.random.default_rng(9).integers(0, 256, (7, 7, 3), dtype=np.uint8)
    q = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    s = 1 / 255
    seed("input-uint8", P.tensor_frames(P.REQUEST, q, 9, encoding=P.ENC_UINT8, scale=s))
    jpg = np.frombuffer(codec.encode_jpeg(img, 90), np.uint8)
    seed("input-jpeg", P.tensor_frames(P.REQUEST, jpg, 10, encoding=P.ENC_JPEG, scale=s))
    jseeds = ROOT / "runtime" / "c" / "fuzz" / "corpus_jpeg"
    shutil.rmtree(jseeds, ignore_errors=True)
    jseeds.mkdir(parents=True)
    import io

    from PIL import Image

    (jseeds / "rgb7-q90.jpg").write_bytes(jpg.tobytes())
    (jseeds / "rgb7-q50.jpg").write_bytes(codec.encode_jpeg(img, 50))
    (jseeds / "gray7.jpg").write_bytes(codec.encode_jpeg(img[:, :, :1], 90))
    (jseeds / "rgb7-truncated.jpg").write_bytes(jpg.tobytes()[:-40])
    for name, kw in [("rgb7-progressive.jpg", {"progressive": True}), ("rgb7-420.jpg", {"subsampling": 2}),
                     ("rgb7-restart.jpg", {"restart_marker_blocks": 1})]:
        try:
            b = io.BytesIO()
            Image.fromarray(img).save(b, "JPEG", quality=80, **kw)
            (jseeds / name).write_bytes(b.getvalue())
        except (TypeError, ValueError, OSError):  # an older Pillow without the option
            pass
    big = np.random.default_rng(10).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    (jseeds / "rgb24x20-420.jpg").write_bytes(simplejpeg_encode(big))


def simplejpeg_encode(img) -> bytes:
    """A 4:2:0 JPEG (the camera default), which codec.encode_jpeg (4:4:4) does not make."""
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), 85, colorsubsampling="420")


if __name__ == "__main__":
    main()
