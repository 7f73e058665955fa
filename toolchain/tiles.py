"""Horizontal tiles: run one segment of the model (cut A -> cut B) as bands of rows on several nodes.

D3's "vertical separation": a run of spatially local layers is split along the height axis into
bands; each band is its own ONNX file with static shapes that takes rows [a, b) of the segment's
input and returns exactly its rows of the segment's output, and stitching the outputs along height
gives the untiled output bit for bit (up to float reassociation). EdgeDI sizes the bands to the
nodes' speeds (``plan_bands``).

This module extracts the segment and writes the tiles folder; ``tile_geometry`` finds the rows
(the halo) each band needs, and ``tile_models`` builds each band's ONNX model.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tlcut.errors import TlcutError
from tlcut.toolchain import surgery
from tlcut.toolchain.tile_geometry import Band, Segment, plan_bands, split
from tlcut.toolchain.tile_models import band_model


def extract(model: onnx.ModelProto, src: str, dst: str) -> onnx.ModelProto:
    """The subgraph from tensor ``src`` to tensor ``dst`` (both single-tensor cuts)."""
    m = surgery.extract_segment(model, [src], [dst])
    if len(m.graph.input) != 1:
        raise TlcutError(f"the segment {src} -> {dst} needs more than one input; cut points must be single-tensor cuts")
    return m


def predict_tiled_ms(bands: list[dict], speeds, *, segment_ms: float | None = None, row_ms: float | None = None,
                     band_ms=None, bandwidth_bps=None, latency_ms: float = 0.0, stitch_ms: float = 0.0,
                     return_outputs: bool = True) -> dict:
    """Predicted latency of a tiled segment: max over bands of (compute + transfer) + stitch.

    ``bands`` are the rows of a tiles manifest (``work_fraction``, ``in_bytes``, ``out_bytes``, ``out_rows``).
    A band's compute is its measured time (``band_ms``, on a node of speed 1) or else the untiled
    segment's time (``segment_ms``, or ``row_ms`` per output row) times the band's share of the
    work, halo recomputation included, divided by its node's speed. Transfer is its input rows
    (halo included) and, with ``return_outputs``, its output rows over ``bandwidth_bps`` (one
    number, or one per node) plus ``latency_ms``."""
    n = len(bands)
    speeds = [float(s) for s in speeds]
    if len(speeds) != n:
        raise TlcutError(f"{n} bands but {len(speeds)} node speeds")
    if band_ms is None:
        if segment_ms is None:
            if row_ms is None:
                raise TlcutError("predict_tiled_ms needs band_ms, segment_ms or row_ms")
            segment_ms = row_ms * sum(b["out_rows"][1] - b["out_rows"][0] for b in bands)
        band_ms = [segment_ms * b["work_fraction"] for b in bands]
    bws = bandwidth_bps if isinstance(bandwidth_bps, (list, tuple)) else [bandwidth_bps] * n
    per = []
    for b, s, bw, ms in zip(bands, speeds, bws, band_ms):
        compute = ms / s
        sent = b["in_bytes"] + (b["out_bytes"] if return_outputs else 0)
        transfer = (latency_ms + sent * 8 / bw * 1e3) if bw else 0.0
        per.append({"band": b.get("index"), "compute_ms": compute, "transfer_ms": transfer, "total_ms": compute + transfer})
    slowest = max(per, key=lambda p: p["total_ms"])
    return {"bands": per, "slowest": slowest["band"], "stitch_ms": stitch_ms, "total_ms": slowest["total_ms"] + stitch_ms}


def tile(model: onnx.ModelProto, src: str, dst: str, layout: str | None, heights: list[int]):
    """Extract the segment src -> dst and split it into bands of these output heights:
    (segment model, Segment, [(Band, band model)])."""
    seg_model = extract(model, src, dst)
    seg = Segment(seg_model, layout)
    return seg_model, seg, [(b, band_model(seg, b)) for b in split(seg, heights)]


def describe(seg: Segment, bands: list[Band], weights) -> list[dict]:
    """The rows of a tiles manifest: per band its rows, halo, bytes and share of the work."""
    from tlcut import dtypes

    in_shape, out_shape = list(seg.shapes[seg.input]), list(seg.shapes[seg.output])
    hi_ax, ho_ax = seg.h[seg.input], seg.h[seg.output]
    dt = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name
          for i in list(seg.model.graph.input) + list(seg.model.graph.output)}
    total_work = seg.work()
    rows = []
    for k, b in enumerate(bands):
        ish, osh = list(in_shape), list(out_shape)
        ish[hi_ax], osh[ho_ax] = b.in_rows[1] - b.in_rows[0], b.out_rows[1] - b.out_rows[0]
        # the halo: input rows beyond the band's own share of the input (the output split scaled to it)
        own_lo, own_hi = (round(r * in_shape[hi_ax] / out_shape[ho_ax]) for r in b.out_rows)
        rows.append({
            "index": b.index, "weight": weights[k], "out_rows": list(b.out_rows), "in_rows": list(b.in_rows),
            "halo_top": max(0, own_lo - b.in_rows[0]), "halo_bottom": max(0, b.in_rows[1] - own_hi),
            "border_top": b.in_rows[0] == 0, "border_bottom": b.in_rows[1] == in_shape[hi_ax],
            "input": {"name": seg.input, "dtype": dt[seg.input], "shape": ish},
            "output": {"name": seg.output, "dtype": dt[seg.output], "shape": osh},
            "in_bytes": dtypes.nbytes(ish, dt[seg.input]), "out_bytes": dtypes.nbytes(osh, dt[seg.output]),
            "work_fraction": b.work / total_work if total_work else 1.0 / len(bands),
        })
    return rows


def parse_weights(text: str | None, bands: int | None) -> list[float]:
    """--weights 1,1,2 (relative node speeds) against --bands N: one weight per band."""
    if text:
        try:
            weights = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise TlcutError(f"--weights '{text}' is not a list of numbers like 1,1,2") from None
        if bands is not None and bands != len(weights):
            raise TlcutError(f"--bands {bands} but --weights gives {len(weights)} weights; give one weight per band")
        if not weights or any(not w > 0 for w in weights):
            raise TlcutError(f"--weights '{text}' must be positive numbers like 1,1,2")
        return weights
    n = 2 if bands is None else bands
    if n < 1:
        raise TlcutError(f"--bands must be at least 1, got {n}")
    return [1.0] * n


def write_tiles(bundle, src, dst, weights: list[float], out, force: bool = False, progress=lambda *_: None) -> dict:
    """Band ONNX files for the segment between cuts ``src`` and ``dst`` of ``bundle``, sized by
    ``weights``, plus the tiles manifest; built aside and renamed into place."""
    import datetime

    from tlcut import __version__
    from tlcut.bundle import staged_dir, write_json_atomic
    from tlcut.tiles_folder import TILES_FORMAT, TILES_MANIFEST, TILES_VERSION, band_file

    from tlcut.encodings import image_layout
    from tlcut.runtime.protocol import MAX_BANDS

    cb = bundle.cut(dst)
    if str(src).strip() == "input":  # from the model input: the edge tiles the camera's image itself
        inp = bundle.inputs[0]
        start = {"cut": "input", "tensor": inp["name"], "layer": None, "index": -1,
                 "layout": image_layout(inp["shape"])}
    else:
        ca = bundle.cut(src)
        start = {"cut": ca.index, "tensor": ca.tensor, "layer": ca.layer, "index": ca.index, "layout": ca.layout}
    if cb.index <= start["index"]:
        raise TlcutError(f"--to cut {cb.index} must come after --from cut {start['cut']}")
    if len(weights) > MAX_BANDS:
        raise TlcutError(f"{len(weights)} bands; the protocol names at most {MAX_BANDS}")
    progress(f"[tiles] segment {start['cut']} ({start['layer'] or start['tensor']}) -> cut {cb.index} ({cb.layer})")
    seg_model = extract(onnx.load(str(bundle.model_path)), start["tensor"], cb.tensor)
    seg = Segment(seg_model, start["layout"])
    heights = plan_bands(seg.height(seg.output), weights)
    bands = split(seg, heights)
    rows = describe(seg, bands, weights)
    with staged_dir(Path(out), overwrite=force) as tmp:
        for row, b in zip(rows, bands):
            row["file"] = band_file(b.index)
            onnx.save_model(band_model(seg, b), str(tmp / row["file"]))
            progress(f"[tiles] band {b.index}: output rows {b.out_rows[0]}..{b.out_rows[1]}, "
                     f"input rows {b.in_rows[0]}..{b.in_rows[1]} -> {row['file']}")
        ops: dict[str, int] = {}
        for n in seg.nodes:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        tiles = {
            "format": TILES_FORMAT, "version": TILES_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tlcut_version": __version__, "model": bundle.name, "model_sha256": bundle.model_sha256,
            "from": {k: start[k] for k in ("cut", "tensor", "layer")},
            "to": {"cut": cb.index, "tensor": cb.tensor, "layer": cb.layer},
            "input": {"name": seg.input, "shape": list(seg.shapes[seg.input]), "layout": start["layout"],
                      "height_axis": seg.h[seg.input]},
            "output": {"name": seg.output, "shape": list(seg.shapes[seg.output]), "layout": cb.layout,
                       "height_axis": seg.h[seg.output]},
            "ops": dict(sorted(ops.items())), "weights": list(weights), "bands": rows,
        }
        write_json_atomic(tmp / TILES_MANIFEST, tiles)
    return tiles
