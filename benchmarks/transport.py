"""What tlcut's transport costs beyond the socket, and how much of the shaped link it uses.

1. Loopback, 1 MB payload (and 64 KB, 8 MB): round trips of a bare ZeroMQ DEALER/ROUTER exchange
   (a prebuilt bytes frame up, a 4-byte reply) against the same exchange through tlcut's framing
   (tensor_frames from a numpy array, header decode and a numpy view on the edge, a float32 result
   encoded and decoded on the device). Sides alternate request by request, so both see the same
   machine; the difference of medians is tlcut's own framing and copies.
2. Goodput on the testbed's shaped uplink (root only): tlcut requests of 1 MB and 8 MB from the
   device namespace to an edge that only answers, timed per request; goodput = payload bits /
   (time - the link's latency), as a fraction of the set rate.

    python benchmarks/transport.py [--requests 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

HERE = Path(__file__).resolve().parent


def _edge_thread(ep, mode, stop):
    from tlcut.runtime import protocol as P

    s = zmq.Context.instance().socket(zmq.ROUTER)
    s.bind(ep)
    result = np.zeros((1, 1000), np.float32)
    while not stop.is_set():
        if not s.poll(50):
            continue
        f = s.recv_multipart(copy=False)
        if len(f) == 2:  # bare
            s.send_multipart([f[0], b"done"])
        else:
            h, x = P.decode(f[1:])
            float(x.reshape(-1)[0])  # touch the view
            s.send_multipart([f[0], *P.tensor_frames(P.RESULT, result, h.request_id, h.cut_id)], copy=True)
    s.close(linger=0)


def loopback(sizes, requests):
    from tlcut.runtime.client import EdgeClient

    ep = "tcp://127.0.0.1:5791"
    stop = threading.Event()
    t = threading.Thread(target=_edge_thread, args=(ep, None, stop), daemon=True)
    t.start()
    time.sleep(0.2)
    bare_sock = zmq.Context.instance().socket(zmq.DEALER)
    bare_sock.connect(ep)
    client = EdgeClient(ep)
    out = {}
    try:
        for nbytes in sizes:
            arr = np.random.default_rng(0).random(nbytes // 4).astype(np.float32).reshape(1, -1)
            raw = arr.tobytes()
            bare, framed = [], []
            for i in range(requests + 10):
                t0 = time.perf_counter()
                bare_sock.send(raw, copy=False)
                bare_sock.recv()
                t1 = time.perf_counter()
                y, _ = client.request(arr, 0)
                t2 = time.perf_counter()
                if i >= 10:
                    bare.append(t1 - t0)
                    framed.append(t2 - t1)
            bm, fm = statistics.median(bare) * 1e6, statistics.median(framed) * 1e6
            out[str(nbytes)] = {
                "bare_us": _st(bare), "tlcut_us": _st(framed), "overhead_us": fm - bm,
                "overhead_pct_of_bare": 100 * (fm - bm) / bm,
            }
    finally:
        stop.set()
        t.join(2)
        bare_sock.close(linger=0)
        client.close()
    return out


def _st(xs):
    a = np.array(xs) * 1e6
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "min": float(a.min()),
            "max": float(a.max()), "n": int(a.size)}


def shaped(sizes, requests, bandwidth, latency):
    from tlcut.lab import testbed as tbm

    why = tbm.available()
    if why:
        return {"skipped": why}
    code = r"""
import sys, time, json, threading, numpy as np, zmq
from tlcut.runtime import protocol as P
from tlcut.runtime.client import EdgeClient
ep, sizes, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
c = EdgeClient(ep, timeout_s=30, insecure=True)
out = {}
for nb in sizes:
    a = np.zeros((1, nb // 4), np.float32)
    ts = []
    for i in range(n + 2):
        t0 = time.perf_counter(); c.request(a, 0); ts.append(time.perf_counter() - t0)
    out[str(nb)] = ts[2:]
print(json.dumps(out))
"""
    sink = r"""
import sys, zmq, numpy as np
from tlcut.runtime import protocol as P
s = zmq.Context.instance().socket(zmq.ROUTER); s.bind(sys.argv[1])
r = np.zeros((1, 1000), np.float32)
while True:
    f = s.recv_multipart(copy=False)
    h, x = P.decode(f[1:])
    s.send_multipart([f[0], *P.tensor_frames(P.RESULT, r, h.request_id, h.cut_id)])
"""
    cfg = tbm.Config(bandwidth_mbps=bandwidth, latency_ms=latency, port=5792)
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        edge = tb.popen("edge", [sys.executable, "-c", sink, tb.state.edge_bind])
        time.sleep(1.0)
        r = tb.run("device", [sys.executable, "-c", code, tb.state.device_endpoint, json.dumps(sizes), str(requests)],
                   capture_output=True, text=True)
        edge.terminate()
        method = tb.state.delay_method
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    times = json.loads(r.stdout)
    out = {"bandwidth_mbps": bandwidth, "latency_ms": latency, "latency_method": method}
    for nb, ts in times.items():
        med = statistics.median(ts)
        wire = int(nb) + 80
        goodput = wire * 8 / (med - latency / 1e3) / 1e6
        out[nb] = {"request_ms": _st(ts), "goodput_mbps": goodput, "fraction_of_rate": goodput / bandwidth,
                   "ideal_ms": latency + wire * 8 / (bandwidth * 1e6) * 1e3}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--shaped-requests", type=int, default=10)
    ap.add_argument("--bandwidth", type=float, default=57.0)
    ap.add_argument("--latency", type=float, default=28.0)
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    import onnxruntime

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "numpy": np.__version__,
                       "onnxruntime": onnxruntime.__version__},
           "loopback": loopback([64 << 10, 1 << 20, 8 << 20], a.requests),
           "shaped": shaped([1 << 20, 8 << 20], a.shaped_requests, a.bandwidth, a.latency)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transport.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Transport overhead", "",
          f"Command: `python benchmarks/transport.py --requests {a.requests} --shaped-requests {a.shaped_requests}`  ",
          f"Date: {res['date']}; {res['machine']['platform']}; pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}", "",
          "## Loopback: bare ZeroMQ round trip against tlcut's framing (alternating, same payload)", "",
          "| payload | bare median (us) | tlcut median (us) | tlcut overhead (us) | overhead / bare | bare p90 | tlcut p90 |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for nb, r in res["loopback"].items():
        md.append(f"| {int(nb) >> 10} KiB | {r['bare_us']['median']:.0f} | {r['tlcut_us']['median']:.0f} | "
                  f"{r['overhead_us']:.0f} | {r['overhead_pct_of_bare']:+.1f}% | {r['bare_us']['p90']:.0f} | {r['tlcut_us']['p90']:.0f} |")
    md += ["", "The tlcut side also carries a 4 KB float32 result back (the bare side a 4-byte reply), decodes it, "
               "and checks the request id.", ""]
    s = res["shaped"]
    md.append("## Shaped uplink (testbed)")
    md.append("")
    if "skipped" in s or "error" in s:
        md.append(f"Not measured: {s.get('skipped') or s.get('error')}")
    else:
        md += [f"Uplink {s['bandwidth_mbps']:g} Mbit/s (tc tbf), latency {s['latency_ms']:g} ms ({s['latency_method']}).", "",
               "| payload | request median (ms) | ideal (latency + bytes/rate) | goodput (Mbit/s) | fraction of set rate |",
               "|---:|---:|---:|---:|---:|"]
        for nb in (str(1 << 20), str(8 << 20)):
            r = s[nb]
            md.append(f"| {int(nb) >> 20} MiB | {r['request_ms']['median'] / 1e3:.1f} | {r['ideal_ms']:.1f} | "
                      f"{r['goodput_mbps']:.1f} | {r['fraction_of_rate']:.3f} |")
    md.append("")
    (out / "transport.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
