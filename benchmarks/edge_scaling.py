"""Edge throughput as devices grow: tlcut's edge one request at a time against the same edge
batching requests that arrive together (`tlcut serve --max-batch`), on one tail.

Why: with many devices on one cut, the edge is the shared resource; batching should let one edge
machine carry more devices. The tail is DenseNet169's middle cut (random weights: the timing is
the same), served by `tlcut serve` in its own process with ONNX Runtime on all cores; the devices
are threads of this process, each an EdgeClient on loopback with one request in flight, sending
a bounded number of requests of the tail's input (the head's compute is left out: it runs on the
devices, not on the edge). Each (mode, devices) point is run --repeats times; the table gives the
median and the spread (min..max) of throughput over the repeats, and the median of the per-run
p50/p90 latency. "mean batch" is requests / engine runs from the edge's own /metrics.

Triton column: the wheel's tritonserver (nvidia-pytriton, in the Python TLCUT_TRITON_PYTHON names,
numpy<2) with dynamic batching (max batch 8, 500 us queue delay) on the same batched tail, bound to
tlcut's runner through PyTriton's Python backend (the wheel has no onnxruntime backend), the
devices reaching it over gRPC. Left out, with the reason recorded, where it cannot start.

    python benchmarks/edge_scaling.py [--bundle DIR] [--cut K] [--devices 1,2,4,8,16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from tlcut.lab.loopback import free_port

HERE = Path(__file__).resolve().parent
MODES = {"tlcut": ["--max-batch", "1"], "tlcut-batch8": ["--max-batch", "8", "--max-queue-delay-us", "500"]}
LABELS = {"tlcut": "tlcut edge, one at a time", "tlcut-batch8": "tlcut edge, --max-batch 8 (500 us delay)"}


def prepare(bundle_dir: Path, cut: int | None):
    """The bundle (exported if missing) and the cut whose tail has a dynamic-batch build."""
    from tlcut.bundle import BATCH_DYNAMIC, Bundle, manifest_path
    from tlcut.toolchain.compile import compile_cuts

    if not manifest_path(bundle_dir).is_file():
        subprocess.run([sys.executable, "-m", "tlcut", "export", "DenseNet169", "-o", str(bundle_dir)], check=True)
    b = Bundle.open(bundle_dir)
    c = b.cuts[cut if cut is not None else len(b.cuts) // 2]
    if not b.find("tail", c.index, False, batch=BATCH_DYNAMIC):
        compile_cuts(b, [c], tl="off", batch=BATCH_DYNAMIC)
    return Bundle.open(bundle_dir), c


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {k: float(v) for k, v in (ln.split()[:2] for ln in text.splitlines() if ln and not ln.startswith("#"))}


class TlcutEdge:
    """`tlcut serve` in its own process, so the devices' threads do not share its interpreter."""

    def __init__(self, bundle, cut, flags):
        self.port, self.mport = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.p = subprocess.Popen([sys.executable, "-m", "tlcut", "serve", str(bundle.path), "--cut", str(cut.index),
                                   "--tl", "off", "--bind", self.endpoint, "--metrics-port", str(self.mport), *flags],
                                  stderr=subprocess.DEVNULL)
        t = time.time()
        while time.time() - t < 120:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/health/ready", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the edge did not become ready")

    def counters(self):
        m = scrape(self.mport)
        return m["tlcut_edge_requests_total"], m["tlcut_edge_batches_total"]

    def close(self):
        self.p.terminate()
        self.p.wait(30)


def load(endpoint: str, cut: int, shape, devices: int, per_device: int, bundle=None) -> dict:
    """``devices`` threads, each a client (tlcut's ZeroMQ or Triton's, by the endpoint's scheme) with
    one request in flight, ``per_device`` requests each."""
    from tlcut.runtime.run import connect

    if shape is None:
        shape = bundle.find("tail", cut, False).input["shape"]

    xs = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(devices)]
    lat: list[list[float]] = [[] for _ in range(devices)]
    go = threading.Barrier(devices + 1)
    errors: list = []

    def device(i):
        try:
            with connect(endpoint, timeout_s=60) as c:
                c.request(xs[i], cut)  # connected and warm before the clock starts
                go.wait()
                for _ in range(per_device):
                    t = time.perf_counter()
                    c.request(xs[i], cut)
                    lat[i].append(time.perf_counter() - t)
        except Exception as e:  # surfaced below
            errors.append(e)
            go.abort()

    th = [threading.Thread(target=device, args=(i,), daemon=True) for i in range(devices)]
    for t in th:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    all_lat = np.array([x for li in lat for x in li]) * 1e3
    return {"requests": int(all_lat.size), "wall_s": wall, "throughput_rps": all_lat.size / wall,
            "p50_ms": float(np.percentile(all_lat, 50)), "p90_ms": float(np.percentile(all_lat, 90))}


def triton_series(bundle, cut, devices, repeats, requests):
    """Triton with dynamic batching on the same tail: (rows, None), or (None, why it was not run)."""
    py = os.environ.get("TLCUT_TRITON_PYTHON", sys.executable)
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return None, "tritonclient is not installed here (pip install 'tlcut[triton]')"
    grpc, http, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen([py, "-m", "tlcut.runtime.triton", str(bundle.path), "--cut", str(cut.index), "--tl", "off",
                             "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics),
                             "--max-batch", "8", "--max-queue-delay-us", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    t = time.time()
    while time.time() - t < 180:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "READY " in line:  # tritonserver's log may share the pipe mid-line
            break
    if not lines or "READY " not in lines[-1]:
        proc.kill()
        return None, f"PyTriton's tritonserver did not start from {py}: " + "".join(lines[-3:]).strip()[-300:]
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    rows = []
    try:
        for d in devices:
            per = max(4, requests // d)
            runs = [load(f"triton+grpc://127.0.0.1:{grpc}", cut.index, None, d, per, bundle) for _ in range(repeats)]
            tp = [r["throughput_rps"] for r in runs]
            row = {"mode": "triton-batch8", "devices": d, "requests_per_device": per, "runs": runs,
                   "throughput_rps_median": statistics.median(tp), "throughput_rps_min": min(tp),
                   "throughput_rps_max": max(tp), "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
                   "p90_ms_median": statistics.median(r["p90_ms"] for r in runs), "mean_batch_median": None}
            rows.append(row)
            print(f"{'triton-batch8':14s} {d:3d} devices: {row['throughput_rps_median']:6.1f} req/s "
                  f"({row['throughput_rps_min']:.1f}..{row['throughput_rps_max']:.1f}), p50 {row['p50_ms_median']:.1f} ms",
                  flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows, None


def versions() -> dict:
    import onnxruntime
    import zmq

    import tlcut

    return {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "numpy": np.__version__, "tlcut": tlcut.__version__}


def machine() -> dict:
    from tlcut.toolchain.bench import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "os": platform.platform(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="/tmp/tlcut-edge-scaling/DenseNet169", help="bundle (exported if missing)")
    ap.add_argument("--cut", type=int, help="cut whose tail is served (default: the middle one)")
    ap.add_argument("--devices", default="1,2,4,8,16")
    ap.add_argument("--requests", type=int, default=192, help="requests per run, split over the devices (default 192)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--output", default=str(HERE / "results" / "edge_scaling"))
    a = ap.parse_args(argv)
    devices = [int(d) for d in a.devices.split(",")]
    bundle, cut = prepare(Path(a.bundle), a.cut)
    shape = bundle.find("tail", cut.index, False).input["shape"]
    started = time.time()
    rows = []
    for mode, flags in MODES.items():
        edge = TlcutEdge(bundle, cut, flags)
        try:
            for d in devices:
                per = max(4, a.requests // d)
                runs = []
                for _ in range(a.repeats):
                    before = edge.counters()
                    r = load(edge.endpoint, cut.index, shape, d, per)
                    after = edge.counters()
                    r["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                    runs.append(r)
                tp = [r["throughput_rps"] for r in runs]
                row = {"mode": mode, "devices": d, "requests_per_device": per, "runs": runs,
                       "throughput_rps_median": statistics.median(tp), "throughput_rps_min": min(tp),
                       "throughput_rps_max": max(tp),
                       "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
                       "p90_ms_median": statistics.median(r["p90_ms"] for r in runs),
                       "mean_batch_median": statistics.median(r["mean_batch"] for r in runs)}
                rows.append(row)
                print(f"{mode:14s} {d:3d} devices: {row['throughput_rps_median']:6.1f} req/s "
                      f"({row['throughput_rps_min']:.1f}..{row['throughput_rps_max']:.1f}), p50 {row['p50_ms_median']:.1f} ms, "
                      f"mean batch {row['mean_batch_median']:.2f}", flush=True)
        finally:
            edge.close()
    triton_rows, triton_why = triton_series(bundle, cut, devices, a.repeats, a.requests)
    result = {"benchmark": "edge_scaling", "date": dt.datetime.now().isoformat(timespec="seconds"),
              "command": "python benchmarks/edge_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "versions": versions(),
              "model": bundle.name, "cut": {"index": cut.index, "layer": cut.layer, "shape": list(cut.shape),
                                            "bytes": cut.bytes},
              "edge": "tlcut serve --backend onnxrt (CPU, default threads), own process; devices: threads of the "
                      "benchmark process, EdgeClient on loopback, one request in flight each",
              "modes": LABELS, "repeats": a.repeats, "rows": rows, "triton": triton_rows, "triton_left_out": triton_why,
              "duration_s": round(time.time() - started, 1)}
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def markdown(r: dict) -> str:
    m, v, c = r["machine"], r["versions"], r["cut"]
    lines = [f"# Edge throughput as devices grow ({r['model']}, cut {c['index']})", "",
             f"{r['date']}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {v['python']}, "
             f"ONNX Runtime {v['onnxruntime']}, pyzmq {v['pyzmq']} (libzmq {v['libzmq']}), tlcut {v['tlcut']}.", "",
             f"Tail of cut {c['index']} (`{c['layer']}`, float32{c['shape']}, {c['bytes'] / 2**20:.2f} MiB per request). "
             f"{r['edge']}. {r['repeats']} runs per point: throughput median (min..max), latency medians of the "
             f"runs' p50/p90; mean batch = requests / engine runs from the edge's /metrics.", "",
             f"Command: `{r['command'].strip()}` ({r['duration_s']:.0f} s).", "",
             "| devices | " + " | ".join(r["modes"][k] for k in r["modes"]) + " |",
             "|---:|" + "---|" * len(r["modes"])]
    rows = r["rows"] + (r.get("triton") or [])
    modes = dict(r["modes"])
    if r.get("triton"):
        modes["triton-batch8"] = "Triton (PyTriton), dynamic batching max 8 (500 us delay), gRPC"
        lines[-2] = "| devices | " + " | ".join(modes.values()) + " |"
        lines[-1] = "|---:|" + "---|" * len(modes)
    by = {(x["mode"], x["devices"]): x for x in rows}
    for d in sorted({x["devices"] for x in rows}):
        cells = []
        for k in modes:
            x = by.get((k, d))
            batch = "" if not x or x["mean_batch_median"] is None else f"; batch {x['mean_batch_median']:.2f}"
            cells.append("" if not x else f"{x['throughput_rps_median']:.1f} req/s ({x['throughput_rps_min']:.1f}..{x['throughput_rps_max']:.1f}); "
                                          f"p50 {x['p50_ms_median']:.0f} ms, p90 {x['p90_ms_median']:.0f} ms{batch}")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    if r.get("triton_left_out"):
        lines += ["", f"Triton (dynamic batching) column left out: {r['triton_left_out']}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
