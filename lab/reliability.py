"""Fault scenarios for the device-edge link on the testbed (root): load, faults, bad input, security.

Run with assertions by tests/test_reliability.py and, with a results file, by
benchmarks/reliability.py. Scenarios:
  load           8 devices x 500 requests against one CURVE edge; every result checked; edge RSS sampled
  edge_restart   the edge killed mid-stream and started again 2 s later
  link_cut       the device's interface down for 3 s, then up
  bandwidth_drop the uplink rate cut tenfold mid-stream
  bad_input      malformed frames against the Python and the C edge (the full table of what an edge
                 answers is tests/vectors/behaviour.json)
  security       a device whose key is not allowed; a capture of the link with and without CURVE
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TLCUT = [sys.executable, "-m", "tlcut"]
MARKER = b"TLCUT-PLAINTEXT!"  # 16 bytes: four float32s that a capture can be searched for


def make_bundle(root: Path) -> Path:
    """A small residual model (cut 0 carries 16 KiB), compiled, and CURVE keys for an edge and devices."""
    import onnx

    from tlcut.models import graphs
    from tlcut.runtime.security import make_keys
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    onnx.save(graphs.residual(hw=32, c=4), root / "m.onnx")
    b = export(str(root / "m.onnx"), root / "bundle", progress=lambda *_: None)
    compile_cuts(b, b.cuts, tl="both")
    make_keys(root / "keys", ["edge", "intruder"] + [f"device{i}" for i in range(8)])
    allow = root / "allow"
    allow.mkdir()
    for i in range(8):
        (allow / f"device{i}.key").write_bytes((root / "keys" / f"device{i}.key").read_bytes())
    return root


class EdgeProc:
    """`tlcut serve` inside the testbed's edge namespace, CURVE on unless insecure."""

    def __init__(self, tb, root: Path, insecure: bool = False, bind: str | None = None, log: Path | None = None):
        self.tb, self.root, self.insecure = tb, root, insecure
        self.bind = bind or tb.state.edge_bind
        self.log = log or (root / "edge.log")
        self.p = None

    def start(self):
        sec = ["--insecure"] if self.insecure else ["--key", str(self.root / "keys" / "edge.key_secret"),
                                                    "--allow", str(self.root / "allow")]
        self.p = self.tb.popen("edge", TLCUT + ["serve", str(self.root / "bundle"), "--cut", "0", "--cut", "input",
                                                "--bind", self.bind, "--threads", "1", *sec],
                               stderr=open(self.log, "a"))
        return self

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            self.p.wait(10)

    def rss_kib(self) -> int | None:
        """Resident memory of the serve process (the child of `ip netns exec`/taskset, same pid)."""
        try:
            for line in open(f"/proc/{self.p.pid}/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


def _perf_args(root, tb, devices, requests, interval=0.0, key=True, timeout=1.0, retries=2):
    a = ["perf", str(root / "bundle"), "--cut", "0", "--edge", tb.state.device_endpoint, "--devices", str(devices),
         "--requests", str(requests), "--timeout", str(timeout), "--retries", str(retries)]
    if key:
        a += ["--key", str(root / "keys" / "device0.key_secret"), "--edge-key", str(root / "keys" / "edge.key")]
    if interval:
        a += ["--interval", str(interval)]
    return a


def _run_perf(tb, root, devices, requests, interval=0.0, during=None, timeout=1.0):
    out = root / f"perf-{time.monotonic_ns()}.json"
    args = TLCUT + _perf_args(root, tb, devices, requests, interval, timeout=timeout) + ["-o", str(out)]
    p = tb.popen("device", args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = []
    if during:
        during(samples)
    stdout, stderr = p.communicate(timeout=600)
    if not out.exists():
        raise RuntimeError(f"perf failed: {stderr.decode()[-1500:]}")
    r = json.loads(out.read_text())
    return r, samples


def _wait_ready(tb, root, secure=True, timeout=60):
    """Wait, from the device namespace, until the edge answers (with the device's CURVE keys)."""
    curve = (f"ClientCurve.from_files({str(root / 'keys' / 'device0.key_secret')!r}, {str(root / 'keys' / 'edge.key')!r})"
             if secure else "None")
    code = ("from tlcut.runtime.client import wait_for_edge\nfrom tlcut.runtime.security import ClientCurve\n"
            f"wait_for_edge({tb.state.device_endpoint!r}, {timeout}, curve={curve}, insecure={not secure})\n")
    r = tb.run("device", [sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"edge did not become ready: {r.stderr[-300:]}")


def scenario_load(tb, root, devices=8, requests=500) -> dict:
    edge = EdgeProc(tb, root).start()
    try:
        _wait_ready(tb, root)
        rss0 = edge.rss_kib()
        stop = threading.Event()

        def sample(samples):
            def loop():
                while not stop.is_set():
                    v = edge.rss_kib()
                    if v:
                        samples.append(v)
                    time.sleep(0.25)
            threading.Thread(target=loop, daemon=True).start()

        r, samples = _run_perf(tb, root, devices, requests, during=sample)
        stop.set()
    finally:
        edge.stop()
    r.pop("timeline", None)
    r["edge_rss_kib"] = {"before": rss0, "max": max(samples) if samples else None,
                         "last": samples[-1] if samples else None, "samples": len(samples)}
    return r


def _fault(tb, root, name, act, devices=2, requests=150, interval=0.04):
    edge = EdgeProc(tb, root).start()
    holder = {}
    try:
        _wait_ready(tb, root)

        def during(_):
            def go():
                time.sleep(1.5)
                holder["t_fault"] = time.monotonic()
                act(edge)
            threading.Thread(target=go, daemon=True).start()

        r, _ = _run_perf(tb, root, devices, requests, interval=interval, during=during)
    finally:
        edge.stop()
    tl = r.pop("timeline")
    tail = [k for dev in tl for (_, k) in dev[-10:]]
    r["scenario"] = name
    r["back_on_edge_at_end"] = all(k == "edge" for k in tail)
    r["outcomes_over_time"] = _phases(tl)
    return r


def _phases(timelines):
    """Outcome counts per second of the run, all devices together."""
    buckets = {}
    for dev in timelines:
        for t, k in dev:
            b = buckets.setdefault(int(t), {})
            b[k] = b.get(k, 0) + 1
    return {str(k): buckets[k] for k in sorted(buckets)}


def scenario_edge_restart(tb, root) -> dict:
    def act(edge):
        edge.kill()
        time.sleep(2.0)
        edge.start()
    return _fault(tb, root, "edge killed and restarted after 2 s", act)


def scenario_link_cut(tb, root) -> dict:
    s = tb.state
    dev = f"tl{s.name}d"

    def act(_):
        subprocess.run(["ip", "-n", s.ns_device, "link", "set", dev, "down"], check=True)
        time.sleep(3.0)
        subprocess.run(["ip", "-n", s.ns_device, "link", "set", dev, "up"], check=True)
    return _fault(tb, root, "device link down for 3 s", act)


def scenario_bandwidth_drop(tb, root) -> dict:
    s, c = tb.state, tb.config
    dev = f"tl{s.name}d"
    low = c.bandwidth_mbps / 10

    def act(_):
        subprocess.run(["tc", "-n", s.ns_device, "qdisc", "change", "dev", dev, "root", "tbf", "rate", f"{low}mbit",
                        "burst", "3200", "latency", "2000ms"], check=True)
    r = _fault(tb, root, f"uplink {c.bandwidth_mbps:g} -> {low:g} Mbit/s", act)
    subprocess.run(["tc", "-n", s.ns_device, "qdisc", "change", "dev", dev, "root", "tbf", "rate",
                    f"{c.bandwidth_mbps}mbit", "burst", "3200", "latency", "2000ms"], check=False)
    return r


def bad_input_rows(ep: str, bundle, errors) -> list[dict]:
    """Malformed frames against the edge at ``ep`` serving cut 0 of ``bundle`` with a 1 MiB message
    limit; ``errors()`` returns the edge's error count. Each frame must get an error reply, be
    counted, and leave the edge serving a good request from a fresh device."""
    import zmq

    from tlcut.runtime import protocol as P

    c = bundle.cuts[0]
    good = np.zeros(c.shape, np.float32)
    other = tuple(c.shape[:-1]) + (c.shape[-1] + 1,)

    def hdr(**k):
        return P.Header(**{"type": P.REQUEST, "request_id": 50, "cut_id": 0, "dtype": "float32",
                           "shape": c.shape, "payload_len": good.nbytes, **k}).pack()

    cases = [
        ("truncated header", [hdr()[:30], good.tobytes()]),
        ("truncated payload", [hdr(), good.tobytes()[:100]]),
        ("wrong magic", [b"XXXX" + hdr()[4:], good.tobytes()]),
        ("wrong version", [hdr(version=7), good.tobytes()]),
        ("lying dims", [hdr(shape=other), good.tobytes()]),
        ("wrong dtype", [hdr(dtype="float64", payload_len=good.nbytes * 2), good.astype(np.float64).tobytes()]),
        ("wrong shape", [hdr(shape=(1, good.size)), good.tobytes()]),
        ("unserved cut", [hdr(cut_id=9), good.tobytes()]),
        ("oversized (2 MiB > 1 MiB limit)", [hdr(shape=(1, 8, 256, 256), payload_len=2 << 20), b"\0" * (2 << 20)]),
        ("garbage bytes", [os.urandom(80), os.urandom(200)]),
        ("three frames", [hdr(), good.tobytes(), b"x"]),
        ("unknown message type", [hdr(type=42), good.tobytes()]),
    ]
    ctx = zmq.Context.instance()
    rows = []
    for name, frames in cases + [("replayed request id", None)]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ep)
        if frames is None:  # a valid request, then the same id again
            sock.send_multipart([hdr(request_id=77), good.tobytes()])
            sock.poll(5000)
            sock.recv_multipart()
            frames = [hdr(request_id=77), good.tobytes()]
        time.sleep(0.05)
        before = errors()
        sock.send_multipart(frames)
        got = sock.poll(5000)
        h = P.decode(sock.recv_multipart())[0] if got else None
        sock.close()
        ok = ctx.socket(zmq.DEALER)  # a valid request from a fresh device still gets its result
        ok.setsockopt(zmq.LINGER, 0)
        ok.connect(ep)
        ok.send_multipart(P.tensor_frames(P.REQUEST, good, 1, 0))
        served = ok.poll(5000) and P.decode(ok.recv_multipart())[0].type == P.RESULT
        ok.close()
        time.sleep(0.05)
        rows.append({"case": name, "reply": P.TYPES.get(h.type) if h else None,
                     "error": P.ERRORS.get(h.status) if h and h.type == P.ERROR else None,
                     "counted": errors() == before + 1, "still_serving": bool(served)})
    return rows


def bad_input_table() -> list[dict]:
    """bad_input_rows against a Python edge on loopback."""

    from tlcut.bundle import Bundle
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge

    root = Path(tempfile.mkdtemp(prefix="tlcut-bad-"))
    make_bundle(root)
    b = Bundle.open(root / "bundle")
    edge = Edge(b, ["0"], max_message_bytes=1 << 20)
    try:
        with serving(edge) as ep:
            return bad_input_rows(ep, b, lambda: sum(edge.errors.values()))
    finally:
        edge.close()


def scenario_security(tb, root) -> dict:
    from tlcut.lab import testbed as tbm

    res = {}
    edge = EdgeProc(tb, root).start()
    try:
        _wait_ready(tb, root)
        code = ("import sys, numpy as np\nfrom tlcut.runtime.client import EdgeClient, EdgeUnavailable\n"
                "from tlcut.runtime.security import ClientCurve\n"
                f"c = ClientCurve.from_files({str(root / 'keys' / 'intruder.key_secret')!r}, {str(root / 'keys' / 'edge.key')!r})\n"
                f"cl = EdgeClient({tb.state.device_endpoint!r}, timeout_s=2, curve=c)\n"
                "try:\n    cl.ping(); print('SERVED')\nexcept EdgeUnavailable:\n    print('REFUSED')\n")
        r = tb.run("device", [sys.executable, "-c", code], capture_output=True, text=True)
        res["unlisted_key"] = r.stdout.strip() or r.stderr[-300:]
    finally:
        edge.stop()
    # capture what crosses the veth while a marked tensor is sent, with CURVE and without
    ve = f"tl{tb.state.name}e"
    for label, insecure in (("curve", False), ("plain", True)):
        edge = EdgeProc(tb, root, insecure=insecure).start()
        pcap = root / f"{label}.pcap"
        try:
            _wait_ready(tb, root, secure=not insecure)
            cap = subprocess.Popen(["ip", "netns", "exec", tb.state.ns_edge, "tcpdump", "-i", ve, "-U", "-w", str(pcap),
                                    "-s", "0", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            code = ("import numpy as np\nfrom tlcut.bundle import Bundle\nfrom tlcut.runtime.client import EdgeClient\n"
                    "from tlcut.runtime.security import ClientCurve\n"
                    f"b = Bundle.open({str(root / 'bundle')!r})\n"
                    "shape = b.inputs[0]['shape']\n"
                    f"x = np.frombuffer({MARKER!r} * (int(np.prod(shape)) // 4), np.float32).reshape(shape).copy()\n"
                    + (f"c = ClientCurve.from_files({str(root / 'keys' / 'device0.key_secret')!r}, {str(root / 'keys' / 'edge.key')!r})\n"
                       if not insecure else "c = None\n")
                    + f"cl = EdgeClient({tb.state.device_endpoint!r}, timeout_s=5, curve=c, insecure=c is None)\n"
                    "y, h = cl.request(x, 0xFFFFFFFF)\nprint('OK', y.shape)\n")
            r = tb.run("device", [sys.executable, "-c", code], capture_output=True, text=True)
            time.sleep(1.0)
            cap.send_signal(signal.SIGINT)
            cap.wait(10)
            data = pcap.read_bytes() if pcap.exists() else b""
            res[label] = {"request": r.stdout.strip() or r.stderr[-300:], "captured_bytes": len(data),
                          "marker_found": MARKER in data}
        finally:
            edge.stop()
    _ = tbm
    return res


def bad_input_table_c() -> list[dict] | None:
    """bad_input_rows against the C edge (tlcut-edged), where it is built; errors counted from its log."""
    edged = os.environ.get("TLCUT_EDGED") or str(Path(__file__).resolve().parents[1] / "build" / "tlcut-edged")
    if not os.access(edged, os.X_OK):
        return None

    from tlcut.bundle import Bundle
    from tlcut.lab.loopback import free_port
    from tlcut.runtime.client import wait_for_edge

    root = Path(tempfile.mkdtemp(prefix="tlcut-bad-c-"))
    make_bundle(root)
    ep = f"tcp://127.0.0.1:{free_port()}"
    log = root / "edged.log"
    p = subprocess.Popen([edged, str(root / "bundle"), "--cut", "0", "--bind", ep, "--max-message-mb", "1"],
                         stderr=open(log, "w"))
    try:
        wait_for_edge(ep)
        return bad_input_rows(ep, Bundle.open(root / "bundle"), lambda: log.read_text().count(" WARNING request "))
    finally:
        p.terminate()
        p.wait(10)


def run_all(root: Path, load_requests=500) -> dict:
    from tlcut.lab import testbed as tbm

    why = tbm.available()
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "bad_input": bad_input_table(),
           "bad_input_c": bad_input_table_c()}
    if why:
        out["skipped"] = why
        return out
    cfg = tbm.Config(bandwidth_mbps=57, latency_ms=28, device_quota=1.0, port=5811)
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        out["testbed"] = {"bandwidth_mbps": 57, "latency_ms": 28, "latency_method": tb.state.delay_method}
        out["load"] = scenario_load(tb, root, 8, load_requests)
        out["faults"] = [scenario_edge_restart(tb, root), scenario_link_cut(tb, root), scenario_bandwidth_drop(tb, root)]
        out["security"] = scenario_security(tb, root)
    return out
