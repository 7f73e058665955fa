"""Train, insert the TL, retrain, split and evaluate on a tiny synthetic image folder (TensorFlow)."""

import json

import numpy as np
import pytest
from PIL import Image

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.placement import Placement

pytestmark = pytest.mark.tf


PER_CLASS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two classes a CNN tells apart in a few epochs, whatever the augmentation (flips, quarter
    turns, brightness) does to them: a bright square somewhere on dark noise, or the noise alone."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for cls in ("blob", "plain"):
        (root / cls).mkdir()
        for i in range(PER_CLASS):
            a = rng.integers(0, 60, (32, 32), dtype=np.uint8)
            if cls == "blob":
                y, x = rng.integers(2, 18, 2)
                a[y:y + 12, x:x + 12] = 230
            Image.fromarray(a).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    from tlcut.toolchain.train import train

    out = tmp_path_factory.mktemp("m") / "m.keras"
    # batch 4: enough steps in four epochs for BatchNorm's moving statistics to follow the weights
    rep = train("InspectNet", str(data), out, size=30, epochs=4, batch=4, seed=0, say=lambda *_: None)
    return out, rep


def test_train_learns_and_reports_what_the_exported_model_scores(trained, tmp_path):
    """The model learned the classes (a model that learned nothing scores the majority rate, 0.5
    here), and the reported test accuracy is the one the exported model gets through the runtime."""
    from tlcut.toolchain.eval import evaluate
    from tlcut.toolchain.export import export

    out, rep = trained
    assert out.is_file()
    saved = json.loads(out.with_name(out.name + ".json").read_text())
    assert saved["classes"] == ["blob", "plain"]
    assert saved["data"]["size"] == 30 and saved["data"]["split_sha256"]
    assert saved["majority_class_rate"] == 0.5
    b = export(str(out), tmp_path / "b", progress=lambda *_: None)
    got = evaluate(b, Placement.resolve(b, "device"))
    assert got["n"] == 2 * round(PER_CLASS * saved["data"]["fractions"][2])  # the test split, each class's share
    assert abs(got["accuracy"] - saved["test_accuracy"]) <= 1 / got["n"] + 1e-9, (got, saved["test_accuracy"])
    assert got["accuracy"] >= saved["majority_class_rate"] + 0.25, (got, saved["training"])


def test_tl_model_equals_the_deployed_halves_and_evaluates(trained, tmp_path, data):
    from tlcut.toolchain.eval import evaluate
    from tlcut.toolchain.train import retrain

    out, _ = trained
    # s1_pool is 15x15 here: the odd size takes the pad-and-crop path
    r = retrain(str(out), "s1_pool", tmp_path / "b", epochs=1, say=lambda *_: None)
    assert r["split_max_abs_diff"] <= 1e-4
    b = Bundle.open(tmp_path / "b")
    c = b.cuts[r["cut"]]
    assert c.layer == "s1_pool" and c.tl and c.tl_shape[2:] == (8, 8)
    assert b.manifest["source"]["training"]["kind"] == "tl-retrained"
    res = {enc: evaluate(b, Placement.resolve(b, "s1_pool", True, enc)) for enc in ("raw", "float16", "int8")}
    raw = res["raw"]["payload_bytes"] - 80
    assert raw == c.tl_bytes
    assert res["float16"]["payload_bytes"] - 80 == raw // 2 and res["int8"]["payload_bytes"] - 80 == raw // 4
    # the deployed halves score what the retrained Keras model scored (one image either way for a
    # near tie), and float16 / int8 on the wire move it by at most a few images
    n = res["raw"]["n"]
    assert abs(res["raw"]["accuracy"] - r["test_accuracy"]) <= 1 / n + 1e-9, (res["raw"], r["test_accuracy"])
    for enc in ("float16", "int8"):
        assert res[enc]["n"] == n and abs(res[enc]["accuracy"] - res["raw"]["accuracy"]) <= 2 / n + 1e-9
    # the test-split accuracies are recorded in the bundle, for `plan --max-accuracy-drop`
    rec = {r["label"]: r for r in Bundle.open(b.path).accuracy if r["precision"] == "float32"}
    assert rec["cut %d + TL, int8" % c.index]["accuracy"] == res["int8"]["accuracy"]
    assert rec["cut %d + TL" % c.index]["n"] == n and rec["cut %d + TL" % c.index]["tl_kind"] == "pool"


def test_the_control_is_fine_tuned_with_the_retrain_recipe_and_no_tl(trained, tmp_path):
    """The control trains the baseline's own layers (no TL layer in it) with the retraining recipe, and
    leaves the baseline file as it was."""
    import keras

    from tlcut.toolchain.train import RETRAIN_RECIPE, fine_tune

    out, _ = trained
    before = out.read_bytes()
    rep = fine_tune(str(out), tmp_path / "c.keras", epochs=2, say=lambda *_: None)
    assert out.read_bytes() == before
    assert rep["kind"] == "fine-tuned" and rep["training"]["epochs_run"] == 2
    assert rep["training"]["lr"] == RETRAIN_RECIPE["lr"] and rep["training"]["balance"] == "sqrt"
    base, ctl = keras.models.load_model(out), keras.models.load_model(tmp_path / "c.keras")
    assert [x.name for x in ctl.layers] == [x.name for x in base.layers]
    moved = [w.name for w, v in zip(base.weights, ctl.weights) if not np.array_equal(w.numpy(), v.numpy())]
    assert moved, "fine-tuning changed no weight"
    with pytest.raises(TlcutError, match="--epochs must be at least 1"):
        fine_tune(str(out), tmp_path / "d.keras", epochs=0, say=lambda *_: None)
    assert not (tmp_path / "d.keras").exists()
    with pytest.raises(TlcutError, match="save the model as a .keras file"):  # refused before it trains
        fine_tune(str(out), tmp_path / "e.h5", epochs=50, say=lambda *_: None)
    assert not list(tmp_path.glob("e.*"))


def test_bad_cuts_and_models(trained, tmp_path):
    from tlcut.models import zoo
    from tlcut.toolchain.train import check_classifier, insert_tl

    out, _ = trained
    import keras

    m = keras.models.load_model(out)
    with pytest.raises(TlcutError, match="TL cannot apply"):
        insert_tl(m, "gap")
    with pytest.raises(TlcutError, match="no layer"):
        insert_tl(m, "nope")
    headless = keras.Model(m.inputs, m.get_layer("s4_pool").output)
    with pytest.raises(TlcutError, match="no classifier head"):
        check_classifier(headless, 2)
    with pytest.raises(TlcutError, match="outputs 4 classes"):
        check_classifier(zoo.build("InspectNet", input_shape=(30, 30, 1), classes=4), 2)


def test_class_weights_keep_the_mean_and_favour_rare_classes():
    from tlcut.toolchain.train import class_weights

    y = np.array([0] * 90 + [1] * 10)
    assert class_weights(y, 2, "none") is None
    for kind, ratio in (("sqrt", 3.0), ("balanced", 9.0)):
        w = class_weights(y, 2, kind)
        assert w[1] / w[0] == pytest.approx(ratio)
        assert (90 * w[0] + 10 * w[1]) / 100 == pytest.approx(1.0)  # the loss's scale is unchanged
    with pytest.raises(TlcutError, match="no training images"):
        class_weights(y, 3, "sqrt")
    with pytest.raises(TlcutError, match="--balance"):
        class_weights(y, 2, "inverse")


def test_augmentation_keeps_images_in_range_and_moves_them():
    import tensorflow as tf

    from tlcut.toolchain.train import _augment

    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 1)).astype(np.float32)
    aug = _augment(tf, True)
    outs = [aug(tf.constant(x), 0)[0].numpy() for _ in range(8)]
    for o in outs:
        assert o.shape == x.shape and o.min() >= 0.0 and o.max() <= 1.0
    assert max(float(np.abs(o - x).mean()) for o in outs) > 0.05  # it does change the image


@pytest.mark.parametrize("bad,match", [({"epochs": 0}, "--epochs"), ({"lr": -1.0}, "--lr"), ({"warmup": 3, "epochs": 3}, "--warmup"),
                                       ({"weight_decay": -0.1}, "--weight-decay"), ({"label_smoothing": 1.0}, "--label-smoothing")])
def test_a_recipe_that_cannot_train_is_refused_before_any_work(bad, match, tmp_path, data):
    from tlcut.toolchain.train import train

    with pytest.raises(TlcutError, match=match):
        train("InspectNet", str(data), tmp_path / "m.keras", size=30, say=lambda *_: None, **bad)
    with pytest.raises(TlcutError, match=r"\.keras file"):
        train("InspectNet", str(data), tmp_path / "m.h5", size=30, epochs=1, say=lambda *_: None)
    assert not list(tmp_path.iterdir())
