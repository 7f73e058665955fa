"""`tlcut compile`: write the runnable halves of the chosen cuts into the bundle.

For each cut: the plain head and tail, the halves with the TL where it applies, and what the
backend builds from each, every file recorded as an artifact of the bundle (tlcut/bundle.py). A
cut's folder is built aside and renamed into place, then the manifest records it; an interrupted
compile leaves the bundle as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from tlcut.bundle import ONNX, Artifact, Bundle, Cut, artifact_file, half_folder, staged_dir
from tlcut.errors import TlcutError
from tlcut.placement import tl_modes
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


def compile_cuts(bundle: Bundle, cuts: list[Cut], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, progress=None) -> dict[int, list[Artifact]]:
    """Write the halves of ``cuts`` and record them as artifacts; return what was written per cut."""
    be = backends.get(backend)
    for c in cuts:
        tl_modes(c, tl)  # fail before writing anything
    model = onnx.load(str(bundle.model_path))
    written = {}
    it = progress(cuts) if progress else cuts
    for cut in it:
        final = bundle.half_dir(cut)
        arts = []
        with staged_dir(final, overwrite=True) as tmp:
            for with_tl in tl_modes(cut, tl):
                for kind, fn in (("head", surgery.head), ("tail", surgery.tail)):
                    rel = artifact_file(kind, cut.index, with_tl)
                    p = tmp / Path(rel).relative_to(half_folder(cut.index))
                    p.parent.mkdir(parents=True, exist_ok=True)
                    onnx.save(fn(model, cut, tl=with_tl), str(p))
                    io = describe_io(p)
                    arts.append(Artifact(kind, cut.index, with_tl, ONNX, "float32", rel, *io))
                    if be.builds:
                        brel = artifact_file(kind, cut.index, with_tl, be.name, "float32", be.suffix)
                        bp = tmp / Path(brel).relative_to(half_folder(cut.index))
                        be.compile(p, bp, threads=threads)
                        arts.append(Artifact(kind, cut.index, with_tl, be.name, "float32", brel, *io))
        bundle.replace_artifacts(cut.index, arts)
        written[cut.index] = arts
    return written


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
