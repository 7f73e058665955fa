"""`tlcut perf`: many devices against one edge, every result checked (after Triton's perf_analyzer).

Each device is its own process with its own connection. Device d sends request i with an input
drawn from seed (d, i) and checks the reply against the whole model run here on the same input,
so a result delivered for the wrong input, or a wrong result, is counted, never missed. Outcomes
per request: offloaded and correct, ran locally after the edge was unreachable (fell back),
failed (an error reached the caller), or wrong.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

from tlcut.errors import TlcutError
from tlcut.stats import summary


def _worker(args: dict) -> dict:
    import onnxruntime as ort

    from tlcut.bundle import Bundle
    from tlcut.placement import Placement
    from tlcut.runtime.client import EdgeError, EdgeUnavailable
    from tlcut.runtime.run import Device
    from tlcut.runtime.security import ClientCurve

    b = Bundle.open(args["bundle"])
    inp = b.inputs[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    full = ort.InferenceSession(str(b.model_path), so, providers=["CPUExecutionProvider"])
    curve = ClientCurve.from_files(args["key"], args["edge_key"]) if args.get("key") else None
    out = {"device": args["device"], "ok": 0, "wrong": 0, "failed": 0, "fell_back": 0, "latency_ms": [],
           "errors": {}, "timeline": []}
    t_start = time.perf_counter()
    with Device(b, Placement.from_json(args["placement"]), edge=args["edge"], timeout_s=args["timeout"], retries=args["retries"],
                fallback=args["fallback"], probe_s=args["probe"], curve=curve, insecure=args["insecure"],
                threads=1) as dev:
        for i in range(args["requests"]):
            x = np.random.default_rng([args["device"], i]).random(inp["shape"]).astype(inp["dtype"])
            t0 = time.perf_counter()
            try:
                y, rec = dev.infer(x)
            except (EdgeUnavailable, EdgeError, TlcutError) as e:
                out["failed"] += 1
                out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1
                out["timeline"].append((round(t0 - t_start, 3), "failed"))
                continue
            ms = (time.perf_counter() - t0) * 1e3
            want = full.run(None, {inp["name"]: x})[0]
            tol = args["tolerance"]
            good = y.shape == want.shape and float(np.abs(y - want).max()) <= tol
            if not good:
                out["wrong"] += 1
                kind = "wrong"
            elif rec.get("fallback"):
                out["fell_back"] += 1
                kind = "local"
            else:
                out["ok"] += 1
                kind = "edge"
            out["latency_ms"].append(ms)
            out["timeline"].append((round(t0 - t_start, 3), kind))
            if args.get("interval"):
                time.sleep(args["interval"])
        out["counts"] = dev.report()
    out["seconds"] = time.perf_counter() - t_start
    return out


def perf(bundle, placement, edge: str, *, devices: int = 8, requests: int = 500,
         timeout: float = 2.0, retries: int = 2, fallback: bool = True, probe: float = 1.0, key=None, edge_key=None,
         insecure: bool = False, tolerance: float = 1e-5, interval: float = 0.0) -> dict:
    """Run ``devices`` device processes of ``requests`` each; return per-device and overall results."""
    if devices < 1 or requests < 1:
        raise TlcutError("--devices and --requests must be at least 1")
    args = [{"bundle": str(bundle), "placement": placement.to_json(), "edge": edge, "device": d, "requests": requests,
             "timeout": timeout, "retries": retries, "fallback": fallback, "probe": probe, "key": key,
             "edge_key": edge_key, "insecure": insecure, "tolerance": tolerance, "interval": interval}
            for d in range(devices)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(devices) as pool:
        results = pool.map(_worker, args)
    wall = time.perf_counter() - t0
    lat = np.array([v for r in results for v in r["latency_ms"]]) if any(r["latency_ms"] for r in results) else np.zeros(1)
    total = {k: sum(r[k] for r in results) for k in ("ok", "wrong", "failed", "fell_back")}
    retried = sum(r["counts"].get("retried", 0) for r in results)
    dropped = sum(r["counts"].get("dropped_replies", 0) for r in results)
    return {"devices": devices, "requests_per_device": requests, "requests": devices * requests, **total,
            "retried": retried, "dropped_late_replies": dropped, "wall_s": wall,
            "throughput_rps": devices * requests / wall if wall else None,
            "latency_ms": summary(lat),
            "accounted": total["ok"] + total["wrong"] + total["failed"] + total["fell_back"] == devices * requests,
            "per_device": [{k: r[k] for k in ("device", "ok", "wrong", "failed", "fell_back", "errors", "seconds")}
                           | {"counts": r["counts"]} for r in results],
            "timeline": [r["timeline"] for r in results]}
