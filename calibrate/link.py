"""`tlcut calibrate`: measure the device's link to a running edge and write it as a Scission CSV.

Round-trip latency is the median of PINGs (empty messages). Uplink goodput comes from real
requests of a served cut: the edge reports how long it spent on each, so the time on the link is
the round trip minus that, and the bandwidth is the bytes on the wire (payload + header, with
TCP/IP framing as `plan` counts it) over that time minus the ping. The CSV feeds
`tlcut plan --network`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError


def measure(bundle, edge: str, cut: str = "input", *, pings: int = 20, requests: int = 10, tl: bool = False,
            curve=None, insecure: bool = False, timeout_s: float = 10.0) -> dict:
    from tlcut.runtime import protocol as P
    from tlcut.runtime.client import EdgeClient
    from tlcut.toolchain.plan import TCP_ETHERNET_OVERHEAD

    if pings < 3 or requests < 3:
        raise TlcutError("calibration needs at least 3 pings and 3 requests")
    if cut == "input":
        inp = bundle.inputs[0]
        shape, dtype, cut_id, flags = inp["shape"], inp["dtype"], P.INPUT_CUT, 0
    else:
        c = bundle.cut(cut)
        bundle.runnable("tail", c.index, tl)  # the edge must serve it; fail early with the compile hint
        shape = c.tl_shape if tl else c.shape
        dtype, cut_id, flags = c.dtype, c.index, (P.FLAG_TL if tl else 0)
    x = np.random.default_rng(0).random(shape).astype(dtype)
    with EdgeClient(edge, timeout_s, curve=curve, insecure=insecure) as cl:
        cl.ping()  # connect
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            cl.ping()
            rtts.append((time.perf_counter() - t0) * 1e3)
        link = []
        cl.request(x, cut_id, flags)  # warm the edge
        for _ in range(requests):
            t0 = time.perf_counter()
            _, h = cl.request(x, cut_id, flags)
            link.append((time.perf_counter() - t0) * 1e3 - h.server_us / 1e3)
    rtt = statistics.median(rtts)
    wire_bits = (x.nbytes + P.HEADER.size) * TCP_ETHERNET_OVERHEAD * 8
    transfer_ms = statistics.median(link) - rtt
    if transfer_ms <= 0:
        raise TlcutError(f"the {x.nbytes}-byte payload crossed within the ping time; calibrate with a larger cut "
                         "(--cut input sends the model input)")
    return {"ping_ms": rtt, "ping_ms_p90": float(np.percentile(rtts, 90)), "bandwidth_mbps": wire_bits / transfer_ms / 1e3,
            "payload_bytes": int(x.nbytes), "requests": requests, "pings": pings}


def write_csv(path, device: str, edge: str, m: dict) -> None:
    p = Path(path)
    p.write_text("source,destination,ping_ms,bandwidth_mbps\n"
                 f"{device},{edge},{m['ping_ms']:.3f},{m['bandwidth_mbps']:.3f}\n")
