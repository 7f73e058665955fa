"""`tlcut fidelity`: how far each lossy choice moves the model's answers, measured on real images
without labels.

A lossy choice is a precision of the halves (int8 QDQ from `tlcut compile --precision int8`), the
Transfer Layer, or a wire encoding (float16 or int8 of a cut's tensor, uint8 or JPEG of the input).
For each (placement, engine, precision) the same N images go through the float32 whole model on
ONNX Runtime, the reference, and through the choice as it is served: head, encode, restore, tail.
Three numbers per choice, on the logits where the model ends with a Softmax (random-weight softmax
outputs are near uniform and hide a difference; tests/test_keras_models.py compares the same way):
max relative error (largest |y - ref| over the largest |ref|, worst image), cosine (mean, and its
worst image) and top-1 agreement (share of images whose argmax is the reference's).

Agreement says nothing about a model that answers every image alike (random weights can), so the
reference outputs are first compared among themselves: where they do not move beyond MOVE_TOL,
every row is recorded as unknown, never as agreement. Images are never the calibration images: the
ELPV test split (calibration reads the train split), or a folder less the images calibration read.

Rows go into the manifest's ``fidelity`` table (Bundle.record_fidelity, docs/bundle.md);
``fidelity_of`` is what the plan reads.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from tlcut import encodings
from tlcut.bundle import ONNX, Bundle, fidelity_key, sha256_file
from tlcut.errors import TlcutError
from tlcut.placement import CUT_ENCODINGS, DEVICE, EDGE, INPUT_ENCODINGS, SPLIT, Placement, tl_modes
from tlcut.runtime import backends

DEFAULT_COUNT = 32
#: The reference outputs must differ between images by more than this share of their size.
MOVE_TOL = 1e-3
STILL = "output does not move with the input"
#: What a lossless placement at float32 computes: the whole model's answer, by construction.
EXACT = {"status": "exact", "max_rel_error": 0.0, "cosine": 1.0, "cosine_min": 1.0, "top1": 1.0}
METRICS = ("max_rel_error", "cosine", "cosine_min", "top1")


def metrics(ys, refs) -> dict:
    """The three numbers for outputs ``ys`` against reference outputs ``refs``, image by image."""
    floor = max(float(np.abs(r).max()) for r in refs) or 1.0  # an all-zero reference image: the set's scale
    rel, cos, top = [], [], []
    for y, r in zip(ys, refs):
        y, r = np.asarray(y, np.float64).ravel(), np.asarray(r, np.float64).ravel()
        rel.append(float(np.abs(y - r).max()) / (float(np.abs(r).max()) or floor))
        ny, nr = np.linalg.norm(y), np.linalg.norm(r)
        cos.append(float(y @ r / (ny * nr)) if ny and nr else float(ny == nr))
        top.append(int(np.argmax(y) == np.argmax(r)))
    return {"max_rel_error": max(rel), "cosine": float(np.mean(cos)), "cosine_min": min(cos),
            "top1": float(np.mean(top))}


def movement(refs) -> float:
    """How far the reference outputs move from image to image, as a share of their size: 0 for a
    model that gives every image the same answer."""
    big = max(float(np.abs(r).max()) for r in refs)
    if len(refs) < 2 or not big > 0:
        return 0.0
    return max(float(np.abs(r - refs[0]).max()) for r in refs[1:]) / big


# -- images ---------------------------------------------------------------------------------------
def load_images(bundle: Bundle, source: str | None = None, count: int = DEFAULT_COUNT) -> tuple[list, dict]:
    """``count`` model inputs never used for calibration, from ``source`` ('elpv', the default: its
    test split; or a folder), and where they came from."""
    if count < 2:
        raise TlcutError(f"fidelity compares images with each other: -n must be at least 2, got {count}")
    h, w, c, layout = bundle.image_shape()
    inp = bundle.inputs[0]
    if source in (None, "elpv"):
        from tlcut.models import datasets
        from tlcut.runtime.run import image_input

        if h != w:
            raise TlcutError(f"ELPV images are square and the model takes {h}x{w}; give --images DIR")
        args = datasets.data_args(bundle.manifest["source"].get("training") or {})
        args.update(size=h, channels=c)  # the split eval and calibration use
        ds = datasets.load("elpv", **args)
        xs = [image_input(bundle, im) for im in ds.test.x[:count]]
        info = {"source": "elpv", "split": "test", "split_sha256": ds.info.get("split_sha256")}
    else:
        from tlcut.models.images import load_folder

        folder = Path(source)
        if not folder.is_dir():
            raise TlcutError(f"image folder '{source}' does not exist; give --images DIR or --images elpv")
        xs, left_out = _without_calibration(bundle, folder, load_folder(folder, inp["shape"], layout, inp["dtype"]))
        xs = xs[:count]
        info = {"source": str(folder.resolve()), "calibration_images_left_out": left_out}
        if len(xs) < 2:
            raise TlcutError(f"'{source}' holds {len(xs)} image(s) besides the {left_out} calibration read; "
                             "give --images a folder with at least 2 others")
    info["n"] = len(xs)
    return xs, info


def _without_calibration(bundle: Bundle, folder: Path, xs: list) -> tuple[list, int]:
    """``xs`` less any image an int8 artifact of the bundle was calibrated on from this folder."""
    src = str(folder.resolve())
    recs = [a.calibration for a in bundle.artifacts if a.calibration and a.calibration.get("source") == src]
    if not recs:
        return xs, 0
    from tlcut.calibrate.int8 import calibration_inputs

    seen = set()
    for rec in {(r.get("count", 0), r.get("seed", 0)) for r in recs}:
        seen |= {_digest(a) for a in calibration_inputs(bundle, src, *rec)[0]}
    keep = [x for x in xs if _digest(x) not in seen]
    return keep, len(xs) - len(keep)


def _digest(a) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).digest()


# -- running the halves -----------------------------------------------------------------------------
class _Runners:
    """Active runners, one per (engine, artifact); a model or tail ends at its logits. ``release``
    closes all but the reference between steps, so a model with many cuts never holds them all."""

    REFERENCE = (backends.ONNXRT, "model", None, False, "float32")

    def __init__(self, bundle: Bundle, threads: int | None):
        self.bundle, self.threads, self.cache, self.engines = bundle, threads, {}, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release(keep=())

    def release(self, keep=(REFERENCE,)) -> None:
        for key in [k for k in self.cache if k not in keep]:
            if self.cache[key] is not None:
                self.cache[key][0].deactivate()
            del self.cache[key]

    def run(self, engine: str, kind: str, cut: int | None, tl: bool, precision: str, x: np.ndarray) -> np.ndarray:
        key = (engine, kind, cut, tl, precision)
        if key not in self.cache:
            import onnx

            from tlcut.toolchain import surgery

            path = self.bundle.runnable(kind, cut, tl, ONNX, precision)
            src, self.cache[key] = path, None
            if kind != "head":
                m = surgery.logits(onnx.load(str(path)))
                if {o.name for o in m.graph.output} & {i.name for i in m.graph.input}:
                    return x  # a tail that is only the Softmax: its logits are its input
                src = m.SerializeToString()
            r = self.engines.setdefault(engine, backends.get(engine)).runner(src, threads=self.threads)
            r.activate()
            self.cache[key] = (r, next(iter(r.input_metadata())))
        if self.cache[key] is None:
            return x
        r, name = self.cache[key]
        return next(iter(r.infer({name: x}).values()))


def _wire(name: str, x: np.ndarray, quality, pixels, shape) -> np.ndarray:
    """``x`` after the trip over the wire in encoding ``name``: encoded as the device does, restored
    as an edge does."""
    enc = encodings.get(name)
    scale, zp = pixels if enc.pixels else (None, 0)
    wire, s, z = enc.encode(x, scale=scale, zero_point=zp, quality=quality)
    return enc.restore(wire, s, z, served_shape=shape)


def _ends_in_softmax(bundle: Bundle) -> bool:
    import onnx

    g = onnx.load(str(bundle.model_path), load_external_data=False).graph
    outs = {o.name for o in g.output}
    return any(n.op_type == "Softmax" and n.output[0] in outs for n in g.node)


@functools.lru_cache(maxsize=256)
def _sha(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))[:16]


def _files(bundle: Bundle, parts) -> dict:
    """{file: sha256 prefix} of the artifacts a row measured: a row whose files changed is stale."""
    out = {}
    for kind, cut, tl, precision in parts:
        rel = bundle.find(kind, cut, tl, ONNX, precision).file
        st = (bundle.path / rel).stat()
        out[rel] = _sha(str(bundle.path / rel), st.st_mtime_ns, st.st_size)
    return out


# -- measuring --------------------------------------------------------------------------------------
def measure(bundle: Bundle, *, cuts=None, tl: str = "both", engines=(backends.DEFAULT,), precisions=None,
            wire=None, jpeg_quality=(encodings.get("jpeg").default_quality,), whole: bool = True,
            images: str | None = None, count: int = DEFAULT_COUNT, threads: int | None = None,
            progress=None) -> list[dict]:
    """Measure and record each (placement, engine, precision) the bundle has halves for: ``cuts``
    (default: every cut with halves) with the TL per ``tl``, and with ``whole`` device only and edge
    only; each wire encoding in ``wire`` (default: all) that applies; each of ``precisions``
    (default: every one the bundle has) on each of ``engines``. Returns the rows recorded."""
    for e in wire or ():
        if e not in encodings.NAMES:
            raise TlcutError(f"unknown encoding '{e}'; use one of {', '.join(encodings.NAMES)}")
    for e in engines:
        backends.backend_class(e)  # an unknown name is a one-line error here
    have = list(dict.fromkeys(a.precision for a in bundle.artifacts))
    for p in precisions or ():
        if p not in have:
            raise TlcutError(f"bundle '{bundle.path}' has no {p} halves (it has {', '.join(have)}); "
                             f"compile them first, e.g. `tlcut compile {bundle.path} --cuts K --precision {p} --calib elpv`")
    precisions = list(precisions or have)
    compiled = {a.cut for a in bundle.artifacts if a.kind == "head" and a.precision in precisions}
    bare = [c.index for c in cuts or () if c.index not in compiled]
    if bare:
        raise TlcutError(f"cut {bare[0]} has no {' or '.join(precisions)} halves; run "
                         f"`tlcut compile {bundle.path} --cuts {bare[0]}` first")
    cuts = [c for c in bundle.cuts if c.index in compiled] if cuts is None else cuts
    cut_wire = [e for e in (wire or CUT_ENCODINGS) if e in CUT_ENCODINGS]
    in_wire = [e for e in (wire or INPUT_ENCODINGS) if e in INPUT_ENCODINGS]
    xs, info = load_images(bundle, images, count)
    pixels, shape = bundle.pixels, bundle.inputs[0]["shape"]
    base = {"compared": "logits" if _ends_in_softmax(bundle) else "output", "images": info}
    rows = []
    with _Runners(bundle, threads) as rn:
        refs = [rn.run(backends.ONNXRT, "model", None, False, "float32", x) for x in xs]
        base["moves"] = round(movement(refs), 6)

        def add(placement, engine, precision, ys, files):
            row = {**placement.identity, "engine": engine, "precision": precision, "label": placement.label}
            row.update(base, files=files)
            if base["moves"] > MOVE_TOL:
                row.update(status="measured", **metrics(ys, refs))
            else:
                row.update(status="unknown", reason=STILL)
            rows.append(row)

        tasks = [(e, p, c) for e in engines for p in precisions for c in ([None] if whole else []) + list(cuts)]
        for engine, prec, cut in (progress(tasks) if progress else tasks):
            rn.release()
            if cut is None:
                if not bundle.find("model", None, False, ONNX, prec):
                    continue
                files = _files(bundle, [("model", None, False, prec)])
                ys = [rn.run(engine, "model", None, False, prec, x) for x in xs]
                add(Placement(DEVICE), engine, prec, ys, files)
                for enc in in_wire:
                    takes = encodings.get(enc).default_quality is not None
                    for q in (jpeg_quality if takes else [None]):
                        got = ys if enc == encodings.DEFAULT else [
                            rn.run(engine, "model", None, False, prec, _wire(enc, x, q, pixels, shape)) for x in xs]
                        add(Placement(EDGE, None, False, enc, q), engine, prec, got, files)
                continue
            for with_tl in tl_modes(cut, tl):
                if not all(bundle.find(k, cut.index, with_tl, ONNX, prec) for k in ("head", "tail")):
                    continue
                files = _files(bundle, [(k, cut.index, with_tl, prec) for k in ("head", "tail")])
                payloads = [rn.run(engine, "head", cut.index, with_tl, prec, x) for x in xs]
                for enc in cut_wire:
                    ys = [rn.run(engine, "tail", cut.index, with_tl, prec, _wire(enc, p, None, pixels, p.shape))
                          for p in payloads]
                    add(Placement(SPLIT, cut.index, with_tl, enc, tl_kind=cut.tl_kind if with_tl else None),
                        engine, prec, ys, files)
    bundle.record_fidelity(rows)
    return rows


def describe(row: dict) -> str:
    """One row in words: what was measured, and how it agrees."""
    what = f"{row['label']} on {row['engine']} {row['precision']}"
    if row["status"] != "measured":
        return f"{what}: unknown: {row.get('reason', 'not measured')}"
    return (f"{what}: top-1 {row['top1']:.1%} of {row['images']['n']}, cosine {row['cosine']:.4f} "
            f"(worst {row['cosine_min']:.4f}), max rel error {row['max_rel_error']:.2%}")


def after_int8_compile(bundle: Bundle, cuts, tl: str, calib: str, engine: str, say=None) -> list[dict]:
    """What `tlcut compile --precision int8` measures of what it wrote: the int8 halves and whole
    model, raw on the wire, on the engine it compiled for, on images beside the calibration ones.
    One line per cut (and the whole model); a measurement that cannot be made is said, not fatal."""
    say = say or (lambda _msg: None)
    try:
        rows = measure(bundle, cuts=cuts, tl=tl, engines=[engine], precisions=["int8"], wire=[encodings.DEFAULT],
                       images=calib, count=DEFAULT_COUNT)
    except TlcutError as e:
        say(f"[fidelity] int8: unknown ({e}); measure later with `tlcut fidelity {bundle.path} --images DIR`")
        return []
    for cut in [None, *(c.index for c in cuts)]:
        mine = [r for r in rows if r["cut"] == cut and r["where"] != EDGE]
        if mine:
            say(f"[fidelity] {'; '.join(describe(r) for r in mine)}")
    return rows


# -- reading ----------------------------------------------------------------------------------------
def fidelity_of(bundle: Bundle, placement: Placement, engine: str = backends.DEFAULT,
                precision: str = "float32") -> dict | None:
    """How ``placement`` with both halves on ``engine`` at ``precision`` agrees with the float32
    model: the recorded row (status "measured", the three numbers, images, ...), or EXACT for a
    lossless placement at float32. None where it is unknown: never measured, measured on a model
    whose output does not move, or measured on files that have changed since."""
    if placement.lossless and precision == "float32":
        return dict(EXACT)
    want = fidelity_key({**placement.identity, "engine": engine, "precision": precision})
    row = next((r for r in bundle.fidelity if fidelity_key(r) == want), None)
    if row is None or row.get("status") != "measured":
        return None
    for rel, sha in row.get("files", {}).items():
        p = bundle.path / rel
        if not p.is_file() or _sha(str(p), p.stat().st_mtime_ns, p.stat().st_size) != sha:
            return None
    return dict(row)


def deployment_fidelity(bundle: Bundle, placement: Placement, device: tuple[str, str],
                        edge: tuple[str, str]) -> dict | None:
    """Fidelity where the device runs (engine, precision) ``device`` and the edge ``edge``. Only the
    side that computes counts for device only and edge only; a cut whose halves differ reads the
    worse of its two uniform rows, marked ``estimated`` (unknown if either is)."""
    if placement.where == DEVICE or device == edge:
        return fidelity_of(bundle, placement, *device)
    if placement.where == EDGE:
        return fidelity_of(bundle, placement, *edge)
    a, b = fidelity_of(bundle, placement, *device), fidelity_of(bundle, placement, *edge)
    if a is None or b is None:
        return None
    worse = {"max_rel_error": max, "cosine": min, "cosine_min": min, "top1": min}
    return {"status": "estimated", **{k: f(a[k], b[k]) for k, f in worse.items()}}
