"""The C edge (tlcut-edged, OpenVINO) against the Python edge (tlcut serve, OpenVINO and ONNX
Runtime backends), side by side in one run.

1. Loopback, per-request cost beyond inference, at a 1 KiB and a 1 MiB payload. Every edge serves
   a model that reads 4 values of its input (a Slice: next to no inference whatever the payload)
   and returns them, each in its own process with one engine thread. Requests alternate between a
   bare ZeroMQ echo (build/tlcut-bench-echo: native, returns an 80-byte header and 16 bytes, as
   the edges do) and each edge. Round trip minus the echo's is each edge's own cost (receive,
   validate, hand the payload to the engine, run it, reply); minus the engine's time for that
   Slice, run in-process through the engine's Python API (OpenVINO, ONNX Runtime), it is the
   cost beyond inference. That API adds its own call cost to the engine's time, so "beyond
   inference" errs low by a few microseconds; "beyond echo" has no such subtraction.
2. Testbed (root; lab.testbed), end to end: DenseNet169 exported at opset 17 (OpenVINO reads it;
   OpenCV could not) at two cuts with the TL, the device throttled as in the demo and running its
   head on OpenVINO, against the C edge (OpenVINO), the Python edge on OpenVINO and the Python
   edge on ONNX Runtime, each with one engine thread on its core.

Needs a tlcut-edged built with the OpenVINO engine (`bash scripts/build-c.sh`). Writes
benchmarks/results/c_edge.{json,md}; --quick runs a few requests of each part and writes
nothing (a check that the benchmark runs, not a measurement).

    python benchmarks/c_edge.py [--requests 1000] [--e2e-requests 30]
    python benchmarks/c_edge.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import zmq

from tlcut.lab.loopback import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EDGED = os.environ.get("TLCUT_EDGED") or str(ROOT / "build" / "tlcut-edged")
ECHO = str(Path(EDGED).with_name("tlcut-bench-echo"))  # built beside tlcut-edged
PAYLOADS = (("1 KiB", 256), ("1 MiB", 262144))  # float32 elements
EDGES = ("c", "python-openvino", "python-onnxrt")
LABELS = {"c": "C edge (OpenVINO)", "python-openvino": "Python edge (OpenVINO)", "python-onnxrt": "Python edge (ONNX Runtime)"}


def engine_of(daemon: str) -> str:
    r = subprocess.run([daemon, "--version"], capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    return lines[1].split(":", 1)[1].strip() if r.returncode == 0 and len(lines) > 1 else "?"


def slice_bundle(root: Path, n: int):
    """A model that reads the first 4 of ``n`` float32 values: the edge's work, not the engine's."""
    from onnx import TensorProto, helper, numpy_helper

    from tlcut.toolchain.export import export

    consts = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
              (("starts", [0]), ("ends", [4]), ("axes", [1]))]
    g = helper.make_graph([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="first4")], "first4",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, root / f"first4of{n}.onnx")
    return export(str(root / f"first4of{n}.onnx"), root / f"first4of{n}", progress=lambda *_: None)


def engine_alone_us(model: Path, x: np.ndarray, runs: int) -> dict:
    """Median microseconds of one run of ``model`` in-process, one thread, through each engine's
    Python API (what the edges' engines spend, plus that API's call cost)."""
    import onnxruntime as ort
    import openvino as ov

    core = ov.Core()
    c = core.compile_model(core.read_model(str(model)), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": 1})
    req = c.create_infer_request()
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    out = {}
    for name, fn in (("openvino", lambda: req.infer({0: x}, share_inputs=True, share_outputs=True)),
                     ("onnxrt", lambda: s.run(None, {"x": x}))):
        for _ in range(20):
            fn()
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        out[name] = statistics.median(t) * 1e6
    return out


def _start_edges(b, eps: dict) -> dict:
    tl = [sys.executable, "-m", "tlcut", "serve", str(b.path), "--cut", "input", "--threads", "1"]
    argv = {"c": [EDGED, str(b.path), "--cut", "input", "--threads", "1", "--bind", eps["c"]],
            "python-openvino": tl + ["--backend", "openvino", "--bind", eps["python-openvino"]],
            "python-onnxrt": tl + ["--backend", "onnxrt", "--bind", eps["python-onnxrt"]]}
    return {k: subprocess.Popen(v, stderr=subprocess.DEVNULL) for k, v in argv.items()}


def loopback(requests: int, warmup: int) -> dict:
    from tlcut.runtime.client import EdgeClient, wait_for_edge

    root = Path(tempfile.mkdtemp(prefix="tlcut-cedge-"))
    out = {}
    for label, n in PAYLOADS:
        b = slice_bundle(root, n)
        x = np.random.default_rng(0).random((1, n)).astype(np.float32)
        eps = {k: f"tcp://127.0.0.1:{free_port()}" for k in (*EDGES, "echo")}
        procs = _start_edges(b, eps)
        procs["echo"] = subprocess.Popen([ECHO, eps["echo"]])
        try:
            clients = {}
            for name in EDGES:
                wait_for_edge(eps[name], 60)
                clients[name] = EdgeClient(eps[name], timeout_s=10)
            bare = zmq.Context.instance().socket(zmq.DEALER)
            bare.connect(eps["echo"])
            hdr = b"0" * 80
            times = {k: [] for k in ("echo", *EDGES)}
            server = {k: [] for k in EDGES}
            for i in range(requests + warmup):
                t0 = time.perf_counter()
                bare.send_multipart([hdr, x], copy=False)
                bare.recv_multipart()
                t = [time.perf_counter()]
                hs = []
                for name in EDGES:
                    y, h = clients[name].request(x, 0xFFFFFFFF)
                    t.append(time.perf_counter())
                    hs.append(h)
                    assert y.shape == (1, 4) and np.array_equal(y[0], x[0, :4]), name
                if i >= warmup:
                    times["echo"].append(t[0] - t0)
                    for j, name in enumerate(EDGES):
                        times[name].append(t[j + 1] - t[j])
                        server[name].append(hs[j].server_us)
            bare.close(linger=0)
            for cl in clients.values():
                cl.close()
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(10)
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        alone = engine_alone_us(b.model_path, x, max(requests, 50))
        engine = {"c": alone["openvino"], "python-openvino": alone["openvino"], "python-onnxrt": alone["onnxrt"]}
        out[label] = {
            "payload_bytes": int(x.nbytes), "requests": requests,
            "round_trip_us": {k: {"median": med[k], "p90": float(np.percentile(np.array(v) * 1e6, 90))} for k, v in times.items()},
            "beyond_echo_us": {k: med[k] - med["echo"] for k in EDGES},
            "engine_alone_us": alone,
            "beyond_inference_us": {k: med[k] - med["echo"] - engine[k] for k in EDGES},
            "server_us_median": {k: statistics.median(v) for k, v in server.items()},
        }
    return out


def pick_cuts(b) -> list:
    """The demo's best cut with the TL (cut 0, benchmarks/results/demo-DenseNet169), and the TL
    cut nearest the middle of the network: a light head and a heavy one."""
    mid = min((c for c in b.cuts if c.tl), key=lambda c: abs(c.index - len(b.cuts) // 2))
    return [b.cuts[0], mid]


def e2e(requests: int, warmup: int) -> dict:
    from tlcut.lab import testbed as tbm
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    why = tbm.available()
    if why:
        return {"skipped": why}
    root = Path(tempfile.mkdtemp(prefix="tlcut-cedge-e2e-"))
    b = export("DenseNet169", root / "d169", opset=17, progress=lambda *_: None)
    cuts = pick_cuts(b)
    compile_cuts(b, cuts, tl="on")
    res = {"model": "DenseNet169", "opset": 17, "tl": True, "cuts": {}}
    cfg = tbm.Config(bandwidth_mbps=57, latency_ms=28, device_quota=0.2, port=5831)
    tl = [sys.executable, "-m", "tlcut"]
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        res["latency_method"] = tb.state.delay_method
        for cut in cuts:
            row = res["cuts"][str(cut.index)] = {"tensor": cut.tensor, "layer": cut.layer, "tl_bytes": cut.tl_bytes}
            serve = ["--cut", str(cut.index), "--tl", "on", "--bind", tb.state.edge_bind, "--threads", "1", "--insecure"]
            argv = {"c": [EDGED, str(b.path), *serve],
                    "python-openvino": tl + ["serve", str(b.path), *serve, "--backend", "openvino"],
                    "python-onnxrt": tl + ["serve", str(b.path), *serve, "--backend", "onnxrt"]}
            for name in EDGES:
                edge = tb.popen("edge", argv[name], stderr=subprocess.DEVNULL)
                try:
                    out = root / f"run-{cut.index}-{name}.json"
                    r = tb.run("device", tl + ["run", str(b.path), "--cut", str(cut.index), "--tl", "on", "--edge",
                                               tb.state.device_endpoint, "--requests", str(requests), "--warmup", str(warmup),
                                               "--backend", "openvino", "--threads", "1", "--timeout", "120", "--retries", "0",
                                               "--fallback", "off", "--insecure", "-o", str(out)], capture_output=True, text=True)
                    if r.returncode != 0:
                        row[name] = {"error": (r.stderr or r.stdout)[-500:]}
                        continue
                    s = json.loads(out.read_text())["summary"]
                    row[name] = {k: s[k]["median"] for k in ("total_ms", "device_ms", "transfer_ms", "edge_ms")}
                    row[name]["total_p90_ms"] = s["total_ms"]["p90"]
                finally:
                    edge.terminate()
                    edge.wait(30)
    return res


def markdown(res: dict, command: str) -> str:
    md = ["# C edge against Python edge", "",
          f"Command: `{command}`  ",
          f"Date: {res['date']}. C edge: {res['c_engine']}; Python edge: OpenVINO {res['openvino']} and ONNX Runtime "
          f"{res['onnxruntime']} backends; one engine thread each.", "",
          "## Loopback: per-request cost beyond inference", "",
          "A model that reads 4 of its inputs (Slice), served whole; requests alternate bare echo / each edge. "
          "Medians, microseconds. Beyond echo: round trip minus the bare ZeroMQ echo's. Beyond inference: that, "
          "minus the engine's own time for the Slice (in-process, its Python API).", "",
          "| payload | edge | round trip | beyond echo | engine alone | beyond inference | server_us |",
          "|---:|---|---:|---:|---:|---:|---:|"]
    for label, r in res["loopback"].items():
        md.append(f"| {label} | bare ZeroMQ echo | {r['round_trip_us']['echo']['median']:.0f} | | | | |")
        for k in EDGES:
            eng = r["engine_alone_us"]["onnxrt" if k == "python-onnxrt" else "openvino"]
            md.append(f"| {label} | {LABELS[k]} | {r['round_trip_us'][k]['median']:.0f} | {r['beyond_echo_us'][k]:.0f} | "
                      f"{eng:.0f} | {r['beyond_inference_us'][k]:.0f} | {r['server_us_median'][k]:.0f} |")
    t = res["testbed"]
    md += ["", "## Testbed, end to end (medians, ms)", ""]
    if "skipped" in t:
        md.append(f"Not run: {t['skipped']}")
    else:
        md += [f"{t['model']} at opset {t['opset']}, with the TL; uplink 57 Mbit/s, 28 ms ({t['latency_method']}); "
               "device 0.2 CPU running its head on OpenVINO, edge one core and one engine thread.", "",
               "| cut | edge | end-to-end | device | transfer | edge | end-to-end p90 |", "|---|---|---:|---:|---:|---:|---:|"]
        for k, row in t["cuts"].items():
            cut = f"{k} ({row['layer'] or row['tensor']}, {row['tl_bytes']} B)"
            for name in EDGES:
                r = row.get(name, {})
                if "error" in r:
                    md.append(f"| {cut} | {LABELS[name]} | failed: {r['error'][:120]} | | | | |")
                else:
                    md.append(f"| {cut} | {LABELS[name]} | {r['total_ms']:.1f} | {r['device_ms']:.1f} | "
                              f"{r['transfer_ms']:.1f} | {r['edge_ms']:.1f} | {r['total_p90_ms']:.1f} |")
    md.append("")
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="timed loopback requests per edge and payload")
    ap.add_argument("--e2e-requests", type=int, default=30, help="timed testbed requests per edge and cut")
    ap.add_argument("--quick", action="store_true", help="a few requests of each part, results printed, nothing written")
    a = ap.parse_args()
    if not (os.access(EDGED, os.X_OK) and os.access(ECHO, os.X_OK)):
        print(f"tlcut-edged or tlcut-bench-echo not built at {Path(EDGED).parent}; run `bash scripts/build-c.sh` "
              "(README, the C edge runtime)", file=sys.stderr)
        return 2
    c_engine = engine_of(EDGED)
    if not c_engine.startswith("openvino"):
        print(f"{EDGED} was built with {c_engine}; this benchmark measures the OpenVINO engine (bash scripts/build-c.sh)",
              file=sys.stderr)
        return 2
    import onnxruntime
    import openvino

    requests, e2e_requests = (20, 2) if a.quick else (a.requests, a.e2e_requests)
    warmup = 3 if a.quick else 50
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "c_engine": c_engine,
           "openvino": openvino.__version__.split("-")[0], "onnxruntime": onnxruntime.__version__, "quick": a.quick,
           "loopback": loopback(requests, warmup), "testbed": e2e(e2e_requests, 2 if a.quick else 5)}
    command = "python benchmarks/c_edge.py " + ("--quick" if a.quick else f"--requests {a.requests} --e2e-requests {a.e2e_requests}")
    md = markdown(res, command)
    print(md)
    if not a.quick:
        out = HERE / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "c_edge.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / "c_edge.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
