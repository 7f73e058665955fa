"""Real Keras Applications architectures (random weights, small inputs): export, cut, compose.

For a DenseNet, a ResNet and an Inception model, several cuts spread over the network: head then
tail equals the full model on the logits (the softmax's input: softmax outputs of random weights
are near-uniform, so a difference hides there), with Polygraphy-style tolerances (an element fails
only if both its absolute and its relative error are over), and the logits must move with the input
or the comparison proves nothing. With the TL the halves load, shapes match and the payload is a
quarter of the cut tensor, rounded up for odd sizes.
"""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tlcut.toolchain import surgery

pytestmark = [pytest.mark.tf, pytest.mark.slow]

MODELS = [("DenseNet121", (64, 64, 3)), ("ResNet50", (64, 64, 3)), ("InceptionV3", (75, 75, 3))]


def _sess(m):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


RTOL = 1e-4  # relative to each element, and (as the absolute floor) to the largest element


logits_model = surgery.logits


def assert_close(got, want, what):
    """Polygraphy-style: an element fails only if over both the absolute and the relative tolerance;
    the absolute one scales with the output, since random-weight logits can be around 1e-3."""
    atol = RTOL * float(np.abs(want).max())
    bad = (np.abs(got - want) > atol) & (np.abs(got - want) > RTOL * np.abs(want))
    assert not bad.any(), f"{what}: {bad.sum()} elements off, max abs diff {np.abs(got - want).max():.3g}"


def _spread(cuts, n=6):
    idx = sorted(set(np.linspace(0, len(cuts) - 1, n).round().astype(int)))
    return [cuts[i] for i in idx]


@pytest.mark.parametrize("name, shape", MODELS)
def test_halves_compose_to_the_full_model(keras_bundles, name, shape):
    b = keras_bundles(name, shape)
    model = logits_model(onnx.load(str(b.model_path)))
    inp = b.inputs[0]
    assert inp["layout"] == "NHWC" and inp["shape"] == [1, *shape]
    rng = np.random.default_rng(0)
    x, x2 = (rng.random(inp["shape"]).astype(np.float32) for _ in range(2))
    full = _sess(model)
    ref = full.run(None, {inp["name"]: x})[0]
    moved = np.abs(ref - full.run(None, {inp["name"]: x2})[0]).max() / np.abs(ref).max()
    assert moved > 100 * RTOL, f"{name}: logits move by {moved:.2g} of their size with the input; the check would prove nothing"
    cuts = _spread(b.cuts)
    assert len(cuts) >= 5
    for c in cuts:
        mid = _sess(surgery.head(model, c)).run(None, {inp["name"]: x})[0]
        assert mid.shape == c.shape
        y = _sess(surgery.tail(model, c)).run(None, {c.tensor: mid})[0]
        assert_close(y, ref, f"{name} cut {c.index} ({c.tensor})")


@pytest.mark.parametrize("name, shape", MODELS)
def test_tl_halves_load_and_shrink_the_payload_to_a_quarter(keras_bundles, name, shape):
    b = keras_bundles(name, shape)
    model = onnx.load(str(b.model_path))
    inp = b.inputs[0]
    x = np.random.default_rng(0).random(inp["shape"]).astype(np.float32)
    tl_cuts = [c for c in b.cuts if c.tl]
    assert tl_cuts, f"{name}: no cut takes the TL"
    checked_odd = False
    for c in _spread(tl_cuts, 5):
        payload = _sess(surgery.head(model, c, tl=True)).run(None, {inp["name"]: x})[0]
        assert payload.shape == c.tl_shape
        h_ax, w_ax = (2, 3) if c.layout == "NCHW" else (1, 2)
        h, w = c.shape[h_ax], c.shape[w_ax]
        checked_odd |= bool(h % 2 or w % 2)
        want = c.bytes // (h * w) * math.ceil(h / 2) * math.ceil(w / 2)
        assert payload.nbytes == want == c.tl_bytes
        y = _sess(surgery.tail(model, c, tl=True)).run(None, {surgery.PAYLOAD_TL: payload})[0]
        assert y.shape == tuple(b.outputs[0]["shape"]) and np.isfinite(y).all()
    if name == "InceptionV3":
        assert checked_odd, "InceptionV3 at 75x75 has odd maps; the sample should include one"


def test_cut_layers_map_back_to_keras_layers(keras_bundles):
    b = keras_bundles("ResNet50", (64, 64, 3))
    layers = [c.layer for c in b.cuts]
    assert all(layers), "every cut of a Keras model names its layer"
    # ResNet cuts fall only between residual blocks, never inside one
    assert "conv2_block1_out" in layers and "conv3_block4_out" in layers
    assert not any(l.startswith("conv2_block1_1") for l in layers)


def test_saved_keras_file_exports_and_matches_keras(tmp_path):
    from tlcut.models import zoo
    from tlcut.toolchain.export import export

    km = zoo.build("TinyBranchNet")
    f = tmp_path / "tiny.keras"
    km.save(f)
    b = export(str(f), tmp_path / "b", progress=lambda *_: None)
    assert b.manifest["source"]["kind"] == "keras-file"
    assert b.manifest["validation"]["max_abs_diff"] <= 1e-5
    rng = np.random.default_rng(5)
    sess = ort.InferenceSession(logits_model(onnx.load(str(b.model_path))).SerializeToString())
    import keras

    pre = keras.Model(km.inputs, km.get_layer("gap").output)
    w, bias = km.get_layer("predictions").get_weights()
    outs = []
    for _ in range(2):
        x = rng.random((1, 30, 30, 3)).astype(np.float32)
        got = sess.run(None, {b.inputs[0]["name"]: x})[0]
        want = np.asarray(pre(x, training=False)) @ w + bias  # the Dense layer before its softmax
        assert_close(got, want, "TinyBranchNet logits vs Keras")
        outs.append(got)
    assert np.abs(outs[0] - outs[1]).max() > 100 * RTOL * np.abs(outs[0]).max(), "logits must move with the input"
    assert {"stem_pool", "res_add", "inc_concat"} <= {c.layer for c in b.cuts}
    assert not any(c.layer in ("inc_a", "inc_b", "inc_c", "res_conv1") for c in b.cuts), "no cut inside a branch"


def test_corrupt_keras_file_is_a_clear_error(tmp_path, capsys):
    from tlcut import cli

    f = tmp_path / "broken.keras"
    f.write_bytes(b"PK\x03\x04 not really a zip")
    assert cli.main(["export", str(f), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "tlcut: error: cannot load Keras model" in err and not (tmp_path / "b").exists()
