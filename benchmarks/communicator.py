"""The paper's Communicator (Triton over gRPC, and over HTTP) against tlcut's ZeroMQ edge (plain and
CURVE), on loopback: per-request overhead beyond the server's own time.

Why: ScissionLite's Offloader sent each cut tensor to Triton over gRPC/Protobuf; tlcut sends it as
a raw frame over ZeroMQ. Both edges here serve the same model (an identity: x * 1, so inference is
~0) from the same runner (tlcut's onnxrt), each in its own process: Triton is the real
tritonserver of the nvidia-pytriton wheel with the model bound through PyTriton (its Python
backend adds an IPC hop inside the server, which server time includes), tlcut is `tlcut serve`.
Overhead = the device's round trip minus what the server says it spent (Triton: its statistics'
queue + compute_input + compute_infer for that request; tlcut: the header's server_us), so what remains is the client
library, serialization and the loopback link, both ways. Transports alternate in rounds in one
run, so drift hits all of them alike.

    TLCUT_TRITON_PYTHON=/path/to/venv/bin/python python benchmarks/communicator.py [--rounds 10 --per-round 20]

The DenseNet169 end-to-end testbed (the paper's Figure 5 set-up through Triton) is `--densenet`,
left for later.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tlcut.lab.loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"64KiB": 64 << 10, "1MiB": 1 << 20}
TRANSPORTS = ("triton-grpc", "triton-http", "zmq", "zmq-curve")


def identity_bundle(nbytes: int, root: Path) -> Path:
    """A bundle whose model is x * 1 over nbytes of float32."""
    import onnx
    from onnx import TensorProto, helper

    from tlcut.toolchain.export import export

    n = nbytes // 4
    g = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "identity",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    src = root / f"identity-{n}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    out = root / f"identity-{n}"
    export(str(src), out, progress=lambda *_: None)
    return out


def _start(cmd, ready_word, what, timeout=180, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, ready = [], threading.Event()

    def read():
        for line in p.stdout:
            lines.append(line)
            if ready_word in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or p.poll() is not None:
        p.kill()
        raise SystemExit(f"{what} did not start:\n" + "".join(lines[-30:]))
    return p


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(45)
        except subprocess.TimeoutExpired:
            p.kill()


def stats(xs) -> dict:
    a = np.asarray(xs, float)
    q = np.percentile(a, [10, 25, 50, 75, 90, 99])
    return {"n": len(a), "median": q[2], "p99": q[5], "p10": q[0], "p90": q[4], "iqr": q[3] - q[1],
            "mean": a.mean(), "min": a.min()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tritonclient", "nvidia-pytriton", "pyzmq", "onnxruntime", "numpy", "grpcio"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    import zmq

    out["libzmq"] = zmq.zmq_version()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=20, help="requests per transport and size in each round")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--triton-python", default=os.environ.get("TLCUT_TRITON_PYTHON", sys.executable),
                    help="interpreter that hosts PyTriton (numpy<2; docs/triton.md)")
    ap.add_argument("--densenet", action="store_true", help="DenseNet169 end-to-end through Triton (left for later)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "communicator"))
    a = ap.parse_args()
    if a.densenet:
        raise SystemExit("--densenet (the paper's DenseNet169 testbed through Triton) is left for later; "
                         "this run measures the Communicator alone")

    from tlcut.runtime.run import EdgeClient
    from tlcut.runtime.security import ClientCurve, make_keys
    from tlcut.runtime.triton import TritonClient

    procs = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as undo:
        undo.callback(stop, procs)
        tmp = Path(tmp)
        keys = tmp / "keys"
        make_keys(keys, ["edge", "device"])
        allow = tmp / "allow"
        allow.mkdir()
        (allow / "device.key").write_bytes((keys / "device.key").read_bytes())
        clients, arrays = {}, {}
        for label, nbytes in SIZES.items():
            b = identity_bundle(nbytes, tmp)
            arrays[label] = np.random.default_rng(0).standard_normal((1, nbytes // 4)).astype(np.float32)
            g, h, m = free_port(), free_port(), free_port()
            procs.append(_start([a.triton_python, "-m", "tlcut.runtime.triton", str(b), "--grpc-port", str(g),
                                 "--http-port", str(h), "--metrics-port", str(m), "--threads", "1"],
                                "READY", f"PyTriton ({a.triton_python})"))
            zp, zc = free_port(), free_port()
            common = [sys.executable, "-m", "tlcut", "serve", str(b), "--cut", "input", "--threads", "1"]
            procs.append(_start(common + ["--bind", f"tcp://127.0.0.1:{zp}"], "serving", "tlcut serve"))
            procs.append(_start(common + ["--bind", f"tcp://127.0.0.1:{zc}", "--key", str(keys / "edge.key_secret"),
                                          "--allow", str(allow)], "serving", "tlcut serve (CURVE)"))
            curve = ClientCurve.from_files(keys / "device.key_secret", keys / "edge.key")
            clients[label] = {
                "triton-grpc": TritonClient(f"triton+grpc://127.0.0.1:{g}", timeout_s=30),
                "triton-http": TritonClient(f"triton+http://127.0.0.1:{h}", timeout_s=30),
                "zmq": EdgeClient(f"tcp://127.0.0.1:{zp}", timeout_s=30),
                "zmq-curve": EdgeClient(f"tcp://127.0.0.1:{zc}", timeout_s=30, curve=curve),
            }
            for c in clients[label].values():
                undo.callback(c.close)
        from tlcut.runtime import protocol as P

        def one(c, x):
            t0 = time.perf_counter()
            y, hdr = c.request(x, P.INPUT_CUT)
            rtt = (time.perf_counter() - t0) * 1e6
            srv = hdr.server_us  # Triton: read after the clock stopped (one statistics RPC)
            assert y.shape == x.shape
            return rtt, srv, getattr(hdr, "edge_source", "header")

        for label, cs in clients.items():
            for name, c in cs.items():
                for _ in range(a.warmup):
                    one(c, arrays[label])
                y, _ = c.request(arrays[label], P.INPUT_CUT)
                np.testing.assert_array_equal(y, arrays[label])
        raw = {(t, s): {"rtt_us": [], "server_us": [], "sources": {}} for t in TRANSPORTS for s in SIZES}
        t_start = time.time()
        for r in range(a.rounds):
            order = TRANSPORTS[r % 4:] + TRANSPORTS[:r % 4]
            for label in SIZES:
                for t in order:
                    c = clients[label][t]
                    if t.startswith("triton"):
                        c.resync()  # the other Triton client used the same model since this one's last read
                    for _ in range(a.per_round):
                        rtt, srv, src = one(c, arrays[label])
                        raw[(t, label)]["rtt_us"].append(rtt)
                        raw[(t, label)]["server_us"].append(srv)
                        src_count = raw[(t, label)]["sources"]
                        src_count[src] = src_count.get(src, 0) + 1
        wall = time.time() - t_start
    rows = []
    for (t, s), d in raw.items():
        rtt, srv = np.array(d["rtt_us"]), np.array(d["server_us"])
        rows.append({"transport": t, "size": s, "bytes": SIZES[s], "overhead_us": stats(rtt - srv),
                     "rtt_us": stats(rtt), "server_us": stats(srv),
                     "server_time_source": d["sources"]})
    result = {"benchmark": "communicator", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"host": platform.node(), "cpu": _cpu(), "cores": os.cpu_count(), "os": platform.platform()},
              "versions": versions(), "rounds": a.rounds, "per_round": a.per_round, "warmup": a.warmup,
              "wall_s": wall, "model": "identity (x * 1, float32 [1, N]) via tlcut's onnxrt runner, 1 thread",
              "triton": "tritonserver 2.51 from nvidia-pytriton, model bound through PyTriton (Python backend); "
                        "client tritonclient, binary tensor data; server time = statistics delta of queue + compute_input + compute_infer",
              "zmq": "tlcut serve --cut input (one process per edge), EdgeClient; server time = header server_us",
              "rows": rows}
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(r: dict) -> str:
    v = r["versions"]
    lines = ["# Communicator: Triton (gRPC, HTTP) vs tlcut's ZeroMQ (plain, CURVE) on loopback",
             "", f"{r['date']}, {r['machine']['cpu']} ({r['machine']['cores']} cores), {r['machine']['os']}; "
             f"Python {v['python']}, tritonclient {v['tritonclient']}, nvidia-pytriton {v['nvidia-pytriton']}, "
             f"pyzmq {v['pyzmq']} (libzmq {v['libzmq']}), onnxruntime {v['onnxruntime']}, grpcio {v['grpcio']}.",
             "", f"Model: {r['model']}. Triton: {r['triton']}. ZeroMQ: {r['zmq']}.",
             f"{r['rounds']} rounds x {r['per_round']} requests per transport and size, transports alternated "
             f"(rotated order) in each round; {r['warmup']} warm-up requests each; {r['wall_s']:.0f} s timed.",
             "", "Overhead = round trip at the device minus the server's own time (µs). Spread: p10-p90 and IQR.", "",
             "| size | transport | overhead median | p99 | p10-p90 | IQR | round trip median | server median |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(r["rows"], key=lambda x: (x["bytes"], TRANSPORTS.index(x["transport"]))):
        o, t, s = row["overhead_us"], row["rtt_us"], row["server_us"]
        lines.append(f"| {row['size']} | {row['transport']} | {o['median']:.0f} | {o['p99']:.0f} | "
                     f"{o['p10']:.0f}-{o['p90']:.0f} | {o['iqr']:.0f} | {t['median']:.0f} | {s['median']:.0f} |")
    lines += ["", "Caveats: one machine, loopback, so no network time; each server's clock starts once it holds the "
              "request (Triton: the parsed inference request; tlcut: the received frames), so the overhead "
              "includes the server's own parsing and serialization; Triton's server time includes PyTriton's "
              "Python-backend IPC (stub <-> bound function), which a C++ backend (onnxruntime, TensorRT) would not "
              "have, and is subtracted here; the wheel has no onnxruntime backend to compare against. "
              "The DenseNet169 end-to-end testbed is left for later (`--densenet`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
