"""``pool``: the paper's Transfer Layer. The device max-pools 2x2 at stride 2 (a quarter of the
bytes); the edge repeats each value 2x2 (nearest neighbour). No weights: the layers around it are
retrained to live with the pooled features. Its ONNX nodes keep their own path in
toolchain/surgery.py, which upsamples an NHWC payload in place rather than through transposes."""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.transfer.base import TransferLayer


class Pool(TransferLayer):
    family = syntax = "pool"
    halves = True

    @classmethod
    def parse(cls, arg):
        if arg is not None:
            raise TlcutError(f"--tl pool takes no width, got 'pool:{arg}'; for fewer channels use pool+bottleneck:{arg}")
        return cls()

    def keras_device(self, keras, channels):
        return [keras.layers.MaxPooling2D(2, padding="same", name="device_tl")]

    def keras_edge(self, keras, channels):
        return [keras.layers.UpSampling2D(2, interpolation="nearest", name="edge_tl")]
