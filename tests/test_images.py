"""Image folders as inputs: resized, converted to the input's channels and layout, scaled to [0, 1]."""

import numpy as np
import pytest
from PIL import Image

from tlcut.errors import TlcutError
from tlcut.models.images import load_folder


def _write(d, name, arr):
    Image.fromarray(arr).save(d / name)


def test_folder_to_inputs_in_both_layouts(tmp_path):
    _write(tmp_path, "a.png", np.full((40, 20, 3), 255, np.uint8))
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "b.png", np.zeros((10, 10), np.uint8))  # grayscale, in a class folder
    xs = load_folder(tmp_path, [1, 8, 6, 3], "NHWC", "float32")
    assert len(xs) == 2 and all(x.shape == (1, 8, 6, 3) and x.dtype == np.float32 for x in xs)
    assert xs[0].max() == pytest.approx(1.0) and xs[1].max() == 0.0
    xs = load_folder(tmp_path, [1, 1, 5, 7], "NCHW", "float32")
    assert xs[0].shape == (1, 1, 5, 7)
    xs = load_folder(tmp_path, [1, 4, 4, 3], "NHWC", "uint8")
    assert xs[0].dtype == np.uint8 and xs[0].max() == 255


def test_bad_folders(tmp_path):
    with pytest.raises(TlcutError, match="does not exist"):
        load_folder(tmp_path / "nope", [1, 4, 4, 3], "NHWC", "float32")
    with pytest.raises(TlcutError, match="no images"):
        load_folder(tmp_path, [1, 4, 4, 3], "NHWC", "float32")
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(TlcutError, match="cannot read image"):
        load_folder(tmp_path, [1, 4, 4, 3], "NHWC", "float32")
    with pytest.raises(TlcutError, match="4-D image input"):
        load_folder(tmp_path, [1, 16], "NHWC", "float32")
