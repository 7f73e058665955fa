"""`tlcut cuts`: every place the model can be cut in two with one tensor crossing.

A cut is a point in the topological order where exactly one activation tensor is live: everything
before it is the head, everything after it the tail, and that tensor is all that crosses. Inside a
parallel branch (Inception, residual, dense blocks) two or more tensors are live, so no cut falls
there: the ONNX counterpart of Scission's open-branch count. The answer does not depend on which
topological order is used, because a single-tensor cut separates the tensor's ancestors from its
descendants in every order.
"""

from __future__ import annotations

import math

import onnx

from tlcut.bundle import Cut

_FLOATS = {"float32", "float16", "float64"}


def tl_shape(shape, layout: str | None, dtype: str) -> tuple[tuple[int, ...] | None, str | None]:
    """The DeviceTL output shape (2x2 max-pool, stride 2, odd sizes rounded up), or why there is none."""
    if len(shape) != 4:
        return None, f"{len(shape)}-D tensor (the TL needs a 4-D feature map)"
    if layout not in ("NCHW", "NHWC"):
        return None, "layout unknown (neither NCHW nor NHWC could be established)"
    if dtype not in _FLOATS:
        return None, f"{dtype} tensor (the TL pools floating-point feature maps)"
    h_ax, w_ax = (2, 3) if layout == "NCHW" else (1, 2)
    h, w = shape[h_ax], shape[w_ax]
    if h < 2 or w < 2:
        return None, f"{h}x{w} spatial map (too small to pool)"
    out = list(shape)
    out[h_ax], out[w_ax] = math.ceil(h / 2), math.ceil(w / 2)
    return tuple(out), None


def enumerate_cuts(model: onnx.ModelProto, tensors: dict[str, dict]) -> list[Cut]:
    """All single-tensor cuts of ``model`` in topological order.

    ``tensors`` maps every activation tensor to its annotation (shape, dtype, layout, layer), as
    written by export; tensors not in it (weights, constants, shape arithmetic) never count as live.
    """
    g = model.graph
    outputs = {o.name for o in g.output}
    never = len(g.node)
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name in tensors:
                last_use[name] = i
    for name in outputs:
        last_use[name] = never  # outputs stay live to the end

    live = {i.name for i in g.input if i.name in tensors}
    cuts: list[Cut] = []
    seen: set[str] = set()
    for i, node in enumerate(g.node):
        if not any(n in tensors for n in node.input):
            continue  # constant subgraph: moves nothing across a cut
        for name in node.output:
            if name in tensors and name in last_use:
                live.add(name)
        for name in list(live):
            if last_use.get(name, -1) <= i:
                live.discard(name)
        if len(live) != 1:
            continue
        (name,) = live
        if name in outputs or name in seen:
            continue
        seen.add(name)
        info = tensors[name]
        shape = tuple(info["shape"])
        tls, why = tl_shape(shape, info.get("layout"), info["dtype"])
        cuts.append(Cut(index=len(cuts), tensor=name, layer=info.get("layer"), shape=shape, dtype=info["dtype"],
                        layout=info.get("layout"), node_index=i, tl=tls is not None, tl_shape=tls, why_no_tl=why))
    return cuts


def format_table(cuts: list[Cut], *, name: str = "") -> str:
    """The human view: one row per cut, sizes in KiB, the TL's effect where it applies."""
    rows = [("#", "layer", "tensor", "shape", "layout", "raw KiB", "TL KiB", "TL")]
    for c in cuts:
        rows.append((
            str(c.index), c.layer or "-", _short(c.tensor, 44), "x".join(map(str, c.shape)), c.layout or "-",
            f"{c.bytes / 1024:.1f}", f"{c.tl_bytes / 1024:.1f}" if c.tl else "-", "yes" if c.tl else f"no: {c.why_no_tl}",
        ))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    right = {0, 5, 6}
    lines = []
    for j, r in enumerate(rows):
        cells = [r[k].rjust(widths[k]) if k in right else r[k].ljust(widths[k]) for k in range(len(r))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    n_tl = sum(c.tl for c in cuts)
    lines.append(f"{len(cuts)} cuts{' of ' + name if name else ''}; the TL applies at {n_tl}")
    return "\n".join(lines)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else "..." + s[-(n - 3):]
