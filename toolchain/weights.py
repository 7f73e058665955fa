"""Where a bundle's weights live: inside model.onnx, or beside it (ONNX external data) for a
large model, so that no later step holds or serialises a copy of them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx

from tlcut.bundle import MODEL
from tlcut.errors import TlcutError

#: Where a large model's weights go, next to model.onnx (ONNX external data, resolved from its folder).
WEIGHTS_FILE = MODEL + ".data"
#: Above this many bytes of weights they go to WEIGHTS_FILE: every later step then reads them from
#: disk instead of holding and serialising copies, and the 2 GiB protobuf limit cannot bite. Below
#: it model.onnx stays one self-contained file (the C edge and other single-file readers take it).
EXTERNAL_WEIGHTS_BYTES = 100 * 2**20
_EXTERNAL_MIN_TENSOR = 1024  # smaller tensors stay inline, as onnx.save does
_ALIGN = 4096  # page-aligned offsets let ONNX Runtime map the file instead of reading it


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _location(t: onnx.TensorProto) -> str | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in t.external_data if e.key == "location"), None)


def place_weights(model: onnx.ModelProto, folder: Path, storage: dict[str, bytes] | None = None) -> dict | None:
    """Put the weights where the bundle keeps them; return the weights file's facts, or None.

    ``storage`` holds the tensors tf2onnx kept out of the proto (its large-model format), keyed by
    each tensor's ``location``; entries are dropped as they are written, so the bytes exist once.
    Small models get them back inline. The model still needs saving (``save_model``).
    """
    storage = storage if storage is not None else {}
    tensors = list(_all_tensors(model.graph))
    for t in tensors:
        loc = _location(t)
        if loc is not None and loc not in storage:
            raise TlcutError(f"tensor '{t.name}' refers to external data '{loc}' that the converter did not return; "
                             "re-run the export, and report it if it persists")

    def size(t):
        loc = _location(t)
        return len(storage[loc]) if loc is not None else len(t.raw_data)

    total = sum(size(t) for t in tensors if size(t) >= _EXTERNAL_MIN_TENSOR)
    if total <= EXTERNAL_WEIGHTS_BYTES:
        for t in tensors:
            loc = _location(t)
            if loc is not None:
                t.raw_data = storage.pop(loc)
                del t.external_data[:]
                t.data_location = onnx.TensorProto.DEFAULT
        return None
    digest, offset = hashlib.sha256(), 0
    with open(Path(folder) / WEIGHTS_FILE, "wb") as f:
        for t in tensors:
            if size(t) < _EXTERNAL_MIN_TENSOR:
                continue
            loc = _location(t)
            data = storage.pop(loc) if loc is not None else t.raw_data
            pad = -offset % _ALIGN
            f.write(b"\0" * pad)
            digest.update(b"\0" * pad)
            offset += pad
            f.write(data)
            digest.update(data)
            t.ClearField("raw_data")
            del t.external_data[:]
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(data)))):
                e = t.external_data.add()
                e.key, e.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL
            offset += len(data)
            del data
    return {"file": WEIGHTS_FILE, "bytes": offset, "sha256": digest.hexdigest()}


def has_external_weights(model: onnx.ModelProto) -> bool:
    """Whether some tensor's data is outside the proto (then ONNX Runtime must load from a path)."""
    return any(_location(t) is not None for t in _all_tensors(model.graph))


def save_model(model: onnx.ModelProto, path: Path, weights: dict | None) -> None:
    """Write model.onnx. With a weights file its sha256 goes into the model's metadata, so the
    model file's own sha256, which profiles and plans carry, changes whenever the weights do."""
    if weights is not None:
        meta = {p.key: p for p in model.metadata_props}
        entry = meta.get("tlcut.weights_sha256") or model.metadata_props.add()
        entry.key, entry.value = "tlcut.weights_sha256", weights["sha256"]
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
