"""`tlcut compile`: write the runnable halves of the chosen cuts into the bundle.

For each cut: the plain head and tail, the halves with the TL where it applies, and what the
backend builds from each. A half directory is built aside and renamed into place, then the
manifest records it; an interrupted compile leaves the bundle as it was.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tlcut.bundle import Bundle, Cut, staged_dir
from tlcut.errors import TlcutError
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


def tl_modes(cut: Cut, tl: str) -> list[bool]:
    if tl not in ("on", "off", "both"):
        raise TlcutError(f"--tl must be on, off or both, got '{tl}'")
    if tl == "on" and not cut.tl:
        raise TlcutError(f"the TL cannot apply at cut {cut.index} ({cut.why_no_tl}); use --tl off or --tl both")
    modes = {"on": [True], "off": [False], "both": [False, True]}[tl]
    return [m for m in modes if not m or cut.tl]


def compile_cuts(bundle: Bundle, cuts: list[Cut], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, progress=None) -> dict:
    """Write halves for ``cuts``; return the manifest entries written."""
    be = backends.get(backend)
    for c in cuts:
        tl_modes(c, tl)  # fail before writing anything
    model = onnx.load(str(bundle.model_path))
    written = {}
    it = progress(cuts) if progress else cuts
    for cut in it:
        final = bundle.half_dir(cut)
        with staged_dir(final, overwrite=True) as tmp:
            files = {}
            for with_tl in tl_modes(cut, tl):
                sfx = "_tl" if with_tl else ""
                for part, fn in (("head", surgery.head), ("tail", surgery.tail)):
                    p = tmp / f"{part}{sfx}.onnx"
                    onnx.save(fn(model, cut, tl=with_tl), str(p))
                    art = be.compile(p, tmp / be.name, threads=threads)
                    files[f"{part}{sfx}"] = {"onnx": str(p.relative_to(tmp)), be.name: str(art.relative_to(tmp))}
            write_io(tmp / "io.txt", {k: tmp / v["onnx"] for k, v in files.items()})
        entry = {"cut": cut.index, "tensor": cut.tensor, "backend": be.name, "dir": str(final.relative_to(bundle.path)),
                 "files": files, "payload": {
                     "plain": {"name": surgery.payload_name(cut, False), "shape": list(cut.shape), "dtype": cut.dtype},
                     **({"tl": {"name": surgery.payload_name(cut, True), "shape": list(cut.tl_shape), "dtype": cut.dtype}}
                        if cut.tl and "head_tl" in files else {}),
                 }}
        bundle.manifest.setdefault("compiled", {})[str(cut.index)] = entry
        bundle.save_manifest()
        written[cut.index] = entry
    return written


def write_io(path: Path, halves: dict) -> None:
    """io.txt: each ONNX file's input as "<stem> <name> <dtype> <rank> <dims...>", for readers without
    an ONNX parser (the C edge)."""
    from onnx import helper

    lines = []
    for stem, f in sorted(halves.items()):
        m = onnx.load(str(f), load_external_data=False)
        inits = {i.name for i in m.graph.initializer}
        (inp,) = [i for i in m.graph.input if i.name not in inits]
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        import numpy as np

        dt = np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)).name
        lines.append(" ".join([stem, inp.name, dt, str(len(dims)), *map(str, dims)]))
    Path(path).write_text("\n".join(lines) + "\n")


def half_path(bundle: Bundle, cut: Cut, part: str, tl: bool, backend: str = backends.DEFAULT) -> Path:
    """Where the runnable ``part`` ('head' or 'tail') of ``cut`` lies; a clear error if not compiled."""
    entry = bundle.compiled(cut)
    key = f"{part}{'_tl' if tl else ''}"
    if not entry or key not in entry["files"]:
        hint = "--tl on" if tl else "--tl off"
        raise TlcutError(
            f"cut {cut.index} has no compiled {key}; run `tlcut compile {bundle.path} --cuts {cut.index} {hint}` first"
        )
    f = entry["files"][key]
    rel = f.get(backend) or f["onnx"]
    p = bundle.path / entry["dir"] / rel
    if not p.is_file():
        raise TlcutError(f"{p} is missing; re-run `tlcut compile {bundle.path} --cuts {cut.index}`")
    return p
