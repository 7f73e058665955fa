"""`tlcut compile`: write the runnable halves of the chosen cuts into the bundle.

For each cut: the plain head and tail, the halves with the TL where it applies, and what the
backend builds from each, every file recorded as an artifact of the bundle (tlcut/bundle.py). A
cut's folder is built aside and renamed into place, then the manifest records it; an interrupted
compile leaves the bundle as it was.
"""

from __future__ import annotations

from pathlib import Path

import os
import shutil

import numpy as np
import onnx
from onnx import helper

from tlcut.bundle import BATCH_DYNAMIC, ONNX, PRECISIONS, Artifact, Bundle, Cut, artifact_file, half_folder, staged_dir
from tlcut.errors import TlcutError
from tlcut import transfer
from tlcut.placement import TL_CHOICES, tl_modes
from tlcut.runtime import backends
from tlcut.toolchain import surgery


def select_cuts(bundle: Bundle, spec: str | None) -> list[Cut]:
    """Cuts from a spec like ``3,17,40-45``, tensor or layer names, or ``all``."""
    if not spec:
        raise TlcutError(
            f"name the cuts to compile with --cuts (e.g. --cuts 3,17 or --cuts all); list them with `tlcut cuts {bundle.path}`"
        )
    if spec.strip() == "all":
        return list(bundle.cuts)
    out: list[Cut] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        a, sep, b = part.partition("-")
        if sep and a.isdigit() and b.isdigit():
            if int(a) > int(b):
                raise TlcutError(f"cut range '{part}' is empty; write it low-high")
            out.extend(bundle.cut(i) for i in range(int(a), int(b) + 1))
        else:
            out.append(bundle.cut(part))
    return sorted(set(out), key=lambda c: c.index)


def compile_cuts(bundle: Bundle, cuts: list[Cut], *, tl: str = "both", backend=backends.DEFAULT,
                 threads: int | None = None, precision: str = "float32", calib: str | None = None,
                 calib_method: str = "entropy", calib_count: int = 64, calib_batch: int = 8,
                 batch: int | str = 1, progress=None, say=None) -> dict[int, list[Artifact]]:
    """Write the halves of ``cuts`` at ``precision`` and record them as artifacts; return what was
    written per cut. int8 halves are QDQ, calibrated on ``calib`` (calibrate/int8.py); the whole
    model is quantized too, so device only and edge only can run at int8 beside the splits.
    ``calib_batch`` calibration samples have their intermediate outputs held at once.
    ``batch`` (N or "dynamic") adds tails of that batch size for an edge that batches requests.
    int8 halves are then measured against the float32 model (toolchain/fidelity.py), a line per cut to ``say``."""
    be = backends.get(backend)
    batch = parse_batch(batch)
    if precision not in PRECISIONS:
        raise TlcutError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    for c in cuts:
        tl_modes(c, tl_choice(c, tl))  # fail before writing anything
    tl = tl if tl in TL_CHOICES else "on"  # a kind, held at every cut (checked above)
    calib_info, xs = None, None
    if precision == "int8":
        from tlcut.calibrate.int8 import METHODS, WEIGHT_BITS, calibration_inputs, check_batch

        if not calib:
            raise TlcutError("--precision int8 needs calibration images: --calib elpv or --calib FOLDER")
        if calib_method not in METHODS:
            raise TlcutError(f"--calib-method must be one of {', '.join(METHODS)}, got '{calib_method}'")
        check_batch(calib_batch)
        xs, calib_info = calibration_inputs(bundle, calib, calib_count)
        calib_info.update(method=calib_method, weight_bits=WEIGHT_BITS)
    model = load_model(bundle)
    if precision == "int8":
        _quantize_model(bundle, be, xs, calib_info, threads, calib_batch)
    written = {}
    it = progress(cuts) if progress else cuts
    for cut in it:
        final = bundle.half_dir(cut)
        arts = []
        with staged_dir(final, overwrite=True) as tmp:
            if final.exists():  # other precisions and engines of this cut stay
                shutil.copytree(final, tmp, dirs_exist_ok=True)
            for with_tl in tl_modes(cut, tl):
                payloads = None
                weights = transfer.weights_of(bundle, cut) if with_tl else None
                for kind, fn in (("head", surgery.head), ("tail", surgery.tail)):
                    half = fn(model, cut, tl=with_tl, weights=weights)
                    rel = artifact_file(kind, cut.index, with_tl, precision=precision)
                    p = tmp / Path(rel).relative_to(half_folder(cut.index))
                    p.parent.mkdir(parents=True, exist_ok=True)
                    if precision == "int8":
                        from tlcut.calibrate.int8 import quantize

                        f32 = tmp / f"{kind}.calib-src.onnx"
                        onnx.save(half, str(f32))
                        name = bundle.inputs[0]["name"] if kind == "head" else surgery.payload_name(cut, with_tl)
                        feeds = [{name: x} for x in (xs if kind == "head" else payloads)]
                        if kind == "head":
                            payloads = _run_all(half, name, xs)
                        quantize(f32, p, feeds, calib_method, calib_batch)
                        f32.unlink()
                    else:
                        onnx.save(half, str(p))
                    io = describe_io(p)
                    arts.append(Artifact(kind, cut.index, with_tl, ONNX, precision, rel, *io, calib_info))
                    if be.builds:
                        brel = artifact_file(kind, cut.index, with_tl, be.name, precision, be.suffix)
                        bp = tmp / Path(brel).relative_to(half_folder(cut.index))
                        be.compile(p, bp, threads=threads)
                        arts.append(Artifact(kind, cut.index, with_tl, be.name, precision, brel, *io, calib_info))
                    if kind == "tail" and batch != 1:
                        arts += _batched_tail(p, tmp, cut, with_tl, precision, batch, be, threads, calib_info)
        bundle.put_artifacts(arts)
        written[cut.index] = arts
    if precision == "int8":
        from tlcut.toolchain.fidelity import after_int8_compile

        after_int8_compile(bundle, cuts, tl, calib, be.name, say)
    return written


def compile_middle(bundle: Bundle, start: Cut, end: Cut, *, tl: str = "off", to_tl: bool = False) -> list[Artifact]:
    """The middle parts from ``start`` (with and without the TL there, per ``tl``) to ``end`` (ending
    with the DeviceTL when ``to_tl``): what an edge runs before it forwards to a cloud (three tiers)."""
    if end.index <= start.index:
        raise TlcutError(f"--to {end.index} must be a later cut than {start.index}")
    if to_tl and not end.tl:
        raise TlcutError(f"the TL cannot apply at cut {end.index} ({end.why_no_tl}); use --to-tl off")
    modes = tl_modes(start, tl_choice(start, tl))
    model = load_model(bundle)
    final = bundle.half_dir(start)
    arts = []
    with staged_dir(final, overwrite=True) as tmp:
        if final.exists():  # the cut's other artifacts stay
            shutil.copytree(final, tmp, dirs_exist_ok=True)
        for with_tl in modes:
            part = surgery.middle(model, start, with_tl, end, to_tl, transfer.weights_of(bundle, start) if with_tl else None,
                                  transfer.weights_of(bundle, end) if to_tl else None)
            rel = artifact_file("middle", start.index, with_tl, to=(end.index, to_tl))
            p = tmp / Path(rel).relative_to(half_folder(start.index))
            p.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(part, str(p))
            arts.append(Artifact("middle", start.index, with_tl, ONNX, "float32", rel, *describe_io(p),
                                 to=(end.index, to_tl)))
    bundle.put_artifacts(arts)
    return arts


def tl_choice(cut: Cut, tl: str) -> str:
    """``--tl``: on, off, both, or a transfer-layer kind (tlcut/transfer), which compiles as ``on``
    where the bundle holds that kind trained at ``cut`` and is refused with one line elsewhere."""
    if tl in TL_CHOICES:
        return tl
    transfer.held(cut, tl)
    return "on"


def load_model(bundle: Bundle) -> onnx.ModelProto:
    """The bundle's model; a file that does not parse (truncated, overwritten) is one error line."""
    try:
        return onnx.load(str(bundle.model_path))
    except Exception as e:  # protobuf's DecodeError, onnx's own, OSError: all mean the file is bad
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise TlcutError(f"{bundle.model_path} is not a readable ONNX model ({why}); re-export the bundle: "
                         f"`tlcut export MODEL -o {bundle.path} --force`") from None


def parse_batch(text) -> int | str:
    """``--batch``: a positive int or "dynamic" (a symbolic batch dimension)."""
    if str(text).strip().lower() == BATCH_DYNAMIC:
        return BATCH_DYNAMIC
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise TlcutError(f"--batch takes a batch size (1, 8, ...) or 'dynamic', got '{text}'")
    return n


def _batched_tail(src: Path, tmp: Path, cut: Cut, tl: bool, precision: str, batch, be, threads, calib_info):
    """The tail at ``src`` with batch ``batch``, checked against it row by row, and its backend build."""
    half = onnx.load(str(src))
    batched = surgery.with_batch(half, batch)
    surgery.check_batched(half, batched, batch, f"the tail{' with the TL' if tl else ''} of cut {cut.index}")
    rel = artifact_file("tail", cut.index, tl, precision=precision, batch=batch)
    p = tmp / Path(rel).relative_to(half_folder(cut.index))
    onnx.save(batched, str(p))
    io = describe_io(p)
    for d in io:  # a symbolic dimension reads as 0 there; the manifest says -1
        d["shape"][0] = d["shape"][0] or -1
    arts = [Artifact("tail", cut.index, tl, ONNX, precision, rel, *io, calib_info, batch)]
    if be.builds:
        brel = artifact_file("tail", cut.index, tl, be.name, precision, be.suffix, batch)
        be.compile(p, tmp / Path(brel).relative_to(half_folder(cut.index)), threads=threads)
        arts.append(Artifact("tail", cut.index, tl, be.name, precision, brel, *io, calib_info, batch))
    return arts


def _run_all(model: onnx.ModelProto, name: str, xs) -> list:
    """The outputs of ``model`` for each input (float32: what a quantized tail will be fed)."""
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [s.run(None, {name: x})[0] for x in xs]


def _quantize_model(bundle: Bundle, be, xs, calib_info, threads, calib_batch) -> None:
    """The whole model at int8, beside model.onnx, written aside and renamed into place."""
    from tlcut.calibrate.int8 import quantize

    rel = artifact_file("model", None, precision="int8")
    final = bundle.path / rel
    tmp = final.with_name(final.name + ".tmp")
    quantize(bundle.model_path, tmp, [{bundle.inputs[0]["name"]: x} for x in xs], calib_info["method"], calib_batch)
    os.replace(tmp, final)
    io = describe_io(final)
    arts = [Artifact("model", None, False, ONNX, "int8", rel, *io, calib_info)]
    if be.builds:
        brel = artifact_file("model", None, False, be.name, "int8", be.suffix)
        (bundle.path / brel).parent.mkdir(parents=True, exist_ok=True)
        be.compile(final, bundle.path / brel, threads=threads)
        arts.append(Artifact("model", None, False, be.name, "int8", brel, *io, calib_info))
    bundle.put_artifacts(arts)


def describe_io(path) -> tuple[dict, dict]:
    """The single input and the first output of an ONNX file: name, dtype, shape."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def one(vi):
        t = vi.type.tensor_type
        return {"name": vi.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                "shape": [d.dim_value for d in t.shape.dim]}

    ins = [i for i in m.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise TlcutError(f"{path} has {len(ins)} inputs; tlcut serves halves with exactly one")
    return one(ins[0]), one(m.graph.output[0])
