"""Dataset loading and the fixed, stratified split (no TensorFlow needed)."""

import numpy as np
import pytest
from PIL import Image

from tlcut.errors import TlcutError
from tlcut.models import datasets


def make_folder(root, counts, size=(20, 24), rgb=False):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (*size, 3) if rgb else size
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _ids(split):
    return {s.tobytes() for s in split.x}


def test_folder_split_is_stratified_disjoint_and_seeded(tmp_path):
    make_folder(tmp_path / "d", {"ok": 40, "scratch": 20, "dent": 20}, rgb=True)
    ds = datasets.load(str(tmp_path / "d"), size=16, channels=1, seed=3)
    assert ds.classes == ["dent", "ok", "scratch"]
    assert ds.train.x.shape[1:] == (16, 16, 1) and ds.train.x.dtype == np.uint8
    assert len(ds.train) + len(ds.val) + len(ds.test) == 80
    assert not (_ids(ds.train) & _ids(ds.test)) and not (_ids(ds.val) & _ids(ds.test))
    for split in (ds.train, ds.val, ds.test):  # every class in every split
        assert set(split.y) == {0, 1, 2}
    again = datasets._load(str(tmp_path / "d"), size=16, channels=1, task="grade", seed=3,
                           fractions=(0.7, 0.15, 0.15), limit=None)
    assert np.array_equal(again.test.y, ds.test.y) and again.info["split_sha256"] == ds.info["split_sha256"]
    other = datasets._load(str(tmp_path / "d"), size=16, channels=1, task="grade", seed=4,
                           fractions=(0.7, 0.15, 0.15), limit=None)
    assert other.info["split_sha256"] != ds.info["split_sha256"]


def test_elpv_grades_and_majority_rate():
    pytest.importorskip("elpv_dataset")
    ds = datasets.load("elpv", size=32, limit=200, seed=0)
    assert ds.classes == ["functional", "possibly defective", "likely defective", "defective"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 200
    assert 0.5 < ds.majority_rate() < 0.8  # about two thirds of the cells are functional
    binary = datasets.load("elpv", size=32, limit=200, task="binary")
    assert binary.classes == ["functional", "defective"]


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "at least two class subfolders"),
    (lambda p: make_folder(p, {"only": 5}), "at least two class subfolders"),
    (lambda p: make_folder(p, {"a": 5, "b": 2}), "fewer than 3 images"),
])
def test_bad_folders(tmp_path, setup, match):
    p = tmp_path / "data"
    setup(p)
    with pytest.raises(TlcutError, match=match):
        datasets.load(str(p))


def test_unreadable_image(tmp_path):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / "a" / "broken.png").write_bytes(b"no")
    with pytest.raises(TlcutError, match="cannot read image"):
        datasets.load(str(tmp_path / "d"))


def test_a_limit_too_small_for_three_splits_is_a_one_line_error():
    from tlcut.errors import TlcutError
    from tlcut.models import datasets

    pytest.importorskip("elpv_dataset")
    with pytest.raises(TlcutError, match="larger --limit"):
        datasets.load("elpv", size=32, channels=1, limit=8)
