"""The geometry of horizontal tiles: which rows of every tensor each band of a segment needs.

D3's "vertical separation": a run of spatially local layers is split along the height axis into
bands; each band is its own ONNX file with static shapes that takes rows [a, b) of the segment's
input and returns exactly its rows of the segment's output, and stitching the outputs along height
gives the untiled output bit for bit (up to float reassociation). EdgeDI sizes the bands to the
nodes' speeds (``plan_bands``).

How the halo is found: nothing is assumed about the network. Starting from a band's output rows,
the graph is walked backwards in reverse topological order and every node maps the rows it must
produce to the rows it needs of each input: a window op (Conv, MaxPool, AveragePool, LpPool) from
its kernel, stride, dilation and its top padding (explicit pads, asymmetric ones included, or
auto_pad resolved against the full input height); Pad from its top pad; Resize (nearest or linear,
an integer upscale of the height, in a coordinate mode that shifts with the band) from ONNX's
coordinate formula, the band resizing its rows whole and keeping its own; everything else row for
row (elementwise ops whose constants do not vary along height, BatchNormalization, Transpose,
and Concat, Split, Softmax along another axis). Anything else is refused with a one-line error
naming the node: global pooling, InstanceNormalization (statistics of the whole map), MatMul,
Gemm, Reshape, Flatten, Squeeze, a constant that varies along height, ops tiles do not know. A tensor read by several consumers (ResNet's Add, DenseNet's Concat) must supply the hull of
what they all need. The band graph then slices each consumer's share out of that hull, and every
window op pads only where its band meets the image border: inside the map the padding rows are
replaced by the real rows of the halo. With ceil_mode the last window may overhang the padded
map, as in the original.

Layout: the height axis is tracked per tensor, starting from the cut's layout (NCHW or NHWC) and
moving through every Transpose, so tf2onnx's NHWC input, its Transpose to NCHW and the NCHW body
are handled as they are; window ops must see NCHW (height on axis 2), which is what tf2onnx emits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tlcut.errors import TlcutError

#: Ops that map output row r to input row r, their non-activation inputs (if any) broadcast along height.
ELEMENTWISE = frozenset("""
Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish Gelu
ThresholdedRelu Exp Log Sqrt Reciprocal Neg Abs Erf Floor Ceil Round Sign Sin Cos Identity Cast Dropout
Clip Add Sub Mul Div Pow Max Min Sum Mean Where Equal Greater Less GreaterOrEqual LessOrEqual And Or Not
""".split())
#: Per-channel ops whose parameters are per channel, not per position.
PER_CHANNEL = frozenset({"BatchNormalization"})
#: Ops that read a window of rows: kernel, stride, dilation, padding.
WINDOW = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})
#: Ops that keep rows but act along another axis, refused when that axis is the height.
ALONG_AXIS = frozenset({"Concat", "Split", "Softmax", "LogSoftmax"})
OTHER = frozenset({"Transpose", "Pad", "Resize"})
#: Resize coordinate modes under which rows of an integer upscale shift with the band (x(o + k*s) = x(o) + k).
_RESIZE_MODES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn")
SUPPORTED = ELEMENTWISE | PER_CHANNEL | WINDOW | ALONG_AXIS | OTHER

#: Why an op that mixes rows across the whole map is refused.
_GLOBAL = {
    "GlobalAveragePool": "pools over the whole map",
    "GlobalMaxPool": "pools over the whole map",
    "GlobalLpPool": "pools over the whole map",
    "InstanceNormalization": "normalizes with statistics of the whole map",
    "LayerNormalization": "normalizes over whole axes",
    "GroupNormalization": "normalizes with statistics of the whole map",
    "Gemm": "mixes every position",
    "MatMul": "mixes every position",
    "Reshape": "reshapes the map",
    "Flatten": "flattens the map",
    "Squeeze": "changes the rank",
    "Unsqueeze": "changes the rank",
    "Shape": "reads the map's shape",
}


def _refuse(node: onnx.NodeProto, why: str) -> TlcutError:
    return TlcutError(f"cannot tile: node '{node.name or node.output[0]}' ({node.op_type}) {why}; "
                      f"choose cuts that enclose only spatially local layers")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class _Window:
    """Height geometry of a window op: output row o reads input rows o*s - pt + j*d, j < k."""

    k: int
    s: int
    d: int
    pt: int
    pb: int
    pads: list  # all explicit pads of the original, auto_pad resolved
    ceil: bool


@dataclass
class Band:
    """One band: the output rows it produces and the input rows it needs (the halo included)."""

    index: int
    out_rows: tuple[int, int]
    in_rows: tuple[int, int]
    rows: dict = field(default_factory=dict)  # tensor -> (lo, hi) the band computes
    work: float = 0.0  # multiply-accumulates (window ops) plus elements (the rest) it computes


class Segment:
    """A single-input, single-output subgraph whose every node is spatially local, with the height
    axis of each tensor; the constructor refuses anything else."""

    def __init__(self, model: onnx.ModelProto, layout: str | None = None):
        g = model.graph
        if len(g.input) != 1 or len(g.output) != 1:
            raise TlcutError(f"a tiled segment has one input and one output, this one has {len(g.input)} and {len(g.output)}")
        self.model = model
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        self.shapes: dict[str, tuple] = {}
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        self.input, self.output = g.input[0].name, g.output[0].name
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and not n.input:
                self.consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self.nodes = list(g.node)
        in_shape = self.shapes.get(self.input)
        if not in_shape or len(in_shape) != 4:
            raise TlcutError(f"segment input '{self.input}' is not a static 4-D feature map (shape {in_shape})")
        if layout not in ("NCHW", "NHWC"):
            raise TlcutError(f"segment input '{self.input}' has layout {layout!r}; tiles need NCHW or NHWC")
        self.h: dict[str, int] = {self.input: 2 if layout == "NCHW" else 1}
        self.windows: dict[int, _Window] = {}
        self.resizes: dict[int, dict] = {}
        self._walk_forward()

    # -- what the graph is -----------------------------------------------------------------
    def is_act(self, name: str) -> bool:
        return name in self.h

    def height(self, name: str) -> int:
        return self.shapes[name][self.h[name]]

    def _walk_forward(self) -> None:
        """Give every activation tensor its height axis; refuse ops that are not spatially local."""
        for i, n in enumerate(self.nodes):
            acts = [x for x in n.input if x and self.is_act(x)]
            if not acts:
                continue  # constant arithmetic: copied unchanged into every band
            op, at = n.op_type, _attrs(n)
            if op in _GLOBAL:
                raise _refuse(n, _GLOBAL[op])
            if op not in SUPPORTED:
                raise _refuse(n, "is not a spatially local op tiles know")
            if n.domain not in ("", "ai.onnx"):
                raise _refuse(n, f"is from domain {n.domain}")
            h = self.h[acts[0]]
            outs = [o for o in n.output if o]
            for o in outs:
                if o not in self.shapes:
                    raise _refuse(n, f"has output '{o}' without a static shape")
            if op == "Transpose":
                perm = list(at.get("perm", range(len(self.shapes[acts[0]]))[::-1]))
                self.h[outs[0]] = perm.index(h)
                continue
            if op in WINDOW:
                if n.input[0] != acts[0] or len(acts) != 1:
                    raise _refuse(n, "takes an activation as its weights")
                if len(self.shapes[acts[0]]) != 4 or h != 2:
                    raise _refuse(n, f"needs a 2-D NCHW map with height on axis 2 (height is on axis {h})")
                if op == "MaxPool" and len(outs) > 1:
                    raise _refuse(n, "returns indices, which are positions in the whole map")
                self.windows[i] = self._window(n, at)
            elif op in ALONG_AXIS:
                rank = len(self.shapes[acts[0]])
                axis = at.get("axis", 1 if op == "Concat" else (0 if op == "Split" else -1)) % rank
                if axis == h:
                    raise _refuse(n, "acts along the height axis")
            elif op == "Pad":
                self.pads_of(n, h)  # refuses what bands cannot split
            elif op == "Resize":
                self.resizes[i] = self._resize(n, at, h)
            out_shape = self.shapes[outs[0]]
            for x in n.input:
                if not x:
                    continue
                if self.is_act(x):
                    if self.h[x] != h or self.shapes[x][h] != self.shapes[acts[0]][h] or len(self.shapes[x]) != len(out_shape):
                        raise _refuse(n, "combines maps whose heights do not line up")
                elif op in ELEMENTWISE and x in self.consts:
                    c = np.shape(self.consts[x])
                    k = h - (len(out_shape) - len(c))
                    if k >= 0 and c[k] != 1:
                        raise _refuse(n, f"uses constant '{x}' that varies along the height axis")
                elif op in ELEMENTWISE and x not in self.consts:
                    raise _refuse(n, f"uses a computed non-activation input '{x}'")
            for o in outs:
                if op not in WINDOW and op not in ("Pad", "Resize") and self.shapes[o][h] != self.shapes[acts[0]][h]:
                    raise _refuse(n, "changes the height")
                self.h[o] = h
        if self.output not in self.h:
            raise TlcutError(f"segment output '{self.output}' does not depend on its input")

    def _window(self, n: onnx.NodeProto, at: dict) -> _Window:
        if n.op_type == "Conv":
            k_shape = at.get("kernel_shape") or list(np.shape(self.consts[n.input[1]])[2:])
        else:
            k_shape = at["kernel_shape"]
        if len(k_shape) != 2:
            raise _refuse(n, f"is {len(k_shape)}-D; tiles split 2-D maps")
        strides = list(at.get("strides", [1, 1]))
        dil = list(at.get("dilations", [1, 1]))
        auto = at.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        in_shape = self.shapes[n.input[0]]
        pads = list(at.get("pads", [0, 0, 0, 0]))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for ax in range(2):
                size = in_shape[2 + ax]
                eff = (k_shape[ax] - 1) * dil[ax] + 1
                total = max(0, (math.ceil(size / strides[ax]) - 1) * strides[ax] + eff - size)
                small, big = total // 2, total - total // 2
                pads[ax], pads[2 + ax] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        return _Window(k=k_shape[0], s=strides[0], d=dil[0], pt=pads[0], pb=pads[2], pads=pads,
                       ceil=bool(at.get("ceil_mode", 0)))

    def _resize(self, n: onnx.NodeProto, at: dict, h: int) -> dict:
        """An integer upscale along height, nearest or linear, in a coordinate mode bands can shift."""
        def text(key, default):
            v = at.get(key, default)
            return v.decode() if isinstance(v, bytes) else v

        mode, ctm = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            raise _refuse(n, f"resizes in '{mode}' mode (tiles take nearest and linear)")
        if ctm not in _RESIZE_MODES:
            raise _refuse(n, f"resizes with coordinate mode '{ctm}', which does not shift with a band")
        h_in, h_out = self.shapes[n.input[0]][h], self.shapes[n.output[0]][h]
        if h_out % h_in:
            raise _refuse(n, f"resizes the height {h_in} -> {h_out}, not by an integer factor")
        for p in (2, 3):
            if len(n.input) > p and n.input[p] and n.input[p] not in self.consts:
                raise _refuse(n, "has scales or sizes that are computed, not constant")
        return {"s": h_out // h_in, "mode": mode, "ctm": ctm, "nearest": text("nearest_mode", "round_prefer_floor"),
                "sizes": len(n.input) > 3 and bool(n.input[3]), "axes": at.get("axes")}

    def _resize_rows(self, r: dict, lo: int, hi: int, h_in: int) -> tuple[int, int]:
        """Input rows the output rows [lo, hi) of a Resize read (ONNX's coordinate formulas)."""
        o = np.arange(lo, hi, dtype=np.float64)
        s = r["s"]
        if r["ctm"] == "asymmetric":
            x = o / s
        elif r["ctm"] == "tf_half_pixel_for_nn":
            x = (o + 0.5) / s
        elif r["ctm"] == "pytorch_half_pixel" and h_in * s <= 1:
            x = np.zeros_like(o)
        else:
            x = (o + 0.5) / s - 0.5
        if r["mode"] == "linear":
            first, last = np.floor(x), np.floor(x) + 1
        else:
            rnd = {"floor": np.floor, "ceil": np.ceil, "round_prefer_floor": lambda v: np.ceil(v - 0.5),
                   "round_prefer_ceil": lambda v: np.floor(v + 0.5)}[r["nearest"]]
            first = last = rnd(x)
        return int(np.clip(first, 0, h_in - 1).min()), int(np.clip(last, 0, h_in - 1).max()) + 1

    def pads_of(self, n: onnx.NodeProto, h: int) -> tuple[np.ndarray, int, int]:
        """Pad's full pads vector (axes resolved) and its top and bottom pad on the height axis."""
        at = _attrs(n)
        rank = len(self.shapes[n.input[0]])
        if len(n.input) < 2 or n.input[1] not in self.consts:
            if "pads" not in at:
                raise _refuse(n, "has pads that are computed, not constant")
            pads = np.asarray(at["pads"], np.int64)
        else:
            pads = np.asarray(self.consts[n.input[1]], np.int64)
        if len(n.input) > 3 and n.input[3]:
            if n.input[3] not in self.consts:
                raise _refuse(n, "has axes that are computed, not constant")
            axes = [int(a) % rank for a in self.consts[n.input[3]]]
            full = np.zeros(2 * rank, np.int64)
            for j, a in enumerate(axes):
                full[a], full[rank + a] = pads[j], pads[len(axes) + j]
            pads = full
        mode = at.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pt, pb = int(pads[h]), int(pads[rank + h])
        if mode != "constant" and (pt or pb):
            raise _refuse(n, f"pads the height in '{mode}' mode, which reads rows across the map")
        return pads, pt, pb

    # -- what a band needs -----------------------------------------------------------------
    def need(self, i: int, n: onnx.NodeProto, lo: int, hi: int) -> tuple[int, int]:
        """Rows of the (first) activation input node ``i`` needs to produce output rows [lo, hi),
        before clamping to the map: rows outside it are padding."""
        if i in self.windows:
            w = self.windows[i]
            return lo * w.s - w.pt, (hi - 1) * w.s - w.pt + (w.k - 1) * w.d + 1
        if n.op_type == "Pad":
            _, pt, _ = self.pads_of(n, self.h[n.output[0]])
            return lo - pt, hi - pt
        if i in self.resizes:
            return self._resize_rows(self.resizes[i], lo, hi, self.height(n.input[0]))
        return lo, hi

    def band(self, index: int, lo: int, hi: int) -> Band:
        """Walk backwards from output rows [lo, hi): the rows every tensor must supply."""
        rows: dict[str, tuple[int, int]] = {self.output: (lo, hi)}
        work = 0.0
        for i in range(len(self.nodes) - 1, -1, -1):
            n = self.nodes[i]
            outs = [o for o in n.output if o and o in rows]
            if not outs or not any(self.is_act(x) for x in n.input if x):
                continue
            olo = min(rows[o][0] for o in outs)
            ohi = max(rows[o][1] for o in outs)
            for o in outs:  # a multi-output node (Split) computes the hull for all its outputs
                rows[o] = (olo, ohi)
            work += (ohi - olo) * self._row_cost(n)
            a, b = self.need(i, n, olo, ohi)
            for x in n.input:
                if x and self.is_act(x):
                    ca, cb = max(a, 0), min(b, self.height(x))
                    if ca >= cb:
                        raise TlcutError(f"band rows [{lo}, {hi}) of the segment output need no real rows of "
                                         f"'{x}' at node '{n.name}' (only its padding); use fewer bands")
                    pa, pb = rows.get(x, (ca, cb))
                    rows[x] = (min(pa, ca), max(pb, cb))
        return Band(index=index, out_rows=(lo, hi), in_rows=rows[self.input], rows=rows, work=work)

    def _row_cost(self, n: onnx.NodeProto) -> float:
        """Work per output row: multiply-accumulates for a Conv, elements otherwise."""
        o = self.shapes[n.output[0]]
        per_row = float(np.prod(o)) / max(1, o[self.h[n.output[0]]])
        if n.op_type == "Conv":
            wshape = np.shape(self.consts[n.input[1]]) if n.input[1] in self.consts else (1, 1, 1, 1)
            per_row *= float(np.prod(wshape[1:]))
        elif n.op_type in WINDOW:
            per_row *= float(np.prod(_attrs(n).get("kernel_shape", [1])))
        return per_row

    def work(self) -> float:
        """The whole segment's work in the units of ``Band.work``."""
        total = 0.0
        for n in self.nodes:
            if any(self.is_act(x) for x in n.input if x):
                total += self._row_cost(n) * self.height(n.output[0])
        return total


def split(segment: Segment, heights: list[int]) -> list[Band]:
    """Bands of the given output heights (top to bottom), with the halo each needs."""
    total = segment.height(segment.output)
    if sum(heights) != total or any(h < 1 for h in heights):
        raise TlcutError(f"band heights {heights} must be >= 1 and add up to the output height {total}")
    bands, lo = [], 0
    for k, h in enumerate(heights):
        bands.append(segment.band(k, lo, lo + h))
        lo += h
    return bands


def plan_bands(out_height: int, speeds) -> list[int]:
    """Band heights proportional to node speeds (EdgeDI's balancing), each at least one row.

    Largest remainder rounding, so the heights add up to ``out_height`` exactly."""
    speeds = [float(s) for s in speeds]
    if not speeds or any(not s > 0 for s in speeds):
        raise TlcutError(f"node speeds must be positive numbers, got {speeds}")
    if len(speeds) > out_height:
        raise TlcutError(f"{len(speeds)} bands do not fit in an output {out_height} rows high; use at most {out_height}")
    spare = out_height - len(speeds)  # one row each first, the rest by speed
    ideal = [spare * s / sum(speeds) for s in speeds]
    heights = [1 + int(math.floor(x)) for x in ideal]
    order = sorted(range(len(speeds)), key=lambda k: (ideal[k] - math.floor(ideal[k]), speeds[k]), reverse=True)
    for k in order[: out_height - sum(heights)]:
        heights[k] += 1
    return heights

