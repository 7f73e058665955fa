"""`tlcut eval`: accuracy of the deployed halves, run the way `tlcut run` runs them.

An edge serving the cut runs in this process on loopback, and every test image goes through the
same Device as `tlcut run`: head (with DeviceTL), wire encoding, ZeroMQ, decoding, tail. So the
accuracy measured is that of what is served, wire format and transfer layer included. The test
split's accuracy is recorded in the bundle under the placement's identity (the TL's kind spelled
out) and the precision, where `plan --max-accuracy-drop` reads it (``accuracy_of``).
"""

from __future__ import annotations

import contextlib

import numpy as np

from tlcut import transfer
from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, Placement
from tlcut.runtime.backends import DEFAULT


def evaluate(bundle: Bundle, placement: Placement, *, data: str | None = None, split: str = "test",
             limit: int | None = None, progress=None, backend=DEFAULT, precision: str = "float32") -> dict:
    from tlcut.models import datasets
    from tlcut.runtime.run import Device, image_input
    from tlcut.runtime.serve import local_edge

    report = bundle.manifest["source"].get("training") or {}
    inp = bundle.inputs[0]
    if inp.get("layout") != "NHWC" or len(inp["shape"]) != 4:
        raise TlcutError("eval needs an image model with an NHWC input (a Keras model exported by tlcut)")
    if split not in ("test", "val", "train"):
        raise TlcutError(f"--split must be test, val or train, got '{split}'")
    dargs = datasets.data_args(report)
    dargs.update(size=inp["shape"][1], channels=inp["shape"][3])
    data = data or report.get("data", {}).get("source_arg") or "elpv"
    ds = datasets.load(data, limit=limit, **dargs)
    part = getattr(ds, split)
    if report.get("classes") and report["classes"] != ds.classes:
        raise TlcutError(f"the model was trained on classes {report['classes']}, the data has {ds.classes}")
    n_out = bundle.outputs[0]["shape"][-1]
    if n_out != len(ds.classes):
        raise TlcutError(f"the model outputs {n_out} classes, the data has {len(ds.classes)}")
    if placement.tl:  # None: the cut's kind; a named kind only where the bundle holds it trained
        cut = bundle.cuts[placement.cut]
        placement = placement.with_(tl_kind=transfer.held(cut, placement.tl_kind or cut.tl_kind).name)
    served = [] if placement.where == DEVICE else ["input" if placement.where == EDGE else str(placement.cut)]
    hits, predicted, payload = [], [], 0
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(local_edge(bundle, served, tl="on" if placement.tl else "off", backend=backend,
                                            precision=precision)) if served else None
        dev = stack.enter_context(Device(bundle, placement, edge=ep, backend=backend, precision=precision))
        it = range(len(part))
        for i in (progress(it) if progress else it):
            x = image_input(bundle, part.x[i])
            y, rec = dev.infer(x)
            predicted.append(int(np.argmax(y)))
            hits.append(int(predicted[-1] == part.y[i]))
            payload = rec["payload_bytes"]
    result = {"accuracy": sum(hits) / len(part), "n": len(part), "per_image": hits, "predicted": predicted,
              "labels": [int(v) for v in part.y], "classes": ds.classes, "split": split,
              "placement": placement.to_json(), "precision": precision, "backend": getattr(backend, "name", backend),
              "payload_bytes": payload, "data": ds.info}
    if split == "test" and limit is None:  # what `plan --max-accuracy-drop` reads; never a partial or tuning split
        bundle.record_accuracy({**placement.identity, "precision": precision, "label": placement.label}
                               | {k: result[k] for k in ("accuracy", "n", "backend")}
                               | {"data": ds.info.get("name"), "split_sha256": ds.info.get("split_sha256")})
    return result
