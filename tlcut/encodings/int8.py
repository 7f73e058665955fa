"""Encoding 2, int8 affine: a cut tensor over its own range, x ~ (q - zero_point) * scale; the
scale and zero point travel in the header."""

from __future__ import annotations

import numpy as np

from tlcut.encodings.base import CUT, Affine


class Int8(Affine):
    name, code = "int8", 2
    applies_to = frozenset({CUT})
    lossy = True
    wire_dtype = np.int8
    levels = (-128, 127)

    def encode(self, array, *, scale=None, zero_point=0, quality=None):
        lo, hi = float(array.min()), float(array.max())
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exact (ReLU maps are mostly zeros)
        scale = (hi - lo) / 255.0 or 1.0
        zp = int(round(-128 - lo / scale))
        q = np.clip(np.rint(array / scale) + zp, -128, 127).astype(np.int8)
        return q, float(np.float32(scale)), zp
