"""Edge only with the input sent as the camera's uint8 pixels or as a JPEG, through Device and a
live edge: the planner's edge-only options, run the way `tlcut run` runs them."""

import numpy as np
import onnxruntime as ort
import pytest

from tlcut.errors import TlcutError
from tlcut.placement import EDGE, Placement
from tlcut.runtime.run import Device, image_input
from tlcut.runtime.serve import local_edge
from tlcut.toolchain.bench import input_encoding_times

pytest.importorskip("simplejpeg")


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return small_bundle("nhwc_classifier", tl=None, h=16, w=12, c=3)  # NHWC image input, 16x12 RGB


def camera(n, seed=0):
    """Smooth uint8 images (a gradient and a blob), like a camera's and unlike noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:12]
    out = []
    for _ in range(n):
        cy, cx, a = rng.uniform(0, 16), rng.uniform(0, 12), rng.uniform(60, 200)
        base = a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) + 3 * xx
        out.append(np.clip(np.stack([base, base * 0.8, 255 - base], -1), 0, 255).astype(np.uint8))
    return out


def whole(bundle, x):
    s = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    return s.run(None, {bundle.inputs[0]["name"]: x})[0]


def test_uint8_pixels_give_exactly_the_whole_models_answer(bundle):
    ys = []
    with local_edge(bundle, ["input"]) as ep, Device(bundle, Placement(EDGE, encoding="uint8"), edge=ep) as dev:
        for im in camera(3):
            x = image_input(bundle, im)
            y, rec = dev.infer(x)
            assert np.abs(y - whole(bundle, x)).max() <= 1e-6
            assert rec["payload_bytes"] == 16 * 12 * 3 + 80  # a quarter of float32
            ys.append(y)
    assert np.abs(ys[0] - ys[1]).max() > 1e-3, "the output must move with the input"


def test_jpeg_is_the_whole_model_on_the_decoded_image(bundle):
    from tlcut.encodings.jpeg import decode_jpeg, encode_jpeg

    with local_edge(bundle, ["input"]) as ep, \
            Device(bundle, Placement(EDGE, encoding="jpeg", quality=80), edge=ep) as dev:
        for im in camera(3, seed=1):
            y, rec = dev.infer(image_input(bundle, im))
            blob = encode_jpeg(im, 80)
            assert rec["payload_bytes"] == len(blob) + 80
            decoded = image_input(bundle, decode_jpeg(blob))
            assert np.abs(y - whole(bundle, decoded)).max() <= 1e-5
            # lossy, but close to what the exact pixels give
            assert np.abs(y - whole(bundle, image_input(bundle, im))).max() < 0.1 * np.abs(y).max() + 1e-3


def test_bench_times_each_input_encoding_on_real_pixels(bundle, tmp_path):
    from PIL import Image

    for i, im in enumerate(camera(4)):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    r = input_encoding_times(bundle, 5, images=str(tmp_path), jpeg_quality=(90, 50), progress=lambda *_: None)
    by = {(e["encoding"], e["quality"]): e for e in r["encodings"]}
    assert set(by) == {("uint8", None), ("jpeg", 90), ("jpeg", 50)}
    assert by[("uint8", None)]["bytes"] == 16 * 12 * 3
    assert by[("jpeg", 50)]["bytes"] < by[("jpeg", 90)]["bytes"]
    assert all(e["serialize"]["median"] > 0 and e["deserialize"]["median"] > 0 for e in by.values())
    assert r["images"] == str(tmp_path)


def test_inputs_that_are_not_images_are_refused_in_one_line(small_bundle):
    b = small_bundle("chain", tl=None, hw=7)  # 4 channels: not an image
    with pytest.raises(TlcutError, match="not an image"):
        Device(b, Placement(EDGE, encoding="uint8"), edge="tcp://127.0.0.1:1")
    assert input_encoding_times(b, 3)["encodings"] == []
