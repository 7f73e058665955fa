"""Datasets for training and accuracy: the embedded ELPV solar-cell set, or a folder per class.

Both come out the same way: uint8 images (N, H, W, C) at the requested size, integer labels, class
names, and a fixed, stratified train/validation/test split drawn from a seed. The test split is
never used for training, early stopping or model selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError

ELPV_GRADES = {0.0: "functional", 1 / 3: "possibly defective", 2 / 3: "likely defective", 1.0: "defective"}


@dataclass
class Split:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        counts = np.bincount(np.concatenate([self.train.y, self.val.y, self.test.y]), minlength=len(self.classes))
        parts = ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts))
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} validation / {len(self.test)} test, "
                f"{self.train.x.shape[1]}x{self.train.x.shape[2]}x{self.train.x.shape[3]}; {parts}")

    def majority_rate(self) -> float:
        """Test accuracy of always answering the most common training class."""
        top = np.bincount(self.train.y).argmax()
        return float(np.mean(self.test.y == top))


_CACHE: dict = {}


def data_args(report: dict) -> dict:
    """``load``'s keyword arguments for the data a model was trained on, from its training report:
    eval, retraining and INT8 calibration must split and shape the data exactly as training did."""
    d = report.get("data", {})
    return {"size": d.get("size", 128), "channels": d.get("channels", 1), "task": d.get("task", "grade"),
            "seed": d.get("seed", 0)}


def load(source: str = "elpv", *, size: int = 128, channels: int = 1, task: str = "grade", seed: int = 0,
         fractions=(0.7, 0.15, 0.15), limit: int | None = None) -> Dataset:
    """``source`` is 'elpv' (the embedded default) or a folder with one subfolder of images per class."""
    key = (str(source), size, channels, task, seed, tuple(fractions), limit)
    if key not in _CACHE:
        _CACHE.clear()  # keep one data set in memory
        _CACHE[key] = _load(source, size=size, channels=channels, task=task, seed=seed, fractions=fractions, limit=limit)
    return _CACHE[key]


def _load(source, *, size, channels, task, seed, fractions, limit) -> Dataset:
    if size < 8:
        raise TlcutError(f"image size {size} is too small; use 32 or more")
    if channels not in (1, 3):
        raise TlcutError(f"channels must be 1 or 3, got {channels}")
    if source == "elpv":
        images, labels, strata, classes, info = _elpv(task)
    else:
        images, labels, strata, classes, info = _folder(source)
    if limit:
        keep = _stratified_order(strata, seed)[:limit]
        images, labels, strata = [images[i] for i in keep], labels[keep], strata[keep]
    x = np.stack([_resize(im, size, channels) for im in images])
    tr, va, te = _split(strata, fractions, seed)
    info.update(seed=seed, size=size, channels=channels, fractions=list(fractions),
                split_sha256=hashlib.sha256(np.concatenate([tr, va, te]).tobytes()).hexdigest()[:16])
    return Dataset(info["name"], classes, Split(x[tr], labels[tr]), Split(x[va], labels[va]), Split(x[te], labels[te]), info)


def _elpv(task: str):
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise TlcutError("the ELPV dataset is not installed; pip install 'tlcut[train]' (or pass a folder of images)") from None
    images, probs, types = load_dataset()
    if task == "grade":
        grades = sorted(ELPV_GRADES)
        labels = np.array([int(np.argmin([abs(p - g) for g in grades])) for p in probs], np.int64)
        classes = [ELPV_GRADES[g] for g in grades]
    elif task == "binary":
        labels = (probs >= 0.5).astype(np.int64)
        classes = ["functional", "defective"]
    else:
        raise TlcutError(f"task must be grade (4 classes) or binary, got '{task}'")
    strata = labels * 2 + (np.asarray(types) == "poly")
    return list(images), labels, strata, classes, {"name": f"elpv-{task}", "source": "elpv-dataset (PyPI)", "task": task}


def _folder(path: str):
    from tlcut.models.images import EXTENSIONS

    root = Path(path)
    if not root.is_dir():
        raise TlcutError(f"data folder '{path}' does not exist; give a folder with one subfolder of images per class, or 'elpv'")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {c: sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in EXTENSIONS) for c in classes}
    classes = [c for c in classes if files[c]]
    if len(classes) < 2:
        raise TlcutError(f"'{path}' needs at least two class subfolders with images in them; found {len(classes)}")
    small = [c for c in classes if len(files[c]) < 3]
    if small:
        raise TlcutError(f"class folder(s) {', '.join(small)} in '{path}' have fewer than 3 images; a split needs more")
    images, labels = [], []
    from PIL import Image, UnidentifiedImageError

    for k, c in enumerate(classes):
        for f in files[c]:
            try:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("L") if im.mode not in ("L", "RGB") else im))
            except (UnidentifiedImageError, OSError) as e:
                raise TlcutError(f"cannot read image '{f}': {e}") from None
            labels.append(k)
    labels = np.array(labels, np.int64)
    return images, labels, labels.copy(), classes, {"name": root.name, "source": str(root.resolve())}


def _resize(im: np.ndarray, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(im)
    pil = pil.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
    a = np.asarray(pil, np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _stratified_order(strata: np.ndarray, seed: int) -> np.ndarray:
    """Indices interleaved across strata, so any prefix keeps the class mix."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(strata == s)) for s in np.unique(strata)]
    order = sorted(((i / len(g), k, idx) for k, g in enumerate(groups) for i, idx in enumerate(g)))
    return np.array([idx for _, _, idx in order], np.int64)


def _split(strata: np.ndarray, fractions, seed: int):
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise TlcutError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        n_te = max(1, round(len(idx) * fractions[2]))
        n_va = max(1, round(len(idx) * fractions[1]))
        te += list(idx[:n_te])
        va += list(idx[n_te:n_te + n_va])
        tr += list(idx[n_te + n_va:])
    parts = [np.sort(np.asarray(part, dtype=np.int64)) for part in (tr, va, te)]
    if not len(parts[0]):
        raise TlcutError(f"{len(strata)} images leave no training images after the validation and test splits; "
                         "use a larger --limit (40 or more)")
    return tuple(parts)
