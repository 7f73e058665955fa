"""`tlcut train` and `tlcut retrain`: the baseline classifier, and the model retrained with the TL.

The paper's Preprocessor in three steps:

- Inserter (``insert_tl``): the model with DeviceTL and EdgeTL at a cut, as Keras layers that
  compute exactly what the graph surgery inserts, for the kind asked (tlcut/transfer/): for the
  paper's pool, MaxPool2D(2, padding="same") pads an odd last row/column, UpSampling2D(2) repeats
  nearest neighbours, Cropping2D takes the padding back off.
- Trainer (``fit``): fine-tunes that TLModel. The pool TL has no weights, so the layers around it
  learn to live with the pooled features; a learned bottleneck starts as the principal components
  of real feature maps at the cut (the least-squares linear code) and trains with the rest.
- Splitter (``retrain``): the TLModel's other weights are the base model's (the TL layers share
  them), so the retrained base model is exported as a bundle and cut at the same tensor with
  tlcut's own surgery: the device half ends with DeviceTL, the edge half starts with EdgeTL; a
  learned TL's weights go into the bundle beside it (``transfer.record``). The halves are checked
  against the Keras TLModel before the bundle is called done.

Inputs are float32 in [0, 1] (as `tlcut run --images` feeds them). Training uses Adam, random
flips of the solar-cell images, and early stopping on validation accuracy with the best weights
restored; the test split is used only for the final report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tlcut import transfer
from tlcut.errors import TlcutError

REPORT_SUFFIX = ".json"


def _tf():
    from tlcut.quiet import import_keras

    try:
        keras = import_keras()
        import tensorflow as tf
    except ImportError:
        raise TlcutError("training needs TensorFlow; install it with `pip install 'tlcut[tf]'`") from None
    return tf, keras


def _xy(split):
    return split.x.astype(np.float32) / 255.0, split.y


def _pipeline(tf, split, batch: int, shuffle: bool, seed: int, augment: bool = True):
    x, y = _xy(split)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        if augment:
            ds = ds.map(_augment(tf, x.shape[1] == x.shape[2]), num_parallel_calls=2)
    return ds.batch(batch).prefetch(2)


def _augment(tf, square: bool):
    """EL images of cells have no preferred orientation (flips, quarter turns when square, a small
    tilt) and vary in exposure between cameras (brightness, contrast); labels are unchanged by all."""
    import math

    def aug(a, b):
        a = tf.image.random_flip_left_right(a)
        a = tf.image.random_flip_up_down(a)
        if square:
            a = tf.image.rot90(a, tf.random.uniform([], 0, 4, tf.int32))
        t = tf.random.uniform([], -1.0, 1.0) * (5.0 * math.pi / 180)  # up to 5 degrees, edges reflected
        c, s_ = tf.cos(t), tf.sin(t)
        h, w = tf.cast(tf.shape(a)[0], tf.float32), tf.cast(tf.shape(a)[1], tf.float32)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        m = [c, -s_, cx - c * cx + s_ * cy, s_, c, cy - s_ * cx - c * cy, 0.0, 0.0]
        a = tf.raw_ops.ImageProjectiveTransformV3(images=a[None], transforms=tf.reshape(tf.stack(m), [1, 8]),
                                                  output_shape=tf.shape(a)[:2], fill_value=0.0,
                                                  interpolation="BILINEAR", fill_mode="REFLECT")[0]
        a = a * tf.random.uniform([], 0.8, 1.2) + tf.random.uniform([], -0.1, 0.1)  # contrast, brightness
        return tf.clip_by_value(a, 0.0, 1.0), b

    return aug


def class_weights(y: np.ndarray, n: int, balance: str) -> dict | None:
    """Loss weights per class: none, sqrt (inverse square root of frequency) or balanced (inverse)."""
    if balance == "none":
        return None
    if balance not in ("sqrt", "balanced"):
        raise TlcutError(f"--balance must be none, sqrt or balanced, got '{balance}'")
    counts = np.bincount(y, minlength=n).astype(np.float64)
    if (counts == 0).any():
        raise TlcutError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training images, which --balance "
                         f"{balance} cannot weigh; use more images (a larger --limit) or --balance none")
    w = (counts.sum() / counts) ** (0.5 if balance == "sqrt" else 1.0)
    w = w / (w * counts).sum() * counts.sum()  # mean weight per image stays 1, so the learning rate means the same
    return {k: float(v) for k, v in enumerate(w)}


def check_classifier(model, n_classes: int) -> None:
    out = model.outputs
    if len(out) != 1 or len(out[0].shape) != 2:
        raise TlcutError(f"model '{model.name}' has no classifier head (its output is "
                         f"{[tuple(o.shape) for o in out]}); it must end in (batch, classes)")
    if out[0].shape[-1] != n_classes:
        raise TlcutError(f"model '{model.name}' outputs {out[0].shape[-1]} classes, the data has {n_classes}")


def check_recipe(epochs: int, lr: float, warmup: int = 0, weight_decay: float = 0.0, label_smoothing: float = 0.0,
                 **_) -> None:
    """Refuse a recipe that cannot train before any time is spent on it."""
    bad = [(epochs < 1, f"--epochs must be at least 1, got {epochs}"), (not lr > 0, f"--lr must be positive, got {lr:g}"),
           (not 0 <= warmup < epochs, f"--warmup must be at least 0 and fewer than --epochs ({epochs}), got {warmup}"),
           (weight_decay < 0, f"--weight-decay must be 0 or more, got {weight_decay:g}"),
           (not 0 <= label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {label_smoothing:g}")]
    for failed, why in bad:
        if failed:
            raise TlcutError(why)


def fit(model, data, *, epochs: int, lr: float, batch: int = 32, patience: int = 4, seed: int = 0, verbose=None,
        balance: str = "none", schedule: str = "constant", warmup: int = 0, weight_decay: float = 0.0,
        label_smoothing: float = 0.0, augment: bool = True) -> dict:
    """Train ``model`` on ``data.train``, stop on ``data.val`` accuracy, restore the best epoch.

    ``schedule`` 'cosine' warms up linearly for ``warmup`` epochs and decays to zero at ``epochs``,
    so a run converges by its last epoch instead of hoping early stopping catches a good one."""
    check_recipe(epochs, lr, warmup, weight_decay, label_smoothing)
    tf, keras = _tf()
    keras.utils.set_random_seed(seed)
    check_classifier(model, len(data.classes))
    steps = -(-len(data.train) // batch)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warmup else lr, decay_steps=max(1, (epochs - warmup) * steps),
                                                      warmup_target=lr if warmup else None, warmup_steps=warmup * steps)
    elif schedule == "constant":
        rate = lr
    else:
        raise TlcutError(f"--schedule must be constant or cosine, got '{schedule}'")
    opt = keras.optimizers.AdamW(rate, weight_decay=weight_decay) if weight_decay else keras.optimizers.Adam(rate)
    n = len(data.classes)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
    onehot = lambda ds: ds.map(lambda a, b: (a, tf.one_hot(b, n)))  # noqa: E731  (label smoothing needs one-hot)
    t0 = time.perf_counter()
    hist = model.fit(onehot(_pipeline(tf, data.train, batch, True, seed, augment)),
                     validation_data=onehot(_pipeline(tf, data.val, batch, False, seed)), epochs=epochs, callbacks=[stop],
                     class_weight=class_weights(data.train.y, n, balance),
                     verbose=verbose if verbose is not None else (1 if os.isatty(2) else 2))
    seconds = time.perf_counter() - t0
    val = hist.history["val_accuracy"]
    return {"epochs_run": len(val), "best_epoch": int(np.argmax(val)) + 1, "best_val_accuracy": float(max(val)),
            "train_seconds": seconds, "lr": lr, "batch": batch, "optimizer": "AdamW" if weight_decay else "Adam",
            "schedule": schedule, "warmup_epochs": warmup, "weight_decay": weight_decay, "balance": balance,
            "label_smoothing": label_smoothing, "augment": "flips, quarter turns, 5 deg tilt, brightness, contrast"
            if augment else "none", "seed": seed}


def accuracy(model, split, batch: int = 64) -> float:
    x, y = _xy(split)
    p = model.predict(x, batch_size=batch, verbose=0)
    return float(np.mean(p.argmax(axis=1) == y))


def insert_tl(model, layer_name: str, tl="pool", weights: dict | None = None):
    """The TLModel: ``model`` with DeviceTL + EdgeTL of kind ``tl`` after layer ``layer_name``
    (shares its weights); a learned kind starts from ``weights`` where given."""
    kind = transfer.parse(tl)
    _, keras = _tf()
    L = keras.layers
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise TlcutError(f"model '{model.name}' has no layer '{layer_name}'; cut at a layer listed by `tlcut cuts`") from None
    t = layer.output
    if len(t.shape) != 4 or t.shape[1] < 2 or t.shape[2] < 2:
        raise TlcutError(f"the TL cannot apply after layer '{layer_name}' (output {tuple(t.shape)}): it needs an "
                         "NHWC feature map of at least 2x2; choose a cut where `tlcut cuts` says the TL applies")
    try:
        tail = keras.Model(t, model.outputs, name="tail")
    except Exception:
        raise TlcutError(f"layer '{layer_name}' is not a single-tensor cut of the Keras model (the rest of the "
                         "model needs more than its output); choose a cut from `tlcut cuts`") from None
    kind.check_fits(tuple(int(d or 1) for d in t.shape), "NHWC")
    head = keras.Model(model.inputs, t, name="head")
    x = keras.Input(shape=model.input_shape[1:], name=model.inputs[0].name.split(":")[0] if model.inputs else "image")
    h, w, c = int(t.shape[1]), int(t.shape[2]), int(t.shape[3])
    y = head(x)
    for layer in kind.keras_device(keras, c) + kind.keras_edge(keras, c):
        y = layer(y)
    if kind.halves and (h % 2 or w % 2):
        y = L.Cropping2D(((0, h % 2), (0, w % 2)), name="edge_tl_crop")(y)
    tlm = keras.Model(x, tail(y), name=f"{model.name}_tl_{layer_name}")
    kind.set_keras_weights(tlm, weights)
    return tlm


def initial_tl_weights(model, layer_name: str, tl, split, n: int = 256) -> dict | None:
    """A learned kind's starting weights: the principal components of the feature maps after
    ``layer_name`` on up to ``n`` images of ``split`` (None for a kind without weights)."""
    kind = transfer.parse(tl)
    if not kind.has_weights:
        return None
    _, keras = _tf()
    head = keras.Model(model.inputs, model.get_layer(layer_name).output)
    return kind.init_weights(head.predict(_xy(split)[0][:n], batch_size=64, verbose=0))


def save_keras(model, path, report: dict) -> None:
    """Save the model and, beside it, the report export copies into the bundle's manifest."""
    path = Path(path)
    if path.suffix != ".keras":
        raise TlcutError(f"save the model as a .keras file, got '{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    Path(str(path) + REPORT_SUFFIX).write_text(json.dumps(report, indent=1) + "\n")


# The baseline's recipe (`tlcut train`); docs/training.md says why each is there.
RECIPE = {"epochs": 40, "lr": 2e-3, "schedule": "cosine", "warmup": 2, "weight_decay": 0.01, "label_smoothing": 0.1,
          "balance": "sqrt"}
# Fine-tuning with the TL (`tlcut retrain`): the same data handling, a shorter, gentler schedule.
RETRAIN_RECIPE = {"epochs": 12, "lr": 5e-4, "schedule": "cosine", "warmup": 0, "weight_decay": 0.01,
                  "label_smoothing": 0.1}


def train(model: str, data: str, out, *, size: int = 128, channels: int = 1, task: str = "grade",
          batch: int = 32, seed: int = 0, patience: int | None = None, limit: int | None = None,
          say=print, **recipe) -> dict:
    """Baseline: train ``model`` (zoo name or .keras file) on ``data``; save it and its report at ``out``."""
    from tlcut.models import datasets
    from tlcut.toolchain.convert import load_keras

    given = {k: v for k, v in recipe.items() if v is not None}
    recipe = {**RECIPE, **given}
    if "warmup" not in given:  # the default warm-up shrinks to fit a short run
        recipe["warmup"] = max(0, min(recipe["warmup"], recipe["epochs"] - 1))
    check_recipe(**recipe)
    if Path(out).suffix != ".keras":  # before the training, not after it
        raise TlcutError(f"save the model as a .keras file, got '{out}'")
    ds = datasets.load(data, size=size, channels=channels, task=task, seed=seed, limit=limit)
    say(f"[train] {ds.describe()}")
    _tf()
    km, source = load_keras(model, input_shape=(size, size, channels), classes=len(ds.classes))
    if tuple(km.input_shape[1:]) != ds.train.x.shape[1:]:
        raise TlcutError(f"model input {tuple(km.input_shape[1:])} does not fit the images {ds.train.x.shape[1:]}; "
                         "set --size/--channels to match")
    say(f"[train] {km.name}: {km.count_params():,} parameters, {recipe['epochs']} epochs")
    info = fit(km, ds, batch=batch, patience=patience or recipe["epochs"], seed=seed, **recipe)
    test = accuracy(km, ds.test)
    report = {"kind": "baseline", "model": source["name"], "classes": ds.classes,
              "data": {**ds.info, "task": task, "source_arg": data}, "training": info, "test_accuracy": test,
              "val_accuracy": info["best_val_accuracy"], "majority_class_rate": ds.majority_rate()}
    save_keras(km, out, report)
    say(f"[train] test accuracy {test:.4f} (majority class {report['majority_class_rate']:.4f}); "
        f"{info['train_seconds']:.0f} s; saved {out}")
    return report


def retrain(model_file: str, cut: str, out_bundle, *, tl="pool", data: str | None = None, batch: int = 32,
            patience: int | None = None, limit: int | None = None, force: bool = False, say=print, **recipe) -> dict:
    """Inserter, Trainer and Splitter: a bundle whose cut ``cut`` carries the TL of kind ``tl``, retrained."""
    from tlcut.bundle import check_replaceable
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.convert import load_keras
    from tlcut.toolchain.export import export

    kind = transfer.parse(tl)  # before the training, not after it
    if Path(out_bundle).exists():
        check_replaceable(out_bundle)  # --force replaces a bundle, never the user's other files
        if not force:
            raise TlcutError(f"'{out_bundle}' already exists; choose another -o or pass --force to replace it")
    base_report, dargs, ds, recipe = _fine_tuning(model_file, data, limit, recipe)
    km, _ = load_keras(model_file)
    layer = _layer_for(cut, km)
    tlm = insert_tl(km, layer, kind)  # refuses a cut or width that does not fit before any work
    kind.set_keras_weights(tlm, initial_tl_weights(km, layer, kind, ds.train))
    say(f"[retrain] TL {kind.name} inserted after '{layer}'; {ds.describe()}")
    before = accuracy(tlm, ds.test)
    info = fit(tlm, ds, batch=batch, patience=patience or recipe["epochs"], seed=dargs["seed"], **recipe)
    after = accuracy(tlm, ds.test)
    say(f"[retrain] test accuracy with TL: {before:.4f} before, {after:.4f} after retraining ({info['train_seconds']:.0f} s)")
    out_bundle = Path(out_bundle)
    keras_out = out_bundle.with_name(out_bundle.name + ".retrained.keras")
    report = {"kind": "tl-retrained", "base": str(model_file), "layer": layer, "tl": kind.name, "classes": ds.classes,
              "data": base_report.get("data", {**ds.info}), "training": info, "test_accuracy_tl_before": before,
              "test_accuracy": after}
    save_keras(km, keras_out, report)
    b = export(str(keras_out), out_bundle, force=force, progress=say)
    c = b.cut(layer)
    if c.layer != layer or not c.tl:
        raise TlcutError(f"the exported model has no TL cut at layer '{layer}'")
    c = transfer.record(b, c, kind, kind.keras_weights(tlm),
                        {"test_accuracy": after, "init": "principal components" if kind.has_weights else None})
    compile_cuts(b, [c], tl="both")
    diff = _check_split(b, c, tlm, ds.test.x[:8])
    b.manifest["source"]["training"] = {**report, "tl_cut": c.index, "split_max_abs_diff": diff}
    b.save_manifest()
    say(f"[retrain] bundle {out_bundle}: cut {c.index} ({layer}) + {kind.name}, {c.tl_bytes} B a frame (float32; "
        f"{c.bytes} B without the TL); deployed halves vs Keras TLModel max abs diff {diff:.1e}")
    return {**report, "bundle": str(out_bundle), "cut": c.index, "split_max_abs_diff": diff}


def fine_tune(model_file: str, out, *, data: str | None = None, batch: int = 32, patience: int | None = None,
              limit: int | None = None, say=print, **recipe) -> dict:
    """The control for ``retrain``: the same fine-tuning of the same baseline, without the TL.

    Retraining with the TL also trains the model for more epochs; set against this model (not only the
    baseline), a change is what the TL costs, not what the extra epochs gave."""
    from tlcut.toolchain.convert import load_keras

    if Path(out).suffix != ".keras":  # before the training, not after it
        raise TlcutError(f"save the model as a .keras file, got '{out}'")
    base_report, dargs, ds, recipe = _fine_tuning(model_file, data, limit, recipe)
    km, _ = load_keras(model_file)
    say(f"[fine-tune] without the TL (the control); {ds.describe()}")
    info = fit(km, ds, batch=batch, patience=patience or recipe["epochs"], seed=dargs["seed"], **recipe)
    test = accuracy(km, ds.test)
    report = {"kind": "fine-tuned", "base": str(model_file), "model": base_report.get("model"), "classes": ds.classes,
              "data": base_report.get("data", {**ds.info}), "training": info, "test_accuracy": test,
              "majority_class_rate": ds.majority_rate()}
    save_keras(km, out, report)
    say(f"[fine-tune] test accuracy {test:.4f} ({info['train_seconds']:.0f} s); saved {out}")
    return report


def _fine_tuning(model_file, data, limit, recipe):
    """What retraining and its control share: the baseline's report, its data split and the recipe."""
    from tlcut.models import datasets

    rep_path = Path(str(model_file) + REPORT_SUFFIX)
    base_report = json.loads(rep_path.read_text()) if rep_path.is_file() else {}
    dargs = datasets.data_args(base_report)
    data = data or base_report.get("data", {}).get("source_arg", "elpv")
    recipe = {**RETRAIN_RECIPE, "balance": base_report.get("training", {}).get("balance", "none"),
              **{k: v for k, v in recipe.items() if v is not None}}
    check_recipe(**recipe)
    return base_report, dargs, datasets.load(data, limit=limit, **dargs), recipe


def _layer_for(cut: str, km) -> str:
    names = {layer.name for layer in km.layers}
    if cut in names:
        return cut
    raise TlcutError(f"'{cut}' is not a layer of '{km.name}'; give the Keras layer of a cut (the layer column of `tlcut cuts`)")


def _check_split(bundle, cut, tlm, images) -> float:
    """Deployed halves (ONNX, with tlcut's TL) against the Keras TLModel on real images."""
    import onnxruntime as ort

    from tlcut.toolchain import surgery

    head = ort.InferenceSession(str(bundle.runnable("head", cut.index, True)), providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(bundle.runnable("tail", cut.index, True)), providers=["CPUExecutionProvider"])
    worst = 0.0
    for im in images:
        x = (im[None].astype(np.float32) / 255.0)
        p = head.run(None, {bundle.inputs[0]["name"]: x})[0]
        y = tail.run(None, {surgery.PAYLOAD_TL: p})[0]
        worst = max(worst, float(np.abs(y - np.asarray(tlm(x, training=False))).max()))
    if worst > 1e-4:
        raise TlcutError(f"the split halves differ from the Keras TLModel by {worst:.2e}; this is a tlcut bug, please report it")
    return worst
