"""`tlcut compile BUNDLE --target triton -o REPO`: a Triton model repository of a bundle's tails.

Why: a fleet that already runs Triton serves tlcut's tails like any other model; devices reach it
with ``tlcut run --edge triton+grpc://HOST:8001``. Each tail (and the whole model, for ``--cut
input``) becomes one model, named by ``runtime.triton.model_name`` so the device maps (cut, tl)
to a name without asking: ``model``, ``cut-K``, ``cut-K-tl``; a TensorRT engine the bundle holds
for a tail becomes a second model ``cut-K[-tl]-trt`` (``platform: tensorrt_plan``).

tlcut's halves are batch-1 static. Without ``max_batch`` (the default) ``max_batch_size: 0`` and
the full shapes are written. With it, the tail's batch dimension is made symbolic
(``surgery.with_batch``, or the bundle's own batched tail from ``tlcut compile --batch dynamic``)
and checked row by row against the batch-1 tail on random inputs before it is written, and the
config lists dims without the batch and a ``dynamic_batching`` block. TensorRT plans are batch-1
engines and always get ``max_batch_size: 0``.

The folder is staged beside REPO and renamed into place; ``tlcut-triton.json`` in it says which
(cut, tl) each model serves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from tlcut.bundle import run_time_builds, staged_dir
from tlcut.errors import TlcutError
from tlcut.runtime.backends import TENSORRT, backend_class
from tlcut.runtime.triton import DATATYPES, model_name

INDEX = "tlcut-triton.json"
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


def tensor_specs(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of an ONNX graph: name, numpy dtype name, shape (dim_param -> -1)."""
    init = {i.name for i in model.graph.initializer}

    def spec(vi):
        t = vi.type.tensor_type
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": vi.name, "dtype": dt, "shape": shape}

    return [spec(v) for v in model.graph.input if v.name not in init], [spec(v) for v in model.graph.output]


def _dims(shape: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def config_pbtxt(name: str, inputs: list[dict], outputs: list[dict], *, platform: str | None = None,
                 backend: str | None = "onnxruntime", instances: int = 1, kind: str = "cpu", max_batch: int = 0,
                 preferred_batch: list[int] | None = None, max_queue_delay_us: int = 0) -> str:
    """Triton's model configuration (protobuf text format). With ``max_batch`` the given shapes
    keep their batch dimension first and it is left out of ``dims``, as Triton wants."""

    def block(kw, specs):
        rows = []
        for s in specs:
            if s["dtype"] not in DATATYPES:
                raise TlcutError(f"{name}: tensor '{s['name']}' is {s['dtype']}, which Triton cannot serve")
            dims = s["shape"][1:] if max_batch else s["shape"]
            rows.append(f'  {{\n    name: "{s["name"]}"\n    data_type: TYPE_{DATATYPES[s["dtype"]]}\n'
                        f"    dims: {_dims(dims)}\n  }}")
        return f"{kw} [\n" + ",\n".join(rows) + "\n]\n"

    head = f'name: "{name}"\n' + (f'platform: "{platform}"\n' if platform else f'backend: "{backend}"\n')
    text = head + f"max_batch_size: {max_batch}\n" + block("input", inputs) + block("output", outputs)
    text += f"instance_group [\n  {{\n    count: {instances}\n    kind: {KINDS[kind]}\n  }}\n]\n"
    if max_batch:
        text += "dynamic_batching {\n"
        if preferred_batch:
            text += f"  preferred_batch_size: {_dims(preferred_batch)}\n"
        text += f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    return text


def _batched(bundle, art, path: Path) -> onnx.ModelProto:
    """The tail at ``path`` with a symbolic batch: the bundle's own batched tail, else made and checked here."""
    from tlcut.toolchain import surgery
    from tlcut.bundle import BATCH_DYNAMIC

    own = bundle.batched_tail(art.cut, art.tl) if art.kind == "tail" else None
    if own is not None and own.batch == BATCH_DYNAMIC and own.precision == art.precision:
        return onnx.load(str(bundle.path / own.file))
    half = onnx.load(str(path))
    batched = surgery.with_batch(half, "dynamic")
    what = "the whole model" if art.kind == "model" else f"the tail{' with the TL' if art.tl else ''} of cut {art.cut}"
    surgery.check_batched(half, batched, "dynamic", what)
    return batched


def _trt_engines(bundle, art) -> list[Path]:
    """TensorRT engines the bundle holds for this tail: manifest rows of engine 'tensorrt' (or
    engines built at run time beside the ONNX, runtime/backends/tensorrt.py)."""
    rows = [bundle.path / a.file for a in bundle.artifacts if a.engine == TENSORRT and a.kind == art.kind
            and a.cut == art.cut and a.tl == art.tl and a.precision == art.precision and a.batch == 1]
    if not rows and art.kind == "tail":
        rows = run_time_builds(bundle.path / art.file, TENSORRT, backend_class(TENSORRT).suffix)
    return [p for p in rows if p.is_file()]


def write_repository(bundle, cuts: list[str], out, *, tl: str = "both", instances: int = 1, kind: str = "cpu",
                     max_batch: int = 0, preferred_batch: list[int] | None = None, max_queue_delay_us: int = 0,
                     precision: str = "float32", force: bool = False, progress=lambda _: None) -> dict:
    """Write the repository; returns its index ({model name: {cut, tl, engine, input, outputs}})."""
    from tlcut.placement import EDGE, Placement, tl_modes

    if instances < 1:
        raise TlcutError(f"--instances must be at least 1, got {instances}")
    if kind not in KINDS:
        raise TlcutError(f"--kind must be cpu or gpu, got '{kind}'")
    if max_batch < 0 or max_queue_delay_us < 0:
        raise TlcutError("--max-batch and --max-queue-delay-us cannot be negative")
    if preferred_batch and not max_batch:
        raise TlcutError("--preferred-batch is a dynamic batching setting: add --max-batch N")
    if preferred_batch and any(p < 1 or p > max_batch for p in preferred_batch):
        raise TlcutError(f"--preferred-batch sizes must be in 1..--max-batch ({max_batch}), got {preferred_batch}")
    if not cuts:
        raise TlcutError("name the tails to export with --cut K (repeatable; 'input' for the whole model alone)")
    arts = [("model", None, False)]
    for spec in cuts:
        p = Placement.resolve(bundle, spec)
        if p.where == EDGE:
            continue
        if p.cut is None:
            raise TlcutError("a Triton repository holds tails: --cut K or input, not device")
        cut = bundle.cuts[p.cut]
        for with_tl in tl_modes(cut, tl):
            if tl == "both" and with_tl and not bundle.find("tail", cut.index, True, precision=precision):
                continue  # "both": the TL tail where it was compiled
            arts.append(("tail", cut.index, with_tl))
    out = Path(out)
    if out.exists() and not force:
        raise TlcutError(f"'{out}' exists; add --force to replace it")
    index = {}
    with staged_dir(out, overwrite=force) as tmp:
        for kind_, cut, with_tl in dict.fromkeys(arts):
            art = bundle.find(kind_, cut, with_tl, precision=precision)
            if art is None:
                bundle.runnable(kind_, cut, with_tl, precision=precision)  # its one-line error, with the command
            src = bundle.path / art.file
            model = _batched(bundle, art, src) if max_batch else onnx.load(str(src), load_external_data=False)
            ins, outs = tensor_specs(model)
            name = model_name(cut, with_tl)
            d = tmp / name / "1"
            d.mkdir(parents=True)
            if max_batch:
                onnx.save(model, str(d / "model.onnx"))
            else:
                shutil.copyfile(src, d / "model.onnx")
                _copy_external(src, d, model)
            (tmp / name / "config.pbtxt").write_text(config_pbtxt(
                name, ins, outs, instances=instances, kind=kind, max_batch=max_batch,
                preferred_batch=preferred_batch, max_queue_delay_us=max_queue_delay_us))
            index[name] = {"cut": cut, "tl": with_tl, "engine": "onnxruntime", "inputs": ins, "outputs": outs,
                           "max_batch_size": max_batch}
            progress(f"[triton] {name}: {ins[0]['name']} {ins[0]['dtype']}{ins[0]['shape']} -> "
                     f"{', '.join(o['name'] for o in outs)}")
            for eng in _trt_engines(bundle, art):
                tname = model_name(cut, with_tl, TENSORRT)
                (tmp / tname / "1").mkdir(parents=True)
                shutil.copyfile(eng, tmp / tname / "1" / "model.plan")
                ins1, outs1 = tensor_specs(onnx.load(str(src), load_external_data=False)) if max_batch else (ins, outs)
                (tmp / tname / "config.pbtxt").write_text(config_pbtxt(
                    tname, ins1, outs1, platform="tensorrt_plan", backend=None, instances=instances, kind="gpu"))
                index[tname] = {**index[name], "engine": TENSORRT, "inputs": ins1, "outputs": outs1,
                                "max_batch_size": 0}
                progress(f"[triton] {tname}: TensorRT plan {eng.name} (runs only on the GPU and TensorRT it was built with)")
                break
        (tmp / INDEX).write_text(json.dumps({"format": "tlcut-triton", "version": 1, "bundle": str(bundle.path),
                                             "model_sha256": bundle.model_sha256, "precision": precision,
                                             "naming": "model | cut-K | cut-K-tl (+ -trt for a TensorRT plan)",
                                             "models": index}, indent=1) + "\n")
    return index


def _copy_external(src: Path, dst: Path, model: onnx.ModelProto) -> None:
    """External weight files the ONNX names, copied beside it (Triton loads them from the version folder)."""
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and (src.parent / loc).is_file() and not (dst / loc).exists():
                shutil.copyfile(src.parent / loc, dst / loc)
