"""Architectures by name: every `keras.applications` constructor, plus tlcut's own small models.

Weights are random: nothing is downloaded. Latency work needs only the architecture; accuracy work
trains its own weights.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# tlcut's own models: small enough for tests, with the features cut enumeration must handle.
OWN = ("TinyBranchNet", "InspectNet")


def _keras():
    from tlcut.quiet import import_keras

    return import_keras()


def keras_application_names() -> list[str]:
    """The constructors of `keras.applications`, read from Keras's generated API file where there is
    one: importing Keras loads TensorFlow (seconds, and its start-up lines) just to list names."""
    spec = importlib.util.find_spec("keras")
    api = Path(spec.origin).parent / "applications" / "__init__.py" if spec and spec.origin else None
    if api and api.is_file():
        names = set(re.findall(r"\b([A-Z]\w*) as \1\b", api.read_text()))
        if names:
            return sorted(names)
    apps = _keras().applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def names() -> list[str]:
    return sorted(keras_application_names() + list(OWN))


# Input sizes for architectures whose Keras constructor leaves the spatial size open without
# pretrained weights (MobileNetV3 builds at (None, None, 3)); an export needs a static size, and
# 224x224 is the size ImageNet weights are published for.
DEFAULT_INPUT_SHAPES = {"MobileNetV3Small": (224, 224, 3), "MobileNetV3Large": (224, 224, 3)}


def build(name: str, input_shape=None, classes: int | None = None):
    """Build ``name`` with random weights. ``input_shape`` is (H, W, C) without the batch."""
    keras = _keras()
    if name == "TinyBranchNet":
        return tiny_branch_net(input_shape or (30, 30, 3), classes or 10)
    if name == "InspectNet":
        return inspect_net(input_shape or (128, 128, 1), classes or 4)
    ctor = getattr(keras.applications, name)
    kwargs = {"weights": None}
    input_shape = input_shape or DEFAULT_INPUT_SHAPES.get(name)
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if classes is not None:
        kwargs["classes"] = classes
    try:
        return ctor(**kwargs)
    except ValueError as e:
        from tlcut.errors import TlcutError

        raise TlcutError(f"cannot build {name}: {str(e).splitlines()[0][:200]}") from None


def tiny_branch_net(input_shape=(30, 30, 3), classes: int = 10):
    """A few thousand parameters with a residual add, a concat of parallel branches and odd maps.

    30x30 -> 15x15 (odd: the TL must pad and crop) -> 8x8 -> 4x4 -> pooled -> dense.
    """
    keras = _keras()
    L = keras.layers
    x_in = keras.Input(shape=tuple(input_shape), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem_conv")(x_in)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    x = L.MaxPooling2D(2, name="stem_pool")(x)  # 15x15
    # residual block
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="res_conv1")(x)
    y = L.Conv2D(8, 3, padding="same", name="res_conv2")(y)
    x = L.Add(name="res_add")([x, y])
    x = L.ReLU(name="res_relu")(x)
    # inception-style block with three parallel branches
    a = L.Conv2D(4, 1, name="inc_a")(x)
    b = L.Conv2D(4, 3, padding="same", name="inc_b")(x)
    c = L.MaxPooling2D(3, strides=1, padding="same", name="inc_c_pool")(x)
    c = L.Conv2D(4, 1, name="inc_c")(c)
    x = L.Concatenate(name="inc_concat")([a, b, c])
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down_conv")(x)  # 8x8
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down_conv2")(x)  # 4x4
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(x_in, x, name="tiny_branch_net")


def inspect_net(input_shape=(128, 128, 1), classes: int = 4, width: int = 16):
    """A compact VGG-style CNN for surface inspection, trainable from scratch on two CPU cores.

    Four stages of two 3x3 conv + BN + ReLU, each halving the map (128 -> 64 -> 32 -> 16 -> 8), then
    global average pooling and a softmax. Each stage ends in a single tensor, so every pooling
    output is a cut where the TL applies (64x64 down to 8x8 maps).
    """
    keras = _keras()
    L = keras.layers
    x_in = keras.Input(shape=tuple(input_shape), name="image")
    x = x_in
    for s, mult in enumerate((1, 2, 4, 8), 1):
        for k in (1, 2):
            x = L.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"s{s}_conv{k}")(x)
            x = L.BatchNormalization(momentum=0.9, name=f"s{s}_bn{k}")(x)
            x = L.ReLU(name=f"s{s}_relu{k}")(x)
        x = L.MaxPooling2D(2, name=f"s{s}_pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.3, name="dropout")(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(x_in, x, name="inspect_net")
