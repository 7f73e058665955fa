"""A band of a tiled segment as a standalone ONNX model: the segment's nodes cut down to the rows
the band computes (``tile_geometry``), with each window op padding only at the image border."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tlcut.errors import TlcutError
from tlcut.toolchain import surgery
from tlcut.toolchain.tile_geometry import Band, Segment


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def band_model(seg: Segment, band: Band) -> onnx.ModelProto:
    """The band as a standalone ONNX model: input rows ``band.in_rows``, output rows ``band.out_rows``."""
    g = seg.model.graph
    rows = band.rows
    nodes: list[onnx.NodeProto] = []
    inits = [i for i in g.initializer]
    sliced: dict[tuple, str] = {}

    def take(x: str, a: int, b: int) -> str:
        """``x`` cut down to rows [a, b) when the band computes more of it."""
        ra, rb = rows[x]
        if (a, b) == (ra, rb):
            return x
        key = (x, a, b)
        if key not in sliced:
            name = f"{x}__rows_{a}_{b}"
            consts = [numpy_helper.from_array(np.array([v], np.int64), f"{name}__{s}")
                      for s, v in (("starts", a - ra), ("ends", b - ra), ("axes", seg.h[x]))]
            inits.extend(consts)
            nodes.append(helper.make_node("Slice", [x] + [c.name for c in consts], [name], name=f"{name}__slice"))
            sliced[key] = name
        return sliced[key]

    for i, n in enumerate(seg.nodes):
        acts = [x for x in n.input if x and seg.is_act(x)]
        if not acts:
            nodes.append(n)
            continue
        out_rows = rows.get(next((o for o in n.output if o in rows), None) or "", None)
        if out_rows is None:
            continue  # feeds nothing this band needs
        olo, ohi = out_rows
        a, b = seg.need(i, n, olo, ohi)
        new = onnx.NodeProto()
        new.CopyFrom(n)
        for p, x in enumerate(n.input):
            if x and seg.is_act(x):
                new.input[p] = take(x, max(a, 0), min(b, seg.height(x)))
        if i in seg.windows:
            w = seg.windows[i]
            h_in = seg.height(acts[0])
            top, bottom = max(0, -a), min(w.pb, max(0, b - h_in))
            if b - h_in > w.pb and not w.ceil:
                raise TlcutError(f"internal: band overhangs the padding of '{n.name}' without ceil_mode")
            pads = list(w.pads)
            pads[0], pads[2] = top, bottom
            _set_attr(new, "auto_pad", None)
            _set_attr(new, "pads", pads)
        elif n.op_type == "Pad":
            h = seg.h[n.output[0]]
            pads, pt, pb = seg.pads_of(n, h)
            rank = len(pads) // 2
            pads = pads.copy()
            pads[h] = max(0, min(ohi, pt) - olo)
            pads[rank + h] = max(0, ohi - max(olo, pt + seg.height(acts[0])))
            if any(at.name == "pads" for at in n.attribute):  # opset < 11: pads is an attribute
                _set_attr(new, "pads", [int(v) for v in pads])
            else:
                const = numpy_helper.from_array(pads, f"{n.output[0]}__band_pads")
                inits.append(const)
                del new.input[:]
                new.input.extend([take(acts[0], max(a, 0), min(b, seg.height(acts[0]))), const.name]
                                 + list(n.input[2:3]))  # the axes input is folded into the full pads
        elif i in seg.resizes:
            # the band resizes its input rows [a, b) whole: output rows [a*s, b*s), then keeps its own
            r = seg.resizes[i]
            h = seg.h[n.output[0]]
            if r["sizes"]:
                sizes = np.array(seg.consts[n.input[3]], np.int64)
                k = (r["axes"] or list(range(len(seg.shapes[n.output[0]])))).index(h) if r["axes"] else h
                sizes[k] = (b - a) * r["s"]
                const = numpy_helper.from_array(sizes, f"{n.output[0]}__band_sizes")
                inits.append(const)
                new.input[3] = const.name
            full = f"{n.output[0]}__band_resized"
            new.output[0] = full
            nodes.append(new)
            consts = [numpy_helper.from_array(np.array([v], np.int64), f"{full}__{nm}")
                      for nm, v in (("starts", olo - a * r["s"]), ("ends", ohi - a * r["s"]), ("axes", h))]
            inits.extend(consts)
            new = helper.make_node("Slice", [full] + [c.name for c in consts], [n.output[0]], name=f"{full}__slice")
        nodes.append(new)

    x_in = g.input[0]
    shape = list(seg.shapes[seg.input])
    shape[seg.h[seg.input]] = band.in_rows[1] - band.in_rows[0]
    out_shape = list(seg.shapes[seg.output])
    out_shape[seg.h[seg.output]] = band.out_rows[1] - band.out_rows[0]
    graph = helper.make_graph(
        nodes, f"{g.name}_band{band.index}",
        [helper.make_tensor_value_info(seg.input, x_in.type.tensor_type.elem_type, shape)],
        [helper.make_tensor_value_info(seg.output, g.output[0].type.tensor_type.elem_type, out_shape)],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=seg.model.opset_import, producer_name="tlcut-tiles")
    m.ir_version = seg.model.ir_version
    m = surgery.prune(m)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    got = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    if got != out_shape:
        raise TlcutError(f"internal: band {band.index} infers output shape {got}, expected {out_shape}")
    return m

