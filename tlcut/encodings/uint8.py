"""Encoding 3, uint8 affine: the model input as the camera's pixels, in the input's own layout
(lossless for a camera image), restored as x = (q - zero_point) * scale."""

from __future__ import annotations

from tlcut.encodings.base import Pixels


class Uint8(Pixels):
    name, code = "uint8", 3

    def encode(self, array, *, scale=None, zero_point=0, quality=None):
        return self.to_pixels(array, scale, zero_point)
