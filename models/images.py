"""Image folders as model inputs: the same reader for `tlcut run --images` and the datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def image_files(folder) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise TlcutError(f"image folder '{folder}' does not exist")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise TlcutError(f"no images ({', '.join(sorted(EXTENSIONS))}) in '{folder}'")
    return files


def load_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """H x W x C uint8, resized to the model's input and converted to its channel count."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise TlcutError(f"cannot read image '{path}': {e}") from None
    return a[..., None] if a.ndim == 2 else a


def load_folder(folder, shape, layout: str, dtype: str) -> list[np.ndarray]:
    """Every image in ``folder`` as one model input: batch 1, the input's layout, float inputs in [0, 1]."""
    if len(shape) != 4:
        raise TlcutError(f"--images needs a 4-D image input, the model takes {list(shape)}")
    n, a, b, c = shape
    h, w, ch = (a, b, c) if layout == "NHWC" else (b, c, a)
    out = []
    for p in image_files(folder):
        x = load_image(p, h, w, ch)
        if layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = x[None].astype(dtype)
        if np.issubdtype(np.dtype(dtype), np.floating):
            x /= 255.0
        out.append(np.repeat(x, n, axis=0) if n > 1 else x)
    return out
