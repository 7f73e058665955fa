"""The C edge (tlcut-edged) against the Python edge (tlcut serve), side by side in one run.

1. Loopback, per-request cost beyond inference: both edges serve a tail that is one ReLU (next to
   no inference) at a 1 KiB and a 1 MiB payload; requests alternate between a bare ZeroMQ echo,
   the Python edge and the C edge. Round trip minus the bare echo's is each edge's own cost
   (receive, validate, hand to the engine, reply) plus that ReLU.
2. Testbed, end to end: DenseNet169 (exported at opset 12, which OpenCV reads) at the demo's best
   cut with the TL, the device throttled as in the demo, against each edge in turn.

Needs a built tlcut-edged (README, "C edge runtime"). Writes benchmarks/results/c_edge.{json,md}.

    python benchmarks/c_edge.py [--requests 300] [--e2e-requests 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import zmq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EDGED = os.environ.get("TLCUT_EDGED") or str(ROOT / "build" / "tlcut-edged")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relu_bundle(root: Path, c: int, hw: int):
    from onnx import TensorProto, helper

    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    nodes = [helper.make_node("Sigmoid", ["x"], ["a"], name="s"), helper.make_node("Relu", ["a"], ["y"], name="r")]
    g = helper.make_graph(nodes, "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 7
    onnx.save(m, root / f"relu{c}x{hw}.onnx")
    b = export(str(root / f"relu{c}x{hw}.onnx"), root / f"relu{c}x{hw}", progress=lambda *_: None)
    compile_cuts(b, b.cuts, tl="off")
    return b


def _echo(ep, stop):
    s = zmq.Context.instance().socket(zmq.ROUTER)
    s.bind(ep)
    while not stop.is_set():
        if s.poll(50):
            f = s.recv_multipart(copy=False)
            s.send_multipart([f[0], b"0" * 80, b""])
    s.close(linger=0)


def loopback(requests: int) -> dict:
    from tlcut.runtime.run import EdgeClient, wait_for_edge

    root = Path(tempfile.mkdtemp(prefix="tlcut-cedge-"))
    out = {}
    for label, (c, hw) in (("1 KiB", (1, 16)), ("1 MiB", (16, 128))):
        b = relu_bundle(root, c, hw)
        cut = b.cuts[0]
        x = np.random.default_rng(0).random(cut.shape).astype(np.float32)
        py_ep, c_ep, echo_ep = (f"tcp://127.0.0.1:{_port()}" for _ in range(3))
        stop = threading.Event()
        # the Python edge in its own process, as it is deployed
        py = subprocess.Popen([sys.executable, "-m", "tlcut", "serve", str(b.path), "--cut", "0", "--bind", py_ep,
                               "--threads", "1", "--tl", "off"], stderr=subprocess.DEVNULL)
        ce = subprocess.Popen([EDGED, str(b.path), "--cut", "0", "--tl", "off", "--bind", c_ep], stderr=subprocess.DEVNULL)
        et = threading.Thread(target=_echo, args=(echo_ep, stop), daemon=True)
        et.start()
        try:
            clients = {}
            for name, ep in (("python", py_ep), ("c", c_ep)):
                wait_for_edge(ep)
                clients[name] = EdgeClient(ep, timeout_s=10)
            bare = zmq.Context.instance().socket(zmq.DEALER)
            bare.connect(echo_ep)
            raw = x.tobytes()
            hdr = b"0" * 80
            times = {"bare": [], "python": [], "c": []}
            server = {"python": [], "c": []}
            for i in range(requests + 20):
                t0 = time.perf_counter()
                bare.send_multipart([hdr, raw], copy=False)
                bare.recv_multipart()
                t1 = time.perf_counter()
                _, hp = clients["python"].request(x, 0)
                t2 = time.perf_counter()
                _, hc = clients["c"].request(x, 0)
                t3 = time.perf_counter()
                if i >= 20:
                    times["bare"].append(t1 - t0)
                    times["python"].append(t2 - t1)
                    times["c"].append(t3 - t2)
                    server["python"].append(hp.server_us)
                    server["c"].append(hc.server_us)
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            out[label] = {
                "payload_bytes": int(x.nbytes), "requests": requests,
                "round_trip_us": {k: {"median": med[k], "p90": float(np.percentile(np.array(v) * 1e6, 90))}
                                  for k, v in times.items()},
                "beyond_bare_us": {k: med[k] - med["bare"] for k in ("python", "c")},
                "server_us_median": {k: statistics.median(v) for k, v in server.items()},
            }
            bare.close(linger=0)
            for cl in clients.values():
                cl.close()
        finally:
            stop.set()
            for p in (py, ce):
                p.terminate()
                p.wait(10)
    return out


def e2e(requests: int) -> dict:
    from tlcut.lab import testbed as tbm
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    why = tbm.available()
    if why:
        return {"skipped": why}
    root = Path(tempfile.mkdtemp(prefix="tlcut-cedge-e2e-"))
    b = export("DenseNet169", root / "d169", opset=12, progress=lambda *_: None)
    cut = b.cuts[0]  # the demo's best cut with the TL (benchmarks/results/demo-DenseNet169)
    compile_cuts(b, [cut], tl="on")
    res = {"model": "DenseNet169", "cut": cut.index, "tl": True, "opset": 12}
    cfg = tbm.Config(bandwidth_mbps=57, latency_ms=28, device_quota=0.2, port=5831)
    tl = [sys.executable, "-m", "tlcut"]
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        res["latency_method"] = tb.state.delay_method
        for name in ("python", "c"):
            if name == "python":
                argv = tl + ["serve", str(b.path), "--cut", str(cut.index), "--tl", "on", "--bind", tb.state.edge_bind,
                             "--threads", "1", "--insecure"]
            else:
                argv = [EDGED, str(b.path), "--cut", str(cut.index), "--tl", "on", "--bind", tb.state.edge_bind, "--insecure"]
            env = dict(os.environ, OPENCV_FOR_THREADS_NUM="1")
            edge = tb.popen("edge", argv, stderr=subprocess.DEVNULL, env=env)
            try:
                out = root / f"run-{name}.json"
                r = tb.run("device", tl + ["run", str(b.path), "--cut", str(cut.index), "--tl", "on", "--edge",
                                           tb.state.device_endpoint, "--requests", str(requests), "--warmup", "3",
                                           "--threads", "1", "--timeout", "120", "--retries", "0", "--fallback", "off",
                                           "--insecure", "-o", str(out)], capture_output=True, text=True)
                if r.returncode != 0:
                    res[name] = {"error": r.stderr[-500:]}
                    continue
                s = json.loads(out.read_text())["summary"]
                res[name] = {k: s[k]["median"] for k in ("total_ms", "device_ms", "transfer_ms", "edge_ms")}
                res[name]["total_p90_ms"] = s["total_ms"]["p90"]
            finally:
                edge.terminate()
                edge.wait(10)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--e2e-requests", type=int, default=20)
    a = ap.parse_args()
    if not os.access(EDGED, os.X_OK):
        print(f"tlcut-edged not built at {EDGED}; see the README's C edge section", file=sys.stderr)
        return 2
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "loopback": loopback(a.requests),
           "testbed": e2e(a.e2e_requests)}
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "c_edge.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# C edge against Python edge", "",
          f"Command: `python benchmarks/c_edge.py --requests {a.requests} --e2e-requests {a.e2e_requests}`  ",
          f"Date: {res['date']}. C edge: OpenCV DNN 4.6 (Debian); Python edge: ONNX Runtime.", "",
          "## Loopback: a one-ReLU tail, requests alternating bare echo / Python edge / C edge", "",
          "| payload | bare ZeroMQ round trip (us) | Python edge (us) | C edge (us) | Python beyond bare | C beyond bare | server time Python / C (us) |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in res["loopback"].items():
        rt = r["round_trip_us"]
        md.append(f"| {label} | {rt['bare']['median']:.0f} | {rt['python']['median']:.0f} | {rt['c']['median']:.0f} | "
                  f"{r['beyond_bare_us']['python']:.0f} | {r['beyond_bare_us']['c']:.0f} | "
                  f"{r['server_us_median']['python']:.0f} / {r['server_us_median']['c']:.0f} |")
    t = res["testbed"]
    md += ["", "## Testbed, end to end (medians, ms)", ""]
    if "skipped" in t:
        md.append(f"Not run: {t['skipped']}")
    else:
        md += [f"{t['model']} cut {t['cut']} with the TL, opset {t['opset']}; uplink 57 Mbit/s, 28 ms ({t['latency_method']}); "
               f"device 0.2 CPU, edge one core.", "",
               "| edge | end-to-end | device | transfer | edge | end-to-end p90 |", "|---|---:|---:|---:|---:|---:|"]
        for name in ("python", "c"):
            r = t.get(name, {})
            if "error" in r:
                md.append(f"| {name} | failed: {r['error'][:120]} | | | | |")
            else:
                md.append(f"| {name} | {r['total_ms']:.1f} | {r['device_ms']:.1f} | {r['transfer_ms']:.1f} | "
                          f"{r['edge_ms']:.1f} | {r['total_p90_ms']:.1f} |")
    md.append("")
    (out / "c_edge.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
