"""`tlcut eval`: accuracy of the deployed halves, run the way `tlcut run` runs them.

An edge serving the cut runs in this process on loopback, and every test image goes through the
same Device as `tlcut run`: head (with DeviceTL), wire encoding, ZeroMQ, decoding, tail. So the
accuracy measured is that of what is served, wire format included.
"""

from __future__ import annotations

import socket
import threading

import numpy as np

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(bundle: Bundle, cut: str, *, data: str | None = None, tl: bool = True, encoding: str = "raw",
             split: str = "test", limit: int | None = None, progress=None) -> dict:
    from tlcut.models import datasets
    from tlcut.runtime.run import Device
    from tlcut.runtime.serve import Edge
    from tlcut.toolchain.train import data_args

    report = bundle.manifest["source"].get("training") or {}
    inp = bundle.inputs[0]
    if inp.get("layout") != "NHWC" or len(inp["shape"]) != 4:
        raise TlcutError("eval needs an image model with an NHWC input (a Keras model exported by tlcut)")
    dargs = data_args(report)
    dargs.update(size=inp["shape"][1], channels=inp["shape"][3])
    data = data or report.get("data", {}).get("source_arg") or "elpv"
    ds = datasets.load(data, limit=limit, **dargs)
    if split not in ("test", "val", "train"):
        raise TlcutError(f"--split must be test, val or train, got '{split}'")
    part = getattr(ds, split)
    if report.get("classes") and report["classes"] != ds.classes:
        raise TlcutError(f"the model was trained on classes {report['classes']}, the data has {ds.classes}")
    n_out = bundle.outputs[0]["shape"][-1]
    if n_out != len(ds.classes):
        raise TlcutError(f"the model outputs {n_out} classes, the data has {len(ds.classes)}")
    edge_cut = "input" if cut == "input" else cut
    served = [edge_cut] if cut != "device" else []
    ep = f"tcp://127.0.0.1:{_free_port()}"
    edge = Edge(bundle, served, tl="on" if tl else "off") if served else None
    stop, ready = threading.Event(), threading.Event()
    th = None
    if edge:
        th = threading.Thread(target=edge.serve, args=(ep,), kwargs={"stop": stop, "ready": ready}, daemon=True)
        th.start()
        ready.wait(30)
    correct, payload = 0, 0
    try:
        with Device(bundle, cut, tl=tl, edge=ep if edge else None, encoding=encoding) as dev:
            it = range(len(part))
            for i in (progress(it) if progress else it):
                x = part.x[i][None].astype(np.float32) / 255.0
                y, rec = dev.infer(x)
                correct += int(np.argmax(y) == part.y[i])
                payload = rec["payload_bytes"]
    finally:
        stop.set()
        if th:
            th.join(10)
        if edge:
            edge.close()
    return {"accuracy": correct / len(part), "n": len(part), "split": split, "cut": cut, "tl": tl,
            "encoding": encoding, "payload_bytes": payload, "data": ds.info}
