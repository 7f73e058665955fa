"""The C edge (tlcut-edged) against the Python edge: same answers to the Python device, the same
error replies to bad frames, on loopback and across the testbed. Built by CMake; ctest runs this
file with TLCUT_EDGED set (or set it yourself to the built daemon)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import graphs
from tlcut.runtime.run import Device, EdgeClient, wait_for_edge
from tlcut.runtime.serve import Edge
from tlcut.toolchain.compile import compile_cuts
from tlcut.toolchain.export import export

EDGED = os.environ.get("TLCUT_EDGED") or str(Path(__file__).resolve().parents[1] / "build" / "tlcut-edged")
pytestmark = pytest.mark.skipif(not os.access(EDGED, os.X_OK),
                                reason=f"tlcut-edged is not built ({EDGED}); build it with cmake (README) or set TLCUT_EDGED")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _onnx_bundle(root, name, build):
    m = build()
    m.opset_import[0].version = 12
    onnx.checker.check_model(m)
    onnx.save(m, root / f"{name}.onnx")
    b = export(str(root / f"{name}.onnx"), root / name, progress=lambda *_: None)
    compile_cuts(b, b.cuts, tl="both")
    return b


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cedge")
    out = {"chain": _onnx_bundle(root, "chain", lambda: graphs.chain(hw=9, c=4)),
           "branches": _onnx_bundle(root, "branches", lambda: graphs.branches(hw=12, c=4))}
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return out
    b = export("DenseNet121", root / "densenet121", input_shape=(64, 64, 3), opset=12, progress=lambda *_: None)
    picks = [b.cuts[i] for i in (5, len(b.cuts) // 2, len(b.cuts) - 5)]
    compile_cuts(b, picks, tl="both")
    out["densenet121"] = b
    return out


class CEdge:
    def __init__(self, bundle, cuts, bind=None, extra=()):
        self.ep = bind or f"tcp://127.0.0.1:{_port()}"
        args = [EDGED, str(bundle.path), *sum((["--cut", str(c)] for c in cuts), []), "--bind", self.ep, *extra]
        self.log = open(bundle.path / f"edged-{time.monotonic_ns()}.log", "w+")
        self.p = subprocess.Popen(args, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"tlcut-edged exited: {self.log.read()}")
            try:
                EdgeClient(self.ep, timeout_s=0.5).ping()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("tlcut-edged did not answer")

    def errors_logged(self) -> int:
        self.log.flush()
        return Path(self.log.name).read_text().count(" WARNING request ")

    def stop(self):
        """SIGTERM is a clean shutdown: exit 0, and nothing from a sanitizer in the log."""
        self.p.terminate()
        code = self.p.wait(30)
        text = Path(self.log.name).read_text()
        assert code == 0, f"tlcut-edged exited {code}: {text[-2000:]}"
        assert "Sanitizer" not in text and "runtime error" not in text, text[-3000:]


class PyEdge:
    def __init__(self, bundle, cuts):
        self.ep = f"tcp://127.0.0.1:{_port()}"
        self.edge = Edge(bundle, [str(c) for c in cuts])
        self.stop_ev, ready = threading.Event(), threading.Event()
        self.t = threading.Thread(target=self.edge.serve, args=(self.ep,), kwargs={"stop": self.stop_ev, "ready": ready},
                                  daemon=True)
        self.t.start()
        ready.wait(10)

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)
        self.edge.close()


def _cuts(b):
    cs = sorted(int(k) for k in b.manifest["compiled"])
    return [cs[0], cs[len(cs) // 2], cs[-1]] if len(cs) >= 3 else cs


@pytest.mark.parametrize("name", ["chain", "branches", "densenet121"])
def test_same_results_as_the_python_edge(bundles, name):
    if name not in bundles:
        pytest.skip("DenseNet121 needs TensorFlow for its export")
    b = bundles[name]
    cuts = _cuts(b)
    c_edge, py_edge = CEdge(b, cuts + ["input"]), PyEdge(b, cuts + ["input"])
    try:
        rng = np.random.default_rng(1)
        xs = [rng.random(b.inputs[0]["shape"]).astype(np.float32) for _ in range(3)]
        checked = 0
        for k in cuts:
            for tl in ([False, True] if b.cuts[k].tl else [False]):
                with Device(b, str(k), tl=tl, edge=c_edge.ep) as dc, Device(b, str(k), tl=tl, edge=py_edge.ep) as dp:
                    for x in xs:
                        yc, rc = dc.infer(x)
                        yp, _ = dp.infer(x)
                        assert yc.shape == yp.shape and np.abs(yc - yp).max() <= 1e-4, (name, k, tl)
                        assert rc["edge_ms"] > 0
                        checked += 1
        with Device(b, "input", edge=c_edge.ep) as d:
            y, _ = d.infer(xs[0])
        assert checked >= 9 if name != "branches" else checked >= 6
    finally:
        c_edge.stop()
        py_edge.stop()


def test_bad_frames_get_the_same_errors_as_from_the_python_edge(bundles):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reliability as R

    b = bundles["chain"]
    c_edge = CEdge(b, [0], extra=["--max-message-mb", "1"])
    try:
        rows = R.bad_input_rows(c_edge.ep, b, c_edge.errors_logged)
    finally:
        c_edge.stop()
    py = {r["case"]: r for r in R.bad_input_table()}
    for r in rows:
        assert r["reply"] == "ERROR" and r["counted"] and r["still_serving"], r
        assert r["error"] == py[r["case"]]["error"], (r, py[r["case"]])


def test_startup_errors_are_one_line(bundles, tmp_path):
    b = bundles["chain"]
    for args, text in (([str(tmp_path / "none"), "--cut", "0", "--bind", "tcp://127.0.0.1:1"], "does not exist"),
                       ([str(b.path), "--cut", "99", "--bind", "tcp://127.0.0.1:1"], "has no compiled tail"),
                       ([str(b.path), "--cut", "0"], "refusing plain TCP"),
                       ([str(b.path)], "--cut")):
        r = subprocess.run([EDGED, *args], capture_output=True, text=True, timeout=30)
        lines = [l for l in r.stderr.splitlines() if l.startswith("tlcut-edged: error:")]
        assert r.returncode == 2 and len(lines) == 1 and text in lines[0], r.stderr


@pytest.mark.root
def test_same_results_across_the_testbed(bundles):
    from tlcut.runtime import testbed as tbm

    why = tbm.available()
    if why:
        pytest.skip(f"testbed unavailable: {why}")
    b = bundles["chain"]
    cuts = _cuts(b)
    code = ("import json, sys, numpy as np\nfrom tlcut.bundle import Bundle\nfrom tlcut.runtime.run import Device\n"
            f"b = Bundle.open({str(b.path)!r})\nout = {{}}\n"
            "rng = np.random.default_rng(2)\nxs = [rng.random(b.inputs[0]['shape']).astype(np.float32) for _ in range(2)]\n"
            f"for k in {cuts!r}:\n"
            "    for tl in ([False, True] if b.cuts[k].tl else [False]):\n"
            "        with Device(b, str(k), tl=tl, edge=sys.argv[1], timeout_s=20, insecure=True) as d:\n"
            "            out[f'{k}-{tl}'] = [d.infer(x)[0].tolist() for x in xs]\n"
            "print(json.dumps(out))\n")
    results = {}
    with tbm.Testbed(tbm.Config(port=5841, device_quota=1.0), log=lambda *_: None) as tb:
        for name in ("python", "c"):
            if name == "python":
                argv = [sys.executable, "-m", "tlcut", "serve", str(b.path), *sum((["--cut", str(k)] for k in cuts), []),
                        "--bind", tb.state.edge_bind, "--insecure"]
            else:
                argv = [EDGED, str(b.path), *sum((["--cut", str(k)] for k in cuts), []), "--bind", tb.state.edge_bind,
                        "--insecure"]
            edge = tb.popen("edge", argv, stderr=subprocess.DEVNULL)
            try:
                time.sleep(2.0)
                r = tb.run("device", [sys.executable, "-c", code, tb.state.device_endpoint], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr[-2000:]
                results[name] = json.loads(r.stdout)
            finally:
                edge.terminate()
                edge.wait(10)
    assert results["python"].keys() == results["c"].keys() and len(results["c"]) >= 3
    for k in results["c"]:
        assert np.abs(np.array(results["c"][k]) - np.array(results["python"][k])).max() <= 1e-4, k


def test_curve_admits_only_listed_devices(bundles, tmp_path):
    from tlcut.runtime import security as S
    from tlcut.runtime.run import EdgeUnavailable

    b = bundles["chain"]
    S.make_keys(tmp_path / "k", ["edge", "good", "bad"])
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "good.key").write_bytes((tmp_path / "k" / "good.key").read_bytes())
    ep = f"tcp://127.0.0.1:{_port()}"
    log = open(tmp_path / "edged.log", "w+")
    p = subprocess.Popen([EDGED, str(b.path), "--cut", "0", "--bind", ep, "--key", str(tmp_path / "k" / "edge.key_secret"),
                          "--allow", str(tmp_path / "allow")], stderr=log)
    try:
        good = S.ClientCurve.from_files(tmp_path / "k" / "good.key_secret", tmp_path / "k" / "edge.key")
        wait_for_edge(ep, 20, curve=good)
        x = np.random.default_rng(0).random(b.inputs[0]["shape"]).astype(np.float32)
        with Device(b, "0", edge=ep, curve=good) as d:
            y, rec = d.infer(x)
        assert y.shape == tuple(b.outputs[0]["shape"]) and not rec["fallback"]
        for who, pin in (("bad", "edge"), ("good", "bad")):  # an unlisted key; a wrongly pinned edge
            c = S.ClientCurve.from_files(tmp_path / "k" / f"{who}.key_secret", tmp_path / "k" / f"{pin}.key")
            with EdgeClient(ep, timeout_s=1, curve=c) as cl:
                with pytest.raises(EdgeUnavailable):
                    cl.ping()
        assert "not in the allow-list" in Path(log.name).read_text()
    finally:
        p.terminate()
        assert p.wait(30) == 0
        text = Path(log.name).read_text()
        assert "Sanitizer" not in text and "runtime error" not in text, text[-3000:]
