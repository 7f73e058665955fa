"""The bundle: the one directory that every tlcut step reads and writes.

This module is the only code that knows a bundle's paths and names (docs/bundle.md says the same
for people). Every runnable file is an *artifact*: a row in the manifest's ``artifacts`` table
keyed by (kind, cut, tl, engine, precision), with its file and the name, dtype and shape of its
input and output. Readers ask for an artifact by key, never by guessing a path, and the C edge
reads the same table. A new kind of file (an int8 half, a TensorRT engine) is a new key value,
not a new layout.

``manifest.json`` also holds the source, the model file's sha256, the inputs and outputs, every
activation tensor (shape, dtype, layout, Keras layer) and every cut. Steps never write into a
bundle in place: a new bundle is built in a sibling temporary directory and renamed into place, a
new half directory likewise, and the manifest is replaced with ``os.replace``. So an interrupted
step leaves either the old bundle or the new one, never a half-written one that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tlcut import dtypes
from tlcut.accuracy import accuracy_key, accuracy_rows
from tlcut.errors import TlcutError
from tlcut.files import temp_dir, write_atomic

FORMAT = "tlcut-bundle"
#: The input's pixel mapping when the manifest gives none (see Bundle.pixels).
DEFAULT_PIXELS = {"scale": 1 / 255, "zero_point": 0}
VERSION = 2
MANIFEST = "manifest.json"
MODEL = "model.onnx"

#: The portable engine: a plain ONNX file any ONNX engine reads. Backends add their own builds.
ONNX = "onnx"
KINDS = ("model", "head", "tail", "middle")
#: Precisions a half can be compiled at: float32 (the model's own), int8 (QDQ, statically calibrated).
PRECISIONS = ("float32", "int8")
#: A tail's batch dimension: 1 (every half; what devices send), a static N, or this symbolic one.
#: Rows of batch other than 1 are extra tails for an edge that batches (`tlcut serve --max-batch`).
BATCH_DYNAMIC = "dynamic"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` and rename it over: readers see the old file or the new one."""
    write_atomic(path, json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def staged_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise TlcutError(f"'{final}' already exists; choose another path or pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(final.parent, final.name + ".tmp-")
    try:
        yield tmp
        if final.exists():
            old = temp_dir(final.parent, final.name + ".old-")
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Cut:
    """A point where exactly one activation tensor is live: the head ends and the tail starts here."""

    index: int
    tensor: str
    layer: str | None
    shape: tuple[int, ...]
    dtype: str
    layout: str | None
    node_index: int  # position of the producing node in the model's topological order
    tl: bool  # whether the Transfer Layer applies (4-D, known layout, both spatial sizes >= 2)
    tl_shape: tuple[int, ...] | None  # what the TL sends: the shape of its payload
    why_no_tl: str | None = None
    tl_kind: str = "pool"  # the cut's TL (tlcut/transfer): pool unless a learned one was trained here

    @property
    def bytes(self) -> int:
        return dtypes.nbytes(self.shape, self.dtype)

    @property
    def tl_bytes(self) -> int:
        return dtypes.nbytes(self.tl_shape, self.dtype) if self.tl_shape else self.bytes

    def to_json(self) -> dict:
        d = {
            "index": self.index,
            "tensor": self.tensor,
            "layer": self.layer,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "node_index": self.node_index,
            "bytes": self.bytes,
            "tl": self.tl,
            "tl_shape": list(self.tl_shape) if self.tl_shape else None,
            "tl_bytes": self.tl_bytes,
        }
        if self.why_no_tl:
            d["why_no_tl"] = self.why_no_tl
        if self.tl_kind != "pool":  # absent means pool: manifests written before learned TLs read as before
            d["tl_kind"] = self.tl_kind
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Cut":
        return cls(
            index=d["index"],
            tensor=d["tensor"],
            layer=d.get("layer"),
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            layout=d.get("layout"),
            node_index=d["node_index"],
            tl=d["tl"],
            tl_shape=tuple(d["tl_shape"]) if d.get("tl_shape") else None,
            why_no_tl=d.get("why_no_tl"),
            tl_kind=d.get("tl_kind", "pool"),
        )


@dataclass(frozen=True)
class Artifact:
    """One runnable file of the bundle: the whole model, the head or tail of a cut, or the middle
    part between two cuts (what an edge runs before it forwards to a cloud: three tiers)."""

    kind: str  # "model" | "head" | "tail" | "middle"
    cut: int | None  # None for the whole model
    tl: bool
    engine: str  # ONNX, or the backend that built it
    precision: str
    file: str  # relative to the bundle
    input: dict  # {"name", "dtype", "shape"}
    output: dict
    calibration: dict | None = None  # int8: source, count, seed, method
    batch: int | str = 1  # leading dimension: 1, a static N, or BATCH_DYNAMIC
    to: tuple | None = None  # a middle part's end: (cut, tl), ending with the DeviceTL when tl

    @property
    def key(self) -> tuple:
        return (self.kind, self.cut, self.tl, self.engine, self.precision, self.batch, self.to)

    def to_json(self) -> dict:
        d = {"kind": self.kind, "cut": self.cut, "tl": self.tl, "engine": self.engine, "precision": self.precision,
             "file": self.file, "input": self.input, "output": self.output}
        if self.calibration:
            d["calibration"] = self.calibration
        if self.batch != 1:  # absent means 1: manifests without batched tails read as before
            d["batch"] = self.batch
        if self.to is not None:
            d["to"] = {"cut": self.to[0], "tl": self.to[1]}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Artifact":
        return cls(d["kind"], d["cut"], bool(d["tl"]), d["engine"], d["precision"], d["file"], d["input"], d["output"],
                   d.get("calibration"), d.get("batch", 1),
                   (d["to"]["cut"], bool(d["to"]["tl"])) if d.get("to") else None)


def artifact_file(kind: str, cut: int | None, tl: bool = False, engine: str = ONNX, precision: str = "float32",
                  suffix: str = ".onnx", batch: int | str = 1, to: tuple | None = None) -> str:
    """Where an artifact lives, relative to the bundle: the one place that spells a bundle's paths."""
    if kind not in KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {KINDS}")
    folder = "" if kind == "model" else f"halves/{cut}/"
    sub = "" if engine == ONNX else f"{engine}/"
    stem = kind + ("_tl" if tl else "") + ("" if precision == "float32" else f".{precision}")
    stem += "" if batch == 1 else f".batch-{batch}"
    if kind == "middle":
        stem += f".to-{to[0]}" + ("_tl" if to[1] else "")
    return f"{folder}{sub}{stem}{suffix}"


def tl_weights_file(cut: int) -> str:
    """The trained weights of the learned TL at ``cut`` (an .npz), relative to the bundle."""
    return f"transfer/{cut}.npz"


def half_folder(cut: int) -> str:
    """The folder holding every artifact of one cut; compile replaces it whole."""
    return f"halves/{cut}"


def manifest_path(folder) -> Path:
    """The manifest of the bundle at ``folder``; a folder without one is no (complete) bundle."""
    return Path(folder) / MANIFEST


# -- what backends build at run time, beside the artifacts -------------------------------------
# A backend's own builds live in a subfolder named after it (``artifact_file``). An engine that
# only runs on the machine that built it (TensorRT) is built there at run time, into a subfolder
# per machine key below that, from the portable ONNX; a device folder's build_engine.sh
# (toolchain/targets.py) files its engines the same way.

#: Inside a half's folder: where ONNX Runtime's TensorRT execution provider keeps its engines and
#: timing cache (``--backend onnxrt --providers tensorrt``).
ORT_TRT_CACHE = "onnxrt-trt-cache"


def engine_dir(folder, engine: str) -> Path:
    """The folder of backend ``engine``'s own builds inside ``folder`` (a half's, or the bundle's)."""
    return Path(folder) / engine


def half_folder_of(path, engine: str) -> Path:
    """The half's folder of the file at ``path``: its own folder, or the one above for a file in
    backend ``engine``'s build folder."""
    folder = Path(path).parent
    return folder.parent if folder.name == engine else folder


def run_time_build(onnx_path, engine: str, key: str, suffix: str) -> Path:
    """Where backend ``engine`` keeps what it built at run time, on a machine ``key``, from the ONNX
    at ``onnx_path``: ``<its folder>/<engine>/<key>/<stem><suffix>``."""
    p = Path(onnx_path)
    return engine_dir(p.parent, engine) / key / (p.stem + suffix)


def run_time_builds(onnx_path, engine: str, suffix: str) -> list[Path]:
    """Every machine's ``run_time_build`` of ``onnx_path`` that is on disk, sorted."""
    p = Path(onnx_path)
    return sorted(engine_dir(p.parent, engine).glob(f"*/{p.stem}{suffix}"))


def engine_dir_of(built, engine: str) -> Path:
    """Backend ``engine``'s build folder holding the file ``built``: compile's build in it, or a run-time
    build one machine key below it."""
    folder = Path(built).parent
    return folder if folder.name == engine else folder.parent


def timing_cache_file(engine_folder, key: str) -> Path:
    """The timing cache of machine ``key`` in a build folder (``engine_dir``)."""
    return Path(engine_folder) / f"timing-{key}.cache"


def build_record(built) -> Path:
    """The record beside a built engine, what it was built from and for: ``X.engine.json``."""
    p = Path(built)
    return p.with_name(p.name + ".json")


#: What identifies a fidelity row: the placement's fields, then the engine and precision both halves ran at.
FIDELITY_KEY = ("where", "cut", "tl", "tl_kind", "encoding", "quality", "engine", "precision")


def fidelity_key(row: dict) -> tuple:  # a row from before kinds were recorded: pool, the only TL then
    return tuple(row.get(k, "pool" if k == "tl_kind" and row.get("tl") else None) for k in FIDELITY_KEY)


#: Model files whose sha256 was checked in this process: (path, size, mtime, inode) -> sha256.
_CHECKED: dict[tuple, str] = {}
#: What a bundle folder holds besides its manifest (see ``not_a_bundle``).
_BUNDLE_PARTS = {MODEL, MODEL + ".data", "halves", "tensorrt", "openvino", "onnxrt-trt-cache"}


def _foreign(folder: Path) -> str:
    """What ``folder`` holds that is no piece of a bundle: a few names, or ''."""
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name not in _BUNDLE_PARTS and ".tmp" not in p.name)
    except OSError as e:
        return f"what it cannot list ({e.strerror})"
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def not_a_bundle(folder: Path) -> str:
    """Why ``folder`` (a folder without a manifest) is no bundle, and what to do. Never advise
    ``--force`` (which replaces the folder) unless all it holds is the pieces of a bundle."""
    inner = sorted({m.parent for m in [*folder.glob(f"*/{MANIFEST}"), *folder.glob(f"*/*/{MANIFEST}")]})
    if inner:
        more = f" (or {', '.join(map(str, inner[1:3]))})" if len(inner) > 1 else ""
        return f"'{folder}' is not a tlcut bundle (no {MANIFEST}) but holds one: did you mean {inner[0]}?{more}"
    extra = _foreign(folder)
    if not extra:
        return f"'{folder}' is not a complete tlcut bundle (no {MANIFEST}); re-run `tlcut export MODEL -o {folder} --force`"
    return (f"'{folder}' is not a tlcut bundle (no {MANIFEST}; it holds {extra}); "
            "give the folder `tlcut export -o` wrote, or export into a new one")


def check_replaceable(folder) -> None:
    """``--force`` replaces a bundle, never a file or a folder holding anything else (results, a home)."""
    folder = Path(folder)
    if folder.is_file() or (not manifest_path(folder).is_file() and _foreign(folder)):
        what = "a file" if folder.is_file() else f"a folder holding {_foreign(folder)}"
        raise TlcutError(f"'{folder}' is not a tlcut bundle but {what}; --force replaces only a bundle: choose another -o")


class Bundle:
    """A complete bundle on disk. Open one with ``Bundle.open``; build one with ``staged_dir``."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.cuts = [Cut.from_json(c) for c in manifest["cuts"]]

    @classmethod
    def open(cls, path) -> "Bundle":
        path = Path(path)
        mf = path / MANIFEST
        if path.is_file():
            hint = f"; did you mean {path.parent}?" if (path.parent / MANIFEST).is_file() else ""
            raise TlcutError(f"'{path}' is a file, not a bundle folder (the folder `tlcut export -o` wrote){hint}")
        if not path.is_dir():
            raise TlcutError(f"bundle '{path}' does not exist; create one with `tlcut export MODEL -o {path}`")
        if not mf.is_file():
            raise TlcutError(not_a_bundle(path))
        try:
            manifest = json.loads(mf.read_text())
        except (ValueError, OSError) as e:
            raise TlcutError(f"'{mf}' is not readable JSON ({e}); re-export the bundle") from None
        if manifest.get("format") != FORMAT:
            raise TlcutError(f"'{mf}' is not a tlcut bundle manifest (format={manifest.get('format')!r})")
        if manifest.get("version") != VERSION:
            raise TlcutError(f"bundle '{path}' has format version {manifest.get('version')}, this tlcut reads version "
                             f"{VERSION}; re-export it")
        try:
            model_file = manifest["model"]["file"]
            bundle = cls(path, manifest)
        except (KeyError, TypeError, ValueError) as e:
            raise TlcutError(f"'{mf}' is damaged ({type(e).__name__}: {e}); re-export the bundle with --force") from None
        if not (path / model_file).is_file():
            raise TlcutError(f"bundle '{path}' lacks its model file {model_file}; re-export it")
        bundle.check_model()
        return bundle

    def check_model(self) -> None:
        """Refuse a model file that is not the one exported: its sha256 against the manifest's (once
        per process per file version: 57 MB hash in about 0.1 s), its weights file by size."""
        p, st = self.model_path, self.model_path.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        redo = f"re-export the bundle: `tlcut export MODEL -o {self.path} --force`"
        if _CHECKED.get(key) != self.model_sha256:
            if sha256_file(p) != self.model_sha256:
                raise TlcutError(f"{p} has changed since export (its sha256 is not the manifest's); {redo}")
            _CHECKED[key] = self.model_sha256
        w = self.manifest["model"].get("weights")
        wp = self.path / w["file"] if w else None
        if wp and (not wp.is_file() or wp.stat().st_size != w["bytes"]):
            raise TlcutError(f"the weights file {wp} is missing or not the exported size; {redo}")

    # -- what the model is ------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    @property
    def model_sha256(self) -> str:
        return self.manifest["model"]["sha256"]

    @property
    def name(self) -> str:
        return self.manifest["source"]["name"]

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    @property
    def pixels(self) -> tuple[float, int]:
        """How a camera's uint8 pixel q maps to the model input: x = (q - zero_point) * scale. The
        input's ``pixels`` entry says so; without one, pixels / 255 (what tlcut's own models train on).
        A one-line error if the input is not an image (uint8 and JPEG inputs need one)."""
        self.image_shape()
        p = self.inputs[0].get("pixels") or DEFAULT_PIXELS
        return float(p["scale"]), int(p.get("zero_point", 0))

    def image_shape(self) -> tuple[int, int, int, str]:
        """(height, width, channels, layout) of an image input: rank 4, batch 1, 1 or 3 channels."""
        from tlcut.encodings import image_layout  # the wire's rule (docs/protocol.md), in one place

        inp = self.inputs[0]
        shape = list(inp["shape"])
        layout = image_layout(shape)
        if layout == "NHWC":
            return shape[1], shape[2], shape[3], layout
        if layout == "NCHW":
            return shape[2], shape[3], shape[1], layout
        raise TlcutError(f"the model input {inp['name']} {shape} is not an image (batch 1, 1 or 3 channels); "
                         "send it raw, float16 or int8")

    def cut(self, ref) -> Cut:
        """Find a cut by index, tensor name or Keras layer name (the last cut of that layer)."""
        text = str(ref).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if 0 <= i < len(self.cuts):
                return self.cuts[i]
        else:
            for c in self.cuts:
                if c.tensor == text:
                    return c
            by_layer = [c for c in self.cuts if c.layer == text]
            if by_layer:
                return by_layer[-1]
        raise TlcutError(
            f"cut '{text}' not found; the model has {len(self.cuts)} cuts (0..{len(self.cuts) - 1}), "
            f"list them with `tlcut cuts {self.path}`"
        )

    # -- artifacts ---------------------------------------------------------------------------
    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact.from_json(a) for a in self.manifest.get("artifacts", [])]

    def find(self, kind: str, cut: int | None = None, tl: bool = False, engine: str = ONNX,
             precision: str = "float32", batch: int | str = 1, to: tuple | None = None) -> Artifact | None:
        """The artifact with this key; for a backend's engine, its own build or else the portable ONNX."""
        key = (kind, cut, tl, engine, precision, batch, to)
        found = next((a for a in self.artifacts if a.key == key), None)
        return found or (self.find(kind, cut, tl, ONNX, precision, batch, to) if engine != ONNX else None)

    def batched_tail(self, cut: int, tl: bool, engine: str = ONNX, precision: str = "float32") -> Artifact | None:
        """The tail an edge batches with: the symbolic-batch one, else the largest static batch."""
        rows = [a for a in self.artifacts if a.kind == "tail" and a.cut == cut and a.tl == tl
                and a.precision == precision and a.batch != 1 and a.engine in (engine, ONNX)]
        # its own engine's build before the portable ONNX; dynamic before any static N
        rows.sort(key=lambda a: (a.engine != engine, a.batch != BATCH_DYNAMIC, -(a.batch if a.batch != BATCH_DYNAMIC else 0)))
        return rows[0] if rows else None

    def runnable(self, kind: str, cut: int | None = None, tl: bool = False, engine: str = ONNX,
                 precision: str = "float32") -> Path:
        """The file a backend called ``engine`` runs for this artifact: its own build where there is
        one, else the portable ONNX. A clear error, with the command that makes it, if neither exists."""
        a = self.find(kind, cut, tl, engine, precision)
        if a is None:
            what = "the whole model" if kind == "model" else f"{kind}{' with the TL' if tl else ''} of cut {cut}"
            prec = "" if precision == "float32" else f" --precision {precision}"
            raise TlcutError(f"bundle '{self.path}' has no {precision} {what}; run "
                             f"`tlcut compile {self.path} --cuts {cut} --tl {'on' if tl else 'off'}{prec}` first")
        p = self.path / a.file
        if not p.is_file():
            raise TlcutError(f"{p} is listed in the manifest but missing; re-run `tlcut compile {self.path} --cuts {cut}`")
        return p

    def put_artifacts(self, new: list[Artifact]) -> None:
        """Record ``new`` (their files are already in place), replacing rows with the same keys; save."""
        keys = {a.key for a in new}
        keep = [a for a in self.manifest.get("artifacts", []) if Artifact.from_json(a).key not in keys]
        self.manifest["artifacts"] = keep + [a.to_json() for a in new]
        self.save_manifest()

    # -- measured accuracy -------------------------------------------------------------------
    @property
    def accuracy(self) -> list[dict]:
        """`tlcut eval`'s test-split rows (tlcut/accuracy.py); a table from before rows reads converted."""
        return accuracy_rows(self.manifest.get("accuracy", []), {c.index: c.tl_kind for c in self.cuts})

    def record_accuracy(self, row: dict) -> None:
        """Record ``row`` (``Placement.identity``, ``precision``, the result) in place of its key's; save."""
        self.manifest["accuracy"] = [r for r in self.accuracy if accuracy_key(r) != accuracy_key(row)] + [row]
        self.save_manifest()

    # -- measured fidelity (toolchain/fidelity.py) --------------------------------------------
    @property
    def fidelity(self) -> list[dict]:
        """What `tlcut fidelity` (and an int8 compile) measured against the float32 model: one row
        per (placement, engine, precision), keyed by ``fidelity_key``; docs/bundle.md has the fields."""
        return self.manifest.get("fidelity", [])

    def record_fidelity(self, rows: list[dict]) -> None:
        """Record ``rows``, replacing those with the same keys; save."""
        keys = {fidelity_key(r) for r in rows}
        keep = [r for r in self.fidelity if fidelity_key(r) not in keys]
        self.manifest["fidelity"] = keep + list(rows)
        self.save_manifest()

    def half_dir(self, cut: Cut) -> Path:
        return self.path / half_folder(cut.index)

    def save_manifest(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest)
