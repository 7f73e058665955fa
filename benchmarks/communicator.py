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

End to end on the testbed (`--densenet`, root): DenseNet169 (random weights) cut where
ScissionLite cuts it in `tlcut demo` (cut 0 + TL), the tail served in the edge namespace by
Triton (gRPC and HTTP, through PyTriton) and by `tlcut serve` (plain and CURVE), all behind the same
shaped uplink and delay; one device process in the device namespace (0.2 CPU) runs the head and
sends the same payload to each in rotated rounds. Writes communicator-densenet169.{json,md}.

    TLCUT_TRITON_PYTHON=... python benchmarks/communicator.py --densenet [--rounds 6 --per-round 5]
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
from tlcut.toolchain.bench import cpu_model

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
    ap.add_argument("--densenet", action="store_true", help="DenseNet169 end to end on the testbed (root)")
    ap.add_argument("--device-worker", help=argparse.SUPPRESS)  # the device's side of --densenet
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    if a.device_worker:
        return device_worker(Path(a.device_worker))
    if a.densenet:
        return densenet(a)
    a.output = a.output or str(ROOT / "benchmarks" / "results" / "communicator")

    from tlcut.runtime.client import EdgeClient
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
              "machine": {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform()},
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


DN_CUT = "0"  # where ScissionLite cuts DenseNet169 in `tlcut demo` (conv1_bn, with the TL)
DN_PORTS = {"zmq": 5555, "zmq-curve": 5565, "triton-grpc": 5575, "triton-http": 5585}


def densenet(a) -> int:
    """Serve the same tail four ways in the testbed's edge namespace; time them from its device."""
    from tlcut.lab.testbed import EDGE_IP, Config, Testbed, available
    from tlcut.runtime.security import make_keys
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    why = available()
    if why:
        raise SystemExit(f"--densenet needs the testbed: {why}")
    out = Path(a.output or ROOT / "benchmarks" / "results" / "communicator-densenet169")
    with tempfile.TemporaryDirectory() as tmp, Testbed(Config(), log=lambda m: print(m, file=sys.stderr)) as tb:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        b = export("DenseNet169", tmp / "bundle", progress=lambda *_: None)
        cut = b.cut(DN_CUT)
        compile_cuts(b, [cut], tl="on")
        keys = tmp / "keys"
        make_keys(keys, ["edge", "device"])
        allow = tmp / "allow"
        allow.mkdir()
        (allow / "device.key").write_bytes((keys / "device.key").read_bytes())
        binds = {t: tb.expose(p) if t != "zmq" else tb.state.edge_bind.split("//")[1] for t, p in DN_PORTS.items()}
        serve = [sys.executable, "-m", "tlcut", "serve", str(b.path), "--cut", str(cut.index), "--tl", "on", "--threads", "1"]
        logs = {t: open(tmp / f"{t}.log", "w") for t in ("zmq", "zmq-curve", "triton")}
        edges = [tb.popen("edge", serve + ["--bind", f"tcp://{binds['zmq']}"], stdout=logs["zmq"], stderr=subprocess.STDOUT),
                 tb.popen("edge", serve + ["--bind", f"tcp://{binds['zmq-curve']}", "--key",
                                           str(keys / "edge.key_secret"), "--allow", str(allow)],
                          stdout=logs["zmq-curve"], stderr=subprocess.STDOUT),
                 tb.popen("edge", [a.triton_python, "-m", "tlcut.runtime.triton", str(b.path), "--cut", str(cut.index),
                                   "--tl", "on", "--grpc-port", binds["triton-grpc"].split(":")[1],
                                   "--http-port", binds["triton-http"].split(":")[1], "--metrics-port",
                                   str(DN_PORTS["triton-http"] + 5), "--threads", "1"],
                          stdout=logs["triton"], stderr=subprocess.STDOUT)]
        spec = {"bundle": str(b.path), "cut": cut.index, "rounds": a.rounds, "per_round": a.per_round,
                "warmup": a.warmup, "keys": str(keys),
                "endpoints": {"zmq": f"tcp://{EDGE_IP}:{DN_PORTS['zmq']}",
                              "zmq-curve": f"tcp://{EDGE_IP}:{DN_PORTS['zmq-curve']}",
                              "triton-grpc": f"triton+grpc://{EDGE_IP}:{DN_PORTS['triton-grpc']}",
                              "triton-http": f"triton+http://{EDGE_IP}:{DN_PORTS['triton-http']}"}}
        (tmp / "spec.json").write_text(json.dumps(spec))
        r = tb.run("device", [sys.executable, str(Path(__file__).resolve()), "--device-worker", str(tmp / "spec.json")],
                   capture_output=True, text=True)
        dead = [e.args for e in edges if e.poll() is not None]
        if r.returncode != 0 or dead:
            tails = "".join(f"--- {f.name}\n" + Path(f.name).read_text()[-1500:] for f in logs.values())
            raise SystemExit(f"the device run failed (exit {r.returncode}; edges gone: {dead}):\n{r.stderr[-3000:]}\n{tails}")
        runs = json.loads(r.stdout)
        result = {"benchmark": "communicator-densenet169", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "machine": {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform()},
                  "versions": versions(), "testbed": tb.describe(), "model": "DenseNet169, random weights, 224x224x3",
                  "cut": {"index": cut.index, "layer": cut.layer, "tl": True, "payload_bytes": runs["payload_bytes"]},
                  "rounds": a.rounds, "per_round": a.per_round, "warmup": a.warmup, "rows": runs["rows"]}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(densenet_markdown(result))
    print(densenet_markdown(result))
    return 0


def device_worker(spec_path: Path) -> int:
    """In the device namespace: one Device per transport (the head runs here), rotated rounds."""
    from tlcut.bundle import Bundle
    from tlcut.placement import Placement
    from tlcut.runtime.client import wait_for_edge
    from tlcut.runtime.run import Device
    from tlcut.runtime.security import ClientCurve

    spec = json.loads(spec_path.read_text())
    b = Bundle.open(spec["bundle"])
    pl = Placement.resolve(b, str(spec["cut"]), True)
    keys = Path(spec["keys"])
    curve = ClientCurve.from_files(keys / "device.key_secret", keys / "edge.key")
    names = list(spec["endpoints"])
    for t in names:
        if not t.startswith("triton"):
            wait_for_edge(spec["endpoints"][t], 120, curve=curve if t == "zmq-curve" else None, insecure=t == "zmq")
    devs = {}
    deadline = time.monotonic() + 240
    for t in names:
        while True:  # Triton loads its Python backend stubs for a while after it listens
            try:
                devs[t] = Device(b, pl, edge=spec["endpoints"][t], timeout_s=30, insecure=t == "zmq",
                                 curve=curve if t == "zmq-curve" else None)
                devs[t].infer(np.zeros(b.inputs[0]["shape"], np.float32))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                devs.pop(t, None)
                time.sleep(2)
    x = np.random.default_rng(0).random(b.inputs[0]["shape"], dtype=np.float32)
    ref, _ = devs["zmq"].infer(x)
    recs = {t: [] for t in names}
    payload = None
    for t in names:
        y, _ = devs[t].infer(x)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-6)  # the same tail, whichever way it was reached
        for _ in range(spec["warmup"]):
            devs[t].infer(x)
    for r in range(spec["rounds"]):
        for t in names[r % len(names):] + names[:r % len(names)]:
            if t.startswith("triton"):
                devs[t].client.resync()
            for _ in range(spec["per_round"]):
                _, rec = devs[t].infer(x)
                assert not rec["fallback"], f"{t}: the request fell back to the device"
                recs[t].append(rec)
                payload = rec["payload_bytes"]
    rows = [{"transport": t, **{k: stats([rec[k] for rec in recs[t]]) for k in ("total_ms", "device_ms", "transfer_ms", "edge_ms")}}
            for t in names]
    print(json.dumps({"payload_bytes": payload, "rows": rows}, default=float))
    return 0


def densenet_markdown(r: dict) -> str:
    v, c = r["versions"], r["cut"]
    lines = ["# Communicator end to end: DenseNet169 on the testbed, Triton (gRPC, HTTP) vs tlcut's ZeroMQ (plain, CURVE)", "",
             f"{r['date']}, {r['machine']['cpu']} ({r['machine']['cores']} cores), {r['machine']['os']}; "
             f"Python {v['python']}, tritonclient {v['tritonclient']}, nvidia-pytriton {v['nvidia-pytriton']}, "
             f"pyzmq {v['pyzmq']} (libzmq {v['libzmq']}), onnxruntime {v['onnxruntime']}.", "",
             f"Command: `TLCUT_TRITON_PYTHON=... python benchmarks/communicator.py --densenet --rounds {r['rounds']} "
             f"--per-round {r['per_round']}`. {r['testbed']}.", "",
             f"Model: {r['model']}; cut {c['index']} (`{c['layer']}`) with the TL, ScissionLite's choice in `tlcut demo`; "
             f"the same {c['payload_bytes']}-byte payload (float32, raw) to every edge. The tail runs on tlcut's onnxrt runner, "
             "1 thread, on the edge's core in every case: `tlcut serve` (plain; CURVE) or PyTriton's tritonserver (one "
             "server, gRPC and HTTP ports), each port behind its own delay relay on the shaped link. One device process "
             f"runs the head and alternates the four edges in rotated rounds ({r['rounds']} x {r['per_round']} requests "
             f"each, {r['warmup']} warm-up).", "",
             "Milliseconds, median (p10-p90). Transfer = total - head - the edge's own time (Triton: its statistics' "
             "queue + compute_input + compute_infer; tlcut: the header's server_us).", "",
             "| transport | end to end | p90 | head (device) | transfer | edge | vs tlcut ZeroMQ (end to end) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = next(row for row in r["rows"] if row["transport"] == "zmq")["total_ms"]["median"]
    for row in r["rows"]:
        t, d, x, e = row["total_ms"], row["device_ms"], row["transfer_ms"], row["edge_ms"]
        lines.append(f"| {row['transport']} | {t['median']:.1f} ({t['p10']:.1f}-{t['p90']:.1f}) | {t['p90']:.1f} | "
                     f"{d['median']:.1f} | {x['median']:.1f} | {e['median']:.1f} | {t['median'] / base:.3f}x |")
    lines += ["", "Caveats: Triton's edge time includes PyTriton's Python-backend IPC (stub <-> bound function), a "
              "hop a C++ backend would not have; it is counted in the edge column, not in transfer. The wheel's "
              "tritonserver has no onnxruntime backend, so the same runner serves both.", ""]
    return "\n".join(lines)


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
              "DenseNet169 end to end on the testbed: communicator-densenet169.md (`--densenet`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
