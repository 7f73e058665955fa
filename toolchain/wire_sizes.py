"""What a wire encoding whose size depends on the content (``measured`` in tlcut/encodings/:
int8+zstd) sends at each cut, measured on real images, as bench measures JPEG's.

bench times every encoding of a cut's tensor on a random tensor, which is right for the fixed-size
ones (their bytes are dims x size) and wrong for these: noise does not compress and a ReLU map
does. So for each measured encoding this runs the model on real images ('elpv' where installed, or
a folder), takes every cut's tensor (and the TL's payload, with the trained weights of a learned
TL), and encodes and restores it as device and edge do. Each profile row's entry of that encoding
is replaced by one with the median bytes over the images, the encode and restore times on those
tensors, and ``measured`` saying on what; the plan uses those bytes, never a ratio.
"""

from __future__ import annotations

import time

import numpy as np

from tlcut import encodings, transfer
from tlcut.bundle import Bundle, Cut
from tlcut.runtime import backends, protocol
from tlcut.stats import summary
from tlcut.toolchain import surgery

#: images per measurement: the median of a few is steady (sizes vary by a few percent between images)
COUNT = 16


def measured_encodings(applies_to: str = encodings.CUT) -> list[str]:
    return [e.name for e in encodings.ALL if e.measured and applies_to in e.applies_to]


def record(bundle: Bundle, rows: list[dict], images: str | None = None, *, count: int = COUNT,
           threads: int | None = None, progress=print, shared: dict | None = None) -> None:
    """bench's hook: in each profile row (a cut), replace ``encodings[name]`` (and ``encodings_tl``)
    of every measured encoding with what ``cut_sizes`` measured on real images. ``shared``, a dict
    kept across one bench's precisions, measures them once (the float32 model's tensors)."""
    if shared is not None and "wire_sizes" in shared:
        sizes = shared["wire_sizes"]
    else:
        sizes = cut_sizes(bundle, [bundle.cuts[r["index"]] for r in rows], images, count=count, threads=threads,
                          progress=progress)
        if shared is not None:
            shared["wire_sizes"] = sizes
    merged = shared.setdefault("wire_sizes_rows", {}) if shared is not None else {}
    for r in rows:
        for key, got in sizes.get(r["index"], {}).items():
            if key == "encodings" or key in r:  # a row without the TL's entries stays without
                # a new dict per cut (bench shares one between cuts of a shape), the same one for each precision
                k = (r["index"], key)
                if k not in merged:
                    merged[k] = {**r.get(key, {}), **got}
                r[key] = merged[k]


def cut_sizes(bundle: Bundle, cuts: list[Cut], images: str | None = None, *, count: int = COUNT,
              threads: int | None = None, progress=print) -> dict[int, dict]:
    """{cut index: {"encodings": {name: entry}, "encodings_tl": {name: entry}}} for every measured
    encoding: entry = serialize and deserialize (stats of encode + framing, parse + restore), bytes
    (the payload's median over the images), bytes_min, bytes_max, and measured (images, count)."""
    names = measured_encodings()
    cuts = [c for c in cuts if c.dtype == "float32"]  # the encodings that quantize take a float32 tensor
    if not names or not cuts:
        return {}
    from tlcut.runtime import run as rt

    source = images if images is not None else rt.default_images(bundle)
    xs = rt.inputs(bundle, source, count)
    said = source or "random (no images given, elpv-dataset not installed): sizes are those of noise"
    inp = bundle.inputs[0]["name"]
    model = surgery.extract_segment(bundle.model_path, [inp], [c.tensor for c in cuts])
    tls = {}
    for c in cuts:
        if c.tl:
            weights = transfer.weights_of(bundle, c)
            if weights is None and transfer.parse(c.tl_kind).has_weights:  # zeros would flatter it: leave it unmeasured
                progress(f"[bench] the {c.tl_kind} TL at cut {c.index} has no trained weights: its {', '.join(names)} "
                         "bytes are not measured (the plan then does not offer them)")
                continue
            tls[c.index] = backends.get(backends.ONNXRT).runner(surgery.device_tl(c, weights).SerializeToString(),
                                                                threads=threads).activate()
    samples: dict[tuple, list] = {}
    for name in names:  # first calls import and set up the codec: not part of a request's cost
        _trip(name, np.zeros((1, 8), np.float32))
    try:
        with backends.get(backends.ONNXRT).runner(model.SerializeToString(), threads=threads) as whole:
            for x in xs:
                outs = whole.infer({inp: x}, check=False)
                for c in cuts:
                    t = outs[c.tensor]
                    for name in names:
                        samples.setdefault((c.index, "encodings", name), []).append(_trip(name, t))
                    if c.index in tls:
                        p = next(iter(tls[c.index].infer({c.tensor: t}, check=False).values()))
                        for name in names:
                            samples.setdefault((c.index, "encodings_tl", name), []).append(_trip(name, p))
    finally:
        for r in tls.values():
            r.deactivate()
    out: dict[int, dict] = {}
    for (index, key, name), s in samples.items():
        size = [b for b, _, _ in s]
        out.setdefault(index, {}).setdefault(key, {})[name] = {
            "serialize": summary([e for _, e, _ in s], 1e3), "deserialize": summary([d for _, _, d in s], 1e3),
            "bytes": int(np.median(size)), "bytes_min": int(min(size)), "bytes_max": int(max(size)),
            "measured": {"images": said, "count": len(size)}}
    for name in names:
        med = [out[c.index]["encodings"][name]["bytes"] for c in cuts]
        progress(f"[bench] {name} on {len(xs)} images ({source or 'random'}): median bytes per cut "
                 f"{min(med)}..{max(med)} (raw float32 {min(c.bytes for c in cuts)}..{max(c.bytes for c in cuts)})")
    return out


def _trip(name: str, t: np.ndarray) -> tuple[int, float, float]:
    """(payload bytes, device seconds, edge seconds) of one tensor over the wire in ``name``."""
    t0 = time.perf_counter()
    w, code, scale, zp = protocol.encode(t, name)
    frames = [bytes(f) for f in protocol.tensor_frames(protocol.REQUEST, w, 1, 0, encoding=code, scale=scale,
                                                       zero_point=zp)]
    t1 = time.perf_counter()
    h, wire = protocol.decode(frames)
    protocol.restore(h, wire, t.shape)
    return len(frames[1]), t1 - t0, time.perf_counter() - t1

