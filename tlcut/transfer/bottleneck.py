"""Learned bottlenecks: the device codes the cut tensor into fewer channels, the edge expands the
code back to the cut's channels; both are trained with the model (`tlcut retrain --tl ...`).

- ``bottleneck:C``: a 1x1 convolution to C channels; its expansion a 1x1 convolution back.
- ``bottleneck:C/s2``: a 2x2 convolution at stride 2 to C channels (a 1x1 convolution of each 2x2
  patch: a strided 1x1 would drop three positions in four unseen); its expansion the 2x2
  transposed convolution, each code back to its 2x2 patch.
- ``pool+bottleneck:C``: the paper's max-pool, then a 1x1 convolution to C channels; the edge
  expands at the pooled size, then repeats each value 2x2.

All are linear, so the least-squares code of real feature maps (their principal components) is
the natural start: ``init_weights`` sets both sides to it, and training moves on from there.
"""

from __future__ import annotations

import numpy as np

from tlcut.errors import TlcutError
from tlcut.transfer.base import TransferLayer, channel_axis, conv, maxpool, pca, upsample

_ROWS = 100_000  # feature vectors enough for the principal components of a few hundred channels


def _width(family: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise TlcutError(f"--tl {family}:C takes a number of channels C >= 1, got '{family}:{text}'")
    return int(text)


def _rows(a: np.ndarray, seed: int = 0) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1])
    if len(a) > _ROWS:
        a = a[np.random.default_rng(seed).choice(len(a), _ROWS, replace=False)]
    return a


def _pool_nhwc(f: np.ndarray) -> np.ndarray:
    """2x2 max-pool at stride 2 of NHWC maps, an odd last row/column padded with -inf (numpy)."""
    n, h, w, c = f.shape
    p = np.full((n, h + h % 2, w + w % 2, c), -np.inf, f.dtype)
    p[:, :h, :w] = f
    return p.reshape(n, p.shape[1] // 2, 2, p.shape[2] // 2, 2, c).max(axis=(2, 4))


class Bottleneck(TransferLayer):
    family = "bottleneck"
    syntax = "bottleneck:C, bottleneck:C/s2"
    has_weights = True

    def __init__(self, channels: int, stride: int = 1):
        self.channels, self.stride = int(channels), int(stride)
        self.halves = self.stride == 2

    @property
    def name(self):
        return f"{self.family}:{self.channels}" + ("/s2" if self.stride == 2 else "")

    @classmethod
    def parse(cls, arg):
        if arg is None:
            raise TlcutError("--tl bottleneck needs a width: bottleneck:C or bottleneck:C/s2 (e.g. bottleneck:16)")
        width, slash, stride = arg.partition("/")
        if slash and stride != "s2":
            raise TlcutError(f"--tl bottleneck:C takes only /s2 after the width (stride 2), got 'bottleneck:{arg}'")
        return cls(_width("bottleneck", width), 2 if slash else 1)

    def out_channels(self, channels):
        return self.channels

    def _code_dims(self, cin: int) -> int:
        return cin * (4 if self.stride == 2 else 1)

    def check_fits(self, shape, layout):
        cin = int(shape[channel_axis(layout)])
        if self.channels >= self._code_dims(cin):
            per = f"{self._code_dims(cin)} values per 2x2 patch" if self.stride == 2 else f"{cin} channels"
            raise TlcutError(f"--tl {self.name} codes into no fewer values than the cut tensor has ({per} at "
                             f"{list(shape)}); choose C below {self._code_dims(cin)}")
        super().check_fits(shape, layout)

    # -- weights -----------------------------------------------------------------------------
    def init_weights(self, features):
        f = np.asarray(features, np.float32)
        cin = f.shape[-1]
        if self.stride == 2:  # the rows are 2x2 patches, zero-padded at an odd end as the conv pads
            n, h, w, _ = f.shape
            p = np.zeros((n, h + h % 2, w + w % 2, cin), np.float32)
            p[:, :h, :w] = f
            p = p.reshape(n, p.shape[1] // 2, 2, p.shape[2] // 2, 2, cin).transpose(0, 1, 3, 2, 4, 5)
            mean, v = pca(_rows(p.reshape(n, p.shape[1], p.shape[2], 4 * cin)), self.channels)
            k = v.reshape(2, 2, cin, self.channels)
            return {"device_kernel": k, "device_bias": -mean @ v, "edge_kernel": k,
                    "edge_bias": mean.reshape(2, 2, cin).mean(axis=(0, 1))}
        mean, v = pca(_rows(f), self.channels)
        return {"device_kernel": v.reshape(1, 1, cin, self.channels), "device_bias": -mean @ v,
                "edge_kernel": v.T.reshape(1, 1, self.channels, cin), "edge_bias": mean}

    # -- Keras -------------------------------------------------------------------------------
    def keras_device(self, keras, channels):
        k = 2 if self.stride == 2 else 1
        return [keras.layers.Conv2D(self.channels, k, strides=self.stride, padding="same", name="device_tl")]

    def keras_edge(self, keras, channels):
        if self.stride == 2:
            return [keras.layers.Conv2DTranspose(channels, 2, strides=2, padding="valid", name="edge_tl")]
        return [keras.layers.Conv2D(channels, 1, name="edge_tl")]

    # -- ONNX --------------------------------------------------------------------------------
    def onnx_device(self, g, x, shape_nchw, weights):
        pads = (0, 0, shape_nchw[2] % 2, shape_nchw[3] % 2) if self.stride == 2 else (0, 0, 0, 0)
        return conv(g, x, weights["device_kernel"], weights["device_bias"], "tlcut_device_tl", self.stride, pads)

    def onnx_edge(self, g, p, shape_nchw, weights):
        if self.stride == 1:
            return conv(g, p, weights["edge_kernel"], weights["edge_bias"], "tlcut_edge_tl")
        # Keras' Conv2DTranspose kernel is (kh, kw, out, in); ONNX ConvTranspose's (in, out, kh, kw)
        w = np.ascontiguousarray(weights["edge_kernel"].transpose(3, 2, 0, 1), np.float32)
        return g.layer(op="ConvTranspose", name="tlcut_edge_tl", outputs=["tlcut_edge_tl_out"],
                       inputs=[p, w, np.asarray(weights["edge_bias"], np.float32)],
                       attrs={"kernel_shape": [2, 2], "strides": [2, 2]})[0]


class PoolBottleneck(Bottleneck):
    family = "pool+bottleneck"
    syntax = "pool+bottleneck:C"
    halves = True

    def __init__(self, channels: int):
        super().__init__(channels, 1)
        self.halves = True

    @property
    def name(self):
        return f"{self.family}:{self.channels}"

    @classmethod
    def parse(cls, arg):
        if arg is None:
            raise TlcutError("--tl pool+bottleneck needs a width: pool+bottleneck:C (e.g. pool+bottleneck:16)")
        return cls(_width("pool+bottleneck", arg))

    def init_weights(self, features):
        return super().init_weights(_pool_nhwc(np.asarray(features, np.float32)))

    def keras_device(self, keras, channels):
        return [keras.layers.MaxPooling2D(2, padding="same", name="device_tl_pool"),
                keras.layers.Conv2D(self.channels, 1, name="device_tl")]

    def keras_edge(self, keras, channels):  # expand, then repeat: the same as repeat, then expand, 4x cheaper
        return [keras.layers.Conv2D(channels, 1, name="edge_tl"),
                keras.layers.UpSampling2D(2, interpolation="nearest", name="edge_tl_up")]

    def onnx_device(self, g, x, shape_nchw, weights):
        pooled = maxpool(g, x, shape_nchw, "tlcut_device_tl_pool")
        return conv(g, pooled, weights["device_kernel"], weights["device_bias"], "tlcut_device_tl")

    def onnx_edge(self, g, p, shape_nchw, weights):
        y = conv(g, p, weights["edge_kernel"], weights["edge_bias"], "tlcut_edge_tl")
        return upsample(g, y, "tlcut_edge_tl_up", g.opset or 17)
