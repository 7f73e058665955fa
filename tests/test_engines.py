"""Engines behind the one runner interface, and int8 halves.

OpenVINO against ONNX Runtime on hand-built graphs and a real Keras model (float32: 1e-4, on
outputs that move with the input); QDQ int8 halves from `tlcut compile --precision int8`: QDQ nodes
where a quantizable op is, calibration recorded, run on both engines through the device and the
edge, close to float32 and agreeing on the top class; bad calibration data is a one-line error.
"""

import collections

import numpy as np
import onnx
import pytest
from PIL import Image

from tlcut import cli
from tlcut.runtime import backends
from tlcut.runtime.run import Device
from tlcut.runtime.serve import local_edge

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'tlcut[openvino]')")

SIZES = {"chain": {}, "branches": {}, "residual": {"hw": 16}}


def _run(backend, path, x, name):
    with backends.get(backend).runner(path) as r:
        return next(iter(r.infer({name: x}).values()))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_openvino_matches_onnxruntime_on_every_half(small_bundle, name):
    b = small_bundle(name, input_layout="NCHW", **SIZES[name])
    rng = np.random.default_rng(0)
    x, x2 = (rng.standard_normal(b.inputs[0]["shape"]).astype(np.float32) for _ in range(2))
    ref = _run("onnxrt", b.model_path, x, b.inputs[0]["name"])
    assert np.abs(ref - _run("onnxrt", b.model_path, x2, b.inputs[0]["name"])).max() > 1e-3, "output must move"
    for a in b.artifacts:
        if a.engine != "onnx":
            continue
        feed = rng.standard_normal(a.input["shape"]).astype(np.float32)
        want = _run("onnxrt", b.path / a.file, feed, a.input["name"])
        got = _run("openvino", b.path / a.file, feed, a.input["name"])
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), a.file


@pytest.mark.tf
@pytest.mark.slow
def test_openvino_matches_onnxruntime_on_a_keras_model(keras_bundles):
    from test_keras_models import assert_close, logits_model

    b = keras_bundles("DenseNet121", (64, 64, 3))
    path = b.path / "logits.onnx"
    onnx.save(logits_model(onnx.load(str(b.model_path))), str(path))
    rng = np.random.default_rng(1)
    outs = []
    for _ in range(2):
        x = rng.random(b.inputs[0]["shape"]).astype(np.float32)
        want, got = (_run(be, path, x, b.inputs[0]["name"]) for be in ("onnxrt", "openvino"))
        assert_close(got, want, "DenseNet121 logits, OpenVINO vs ONNX Runtime")
        outs.append(want)
    assert np.abs(outs[0] - outs[1]).max() > 1e-2 * np.abs(outs[0]).max()


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "calib"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_int8_halves_are_qdq_calibrated_and_run_on_both_engines(small_bundle, images):
    b = small_bundle(input_layout="NCHW", **SIZES["residual"])
    assert cli.main(["compile", str(b.path), "--cuts", "0", "--precision", "int8", "--calib", str(images),
                     "--calib-method", "percentile", "--calib-count", "10"]) == 0
    from tlcut.bundle import Bundle

    b = Bundle.open(b.path)
    head = b.find("head", 0, False, precision="int8")
    assert head and head.calibration == {"source": str(images.resolve()), "count": 10, "seed": 0, "method": "percentile", "weight_bits": 7}
    assert b.find("head", 0, False, precision="float32"), "compiling int8 keeps the float32 halves"
    for kind in ("head", "tail"):
        ops = collections.Counter(n.op_type for n in onnx.load(str(b.path / b.find(kind, 0, False, precision="int8").file)).graph.node)
        assert ops["Conv"] >= 1 and ops["QuantizeLinear"] >= 1 and ops["DequantizeLinear"] >= 2, (kind, ops)
        w = [n for n in onnx.load(str(b.path / b.find(kind, 0, False, precision="int8").file)).graph.node
             if n.op_type == "DequantizeLinear"]
        assert any(len(n.input) == 3 for n in w), "weights carry zero points (per-channel int8)"
    x = np.random.default_rng(3).random(b.inputs[0]["shape"]).astype(np.float32)
    x2 = np.random.default_rng(4).random(b.inputs[0]["shape"]).astype(np.float32)
    with Device(b, "device") as ref:
        want = ref.infer(x)[0]
    for be in ("onnxrt", "openvino"):
        with local_edge(b, ["0"], backend=be, precision="int8") as ep, \
                Device(b, "0", edge=ep, backend=be, precision="int8") as dev:
            y, y2 = dev.infer(x)[0], dev.infer(x2)[0]
        err = np.abs(y - want).max() / np.abs(want).max()
        assert 0 < err < 0.05, (be, err)  # quantized, so not identical, but close
        assert np.argmax(y) == np.argmax(want) and np.abs(y - y2).max() > 1e-2


@pytest.mark.parametrize("calib, text", [("{tmp}/missing", "does not exist"), ("{tmp}/empty", "no images")])
def test_bad_calibration_data_is_a_one_line_error(small_bundle, tmp_path, capsys, calib, text):
    b = small_bundle(tl=None, input_layout="NCHW", **SIZES["residual"])
    (tmp_path / "empty").mkdir()
    before = (b.path / "manifest.json").read_text()
    assert cli.main(["compile", str(b.path), "--cuts", "0", "--precision", "int8",
                     "--calib", calib.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlcut: error:") and text in err[0], err
    assert (b.path / "manifest.json").read_text() == before and not (b.path / "halves").exists()


def test_int8_needs_calibration_and_calibration_needs_int8(small_bundle, capsys):
    b = small_bundle(tl=None, input_layout="NCHW", **SIZES["residual"])
    assert cli.main(["compile", str(b.path), "--cuts", "0", "--precision", "int8"]) == 2
    assert "needs calibration images" in capsys.readouterr().err
    assert cli.main(["compile", str(b.path), "--cuts", "0", "--calib", "elpv"]) == 2
    assert "add --precision int8" in capsys.readouterr().err


def _long_graph(path, n=300, size=384):
    """A chain of ``n`` MatMuls: long enough (a second or so on one thread) to be cancelled mid-run."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}" if i < n - 1 else "y"])
             for i in range(n)]
    g = helper.make_graph(nodes, "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return np.ones((size, size), np.float32)


@pytest.mark.parametrize("backend", ["onnxrt", "openvino"])
def test_a_run_cancelled_from_another_thread_stops_and_the_runner_still_serves(tmp_path, backend):
    """A hedged request cancels the local run its edge's answer beat: the run must stop, not hold the
    device's CPU to its end, and the next run must be whole."""
    import threading
    import time

    x = _long_graph(tmp_path / "long.onnx")
    with backends.get(backend).runner(tmp_path / "long.onnx", threads=1) as r:
        t0 = time.perf_counter()
        want = r.infer({"x": x})["y"]
        full = time.perf_counter() - t0
        err = []

        def go():
            try:
                r.infer({"x": x})
            except Exception as e:  # noqa: BLE001
                err.append(e)

        th = threading.Thread(target=go)
        t0 = time.perf_counter()
        th.start()
        time.sleep(full / 10)
        r.cancel()
        th.join()
        took = time.perf_counter() - t0
        assert err, f"the run was not stopped ({full:.3f} s a run)"
        assert took < full / 2, f"cancelled after {full / 10:.3f} s, the run still took {took:.3f} of {full:.3f} s"
        np.testing.assert_allclose(r.infer({"x": x})["y"], want, rtol=1e-5)
        # a cancel that comes before the thread starts its run (the caller's event) stops it too
        stop = threading.Event()
        stop.set()
        t0 = time.perf_counter()
        with pytest.raises(Exception, match="cancelled"):
            r.infer({"x": x}, stop=stop)
        assert time.perf_counter() - t0 < full / 2
        np.testing.assert_allclose(r.infer({"x": x})["y"], want, rtol=1e-5)
