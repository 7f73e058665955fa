"""The Triton edge: the repository writer, the device's Triton transport, and both against the
real tritonserver that the nvidia-pytriton wheel carries.

The wheel's server has only the Python backend, so the served tails are tlcut's own runners bound
through PyTriton (runtime/triton.py); the written repository (onnxruntime backend) is checked by
letting that same tritonserver parse it. PyTriton 0.7 needs numpy<2 and a libpython matching the
interpreter: point TLCUT_TRITON_PYTHON at such a Python (docs/triton.md) or these tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.runtime import protocol as P
from tlcut.runtime.client import EdgeUnavailable
from tlcut.runtime.run import Device, connect
from tlcut.runtime.triton import TritonClient, model_name, parse_endpoint
from tlcut.lab.loopback import free_port

BUNDLE = Path(__file__).resolve().parents[1] / "runtime" / "c" / "tests" / "data" / "bundle"
HAVE_CLIENT = importlib.util.find_spec("tritonclient") is not None
needs_client = pytest.mark.skipif(not HAVE_CLIENT, reason="tritonclient not installed (pip install 'tlcut[triton]')")


@pytest.fixture(scope="module")
def bundle():
    return Bundle.open(BUNDLE)


# -- naming and endpoints ------------------------------------------------------------------------

def test_model_names_are_fixed():
    assert model_name(None) == model_name(P.INPUT_CUT) == "model"
    assert model_name(52) == "cut-52" and model_name(52, True) == "cut-52-tl"
    assert model_name(52, True, "tensorrt") == "cut-52-tl-trt"
    assert parse_endpoint("triton+grpc://edge.local") == ("grpc", "edge.local:8001", "onnx")
    assert parse_endpoint("triton+http://10.0.0.2:9000?engine=tensorrt") == ("http", "10.0.0.2:9000", "tensorrt")
    with pytest.raises(TlcutError, match="triton\\+grpc://HOST:8001"):
        parse_endpoint("triton+grpc://")


# -- the repository writer -----------------------------------------------------------------------

def _parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@needs_client
@pytest.mark.parametrize("max_batch", [0, 8])
def test_repository_configs_match_the_onnx(bundle, tmp_path, max_batch):
    from tritonclient.grpc import model_config_pb2
    from tlcut.toolchain.triton_repo import write_repository

    repo = tmp_path / "repo"
    index = write_repository(bundle, ["0", "3"], repo, max_batch=max_batch,
                             preferred_batch=[4, 8] if max_batch else None, max_queue_delay_us=100 if max_batch else 0,
                             instances=2)
    assert set(index) == {"model", "cut-0", "cut-0-tl", "cut-3"}
    assert (index["cut-0-tl"]["cut"], index["cut-0-tl"]["tl"]) == (0, True)
    for name in index:
        cfg = _parse_config(repo / name / "config.pbtxt")
        m = onnx.load(str(repo / name / "1" / "model.onnx"))
        assert cfg.name == name and cfg.backend == "onnxruntime" and cfg.max_batch_size == max_batch
        assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        for got, vi in zip(list(cfg.input) + list(cfg.output), list(m.graph.input) + list(m.graph.output)):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            assert got.name == vi.name
            assert model_config_pb2.DataType.Name(got.data_type) == "TYPE_FP32"
            assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            if max_batch:
                assert dims[0] == -1 and list(got.dims) == dims[1:]
            else:
                assert list(got.dims) == dims and dims[0] == 1
        assert len(cfg.input) == len(m.graph.input) and len(cfg.output) == len(m.graph.output)
        if max_batch:
            assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
            assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
        else:
            assert not cfg.HasField("dynamic_batching")


def test_batched_repository_really_batches(bundle, tmp_path):
    """The symbolic-batch tail gives, row by row, what the batch-1 tail gives."""
    import onnxruntime as ort
    from tlcut.toolchain.triton_repo import write_repository

    write_repository(bundle, ["0"], tmp_path / "r", max_batch=4, tl="on")
    batched = ort.InferenceSession(str(tmp_path / "r" / "cut-0-tl" / "1" / "model.onnx"))
    one = ort.InferenceSession(str(bundle.runnable("tail", 0, True)))
    name = one.get_inputs()[0].name
    xs = np.random.default_rng(1).standard_normal((3, 4, 4, 4)).astype(np.float32)
    got = batched.run(None, {name: xs})[0]
    want = np.concatenate([one.run(None, {name: x[None]})[0] for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], got[1])


def test_repository_flag_errors(bundle, tmp_path):
    from tlcut.toolchain.triton_repo import write_repository

    with pytest.raises(TlcutError, match="--max-batch"):
        write_repository(bundle, ["0"], tmp_path / "a", preferred_batch=[4])
    with pytest.raises(TlcutError, match="--cut"):
        write_repository(bundle, [], tmp_path / "b")
    write_repository(bundle, ["input"], tmp_path / "c")
    with pytest.raises(TlcutError, match="--force"):
        write_repository(bundle, ["input"], tmp_path / "c")


def test_compile_target_triton_cli(tmp_path):
    out = tmp_path / "repo"
    r = subprocess.run([sys.executable, "-m", "tlcut", "compile", str(BUNDLE), "--target", "triton", "--cut", "0",
                        "--cut", "3", "--tl", "off", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cut-0", "cut-3", "model"]
    r = subprocess.run([sys.executable, "-m", "tlcut", "compile", str(BUNDLE), "--cuts", "0", "--max-batch", "4"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--max-batch belongs to --target" in r.stderr


def _wheel_tritonserver() -> Path | None:
    """The wheel's tritonserver, here or in the Python TLCUT_TRITON_PYTHON names (its own venv)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None:
        root = Path(spec.origin).parent
    else:
        py = os.environ.get("TLCUT_TRITON_PYTHON")
        if not py:
            return None
        r = subprocess.run([py, "-c", "import pytriton, os; print(os.path.dirname(pytriton.__file__))"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode:
            return None
        root = Path(r.stdout.strip())
    p = root / "tritonserver" / "bin" / "tritonserver"
    return p if p.is_file() else None


def test_real_tritonserver_parses_the_repository(bundle, tmp_path):
    """The wheel's tritonserver reads every config.pbtxt; it has no onnxruntime backend, so each
    model must fail for that reason alone (a config error would say otherwise)."""
    server = _wheel_tritonserver()
    if server is None:
        pytest.skip("nvidia-pytriton (its tritonserver) not installed: pip install 'tlcut[triton]'")
    from tlcut.toolchain.triton_repo import write_repository

    names = write_repository(bundle, ["0", "3"], tmp_path / "repo", max_batch=4, preferred_batch=[2, 4])
    r = subprocess.run([str(server), "--model-repository", str(tmp_path / "repo"), "--backend-directory",
                        str(server.parent.parent / "backends"), "--grpc-port", str(free_port()), "--http-port",
                        str(free_port()), "--metrics-port", str(free_port()), "--exit-timeout-secs", "1"],
                       capture_output=True, text=True, timeout=120)
    log = r.stdout + r.stderr
    failed = dict(re.findall(r"failed to load '([^']+)' version 1: (.*)\"", log))
    assert set(failed) == set(names), log[-3000:]
    assert all("unable to find backend library for backend 'onnxruntime'" in why for why in failed.values()), failed


# The wheel's tritonserver has the Python backend alone, so the written repository is served with
# one line changed per model: its backend, onnxruntime, becomes this Python model, which runs the
# written 1/model.onnx with ONNX Runtime under the written config (names, shapes, dtypes, batching).
ONNX_AS_PYTHON = """
import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        onnx_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in cfg["input"]]
        self.outputs = [t["name"] for t in cfg["output"]]

    def execute(self, requests):
        replies = []
        for r in requests:
            feed = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            ys = self.session.run(self.outputs, feed)
            replies.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, y) for n, y in zip(self.outputs, ys)]))
        return replies
"""


def _python_backend_server(tmp_path: Path):
    """(tritonserver, its backend directory, its environment) for serving Python models, or the
    reason it cannot: the stub matching TLCUT_TRITON_PYTHON's version, its libpython and site-packages."""
    py, why = _triton_python()
    if why:
        return None, why
    r = subprocess.run([py, "-c", "import os, sys, sysconfig, pytriton, onnxruntime; "
                        "from pytriton.utils.distribution import get_libs_path as libs; "
                        "print(os.path.dirname(pytriton.__file__), sysconfig.get_config_var('LIBDIR'), libs(), "
                        "'%d.%d' % sys.version_info[:2], os.path.dirname(sys.executable))"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode:
        return None, f"{py} lacks pytriton or onnxruntime: {r.stderr.strip()[-300:]}"
    root, libdir, wheel_libs, version, bindir = r.stdout.split()
    dist = Path(root) / "tritonserver"
    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backends / "python" / f).symlink_to(dist / "backends" / "python" / f)
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}",  # the stub finds its venv through PATH
               LD_LIBRARY_PATH=":".join(filter(None, [libdir, wheel_libs, os.environ.get("LD_LIBRARY_PATH")])))
    return (dist / "bin" / "tritonserver", backends, env), None


@needs_client
@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_serve_written_repository(bundle, tmp_path, proto):
    """What `compile --target triton` writes, served by the real tritonserver and asked by the
    device: each tail answers as the whole model (the TL tail as head+tail run here)."""
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    server, why = _python_backend_server(tmp_path)
    if server is None:
        pytest.skip(f"cannot serve a repository with PyTriton's tritonserver: {why}")
    repo = tmp_path / "repo"
    r = subprocess.run([sys.executable, "-m", "tlcut", "compile", str(BUNDLE), "--target", "triton", "--cut", "0",
                        "--cut", "3", "-o", str(repo)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == ["cut-0", "cut-0-tl", "cut-3", "model"]
    for name in names:
        cfg = repo / name / "config.pbtxt"
        text = cfg.read_text()
        assert text.count('backend: "onnxruntime"') == 1
        cfg.write_text(text.replace('backend: "onnxruntime"', 'backend: "python"'))
        (repo / name / "1" / "model.py").write_text(ONNX_AS_PYTHON)
    exe, backends, env = server
    grpc, http = free_port(), free_port()
    log = (tmp_path / "tritonserver.log").open("w")
    proc = subprocess.Popen([str(exe), "--model-repository", str(repo), "--backend-directory", str(backends),
                             "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(free_port()),
                             "--exit-timeout-secs", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if probe.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        assert proc.poll() is None and probe.is_server_ready(), (tmp_path / "tritonserver.log").read_text()[-3000:]
        assert all(probe.is_model_ready(n) for n in names)
        edge = f"triton+{proto}://127.0.0.1:{grpc if proto == 'grpc' else http}"
        whole = ort.InferenceSession(str(bundle.runnable("model")))
        head = ort.InferenceSession(str(bundle.runnable("head", 0, True)))
        tail = ort.InferenceSession(str(bundle.runnable("tail", 0, True)))
        rng = np.random.default_rng(3)
        xs = [rng.standard_normal((1, 3, 7, 7)).astype(np.float32) for _ in range(2)]
        want = [whole.run(None, {"x": x})[0] for x in xs]
        assert not np.allclose(want[0], want[1], atol=1e-3), "the output does not move with the input"
        with_tl = [tail.run(None, {tail.get_inputs()[0].name: head.run(None, {"x": x})[0]})[0] for x in xs]
        for cut, tl, expect in (("input", False, want), ("0", False, want), ("3", False, want), ("0", True, with_tl)):
            with Device(bundle, cut, tl=tl, edge=edge, timeout_s=20, fallback=False) as d:
                for x, w in zip(xs, expect):
                    y, rec = d.infer(x)
                    assert not rec["fallback"], (cut, tl)
                    np.testing.assert_allclose(y, w, rtol=1e-4, atol=1e-5, err_msg=f"cut {cut} tl {tl}")
                assert d.counts["offloaded"] == len(xs)
    finally:
        proc.kill()  # nothing of the server's is checked after this
        proc.wait()
        log.close()


# -- the transport without a server --------------------------------------------------------------

@needs_client
@pytest.mark.parametrize("scheme", ["triton+grpc", "triton+http"])
def test_dead_server_raises_within_timeout_and_device_falls_back(bundle, scheme):
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        for ep in (f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{free_port()}"):
            c = connect(ep, timeout_s=0.5, retries=1)
            assert isinstance(c, TritonClient)
            t0 = time.monotonic()
            with pytest.raises(EdgeUnavailable):
                c.request(np.zeros((1, 4, 1, 1), np.float32), 3)
            assert time.monotonic() - t0 < 0.5 * 2 + 1.5 and c.retried == 1
            c.close()
        with Device(bundle, "3", edge=f"{scheme}://127.0.0.1:{port}", timeout_s=0.3, retries=0, fallback=True) as d:
            x = np.random.default_rng(0).random((1, 3, 7, 7), np.float32)
            y, rec = d.infer(x)
            assert rec["fallback"] and d.counts["fell_back"] == 1 and y.shape == (1, 4)
    finally:
        silent.close()


@needs_client
def test_triton_refuses_other_encodings_and_curve():
    c = TritonClient(f"triton+grpc://127.0.0.1:{free_port()}", timeout_s=0.2)
    with pytest.raises(TlcutError, match="--encoding raw"):
        c.request(np.zeros((1, 4), np.float32), 0, encoding="float16")
    c.close()
    with pytest.raises(TlcutError, match="CURVE"):
        connect("triton+grpc://127.0.0.1:1", curve=object())


# -- against a real tritonserver (PyTriton, tlcut's runners) -------------------------------------

def _triton_python() -> tuple[str, str | None]:
    """The interpreter that can host PyTriton, and why not when none can."""
    py = os.environ.get("TLCUT_TRITON_PYTHON", sys.executable)
    if not shutil.which(py) and not Path(py).is_file():
        return py, f"TLCUT_TRITON_PYTHON={py} does not exist"
    r = subprocess.run([py, "-c", "from tlcut.runtime.triton import pytriton_ready as r; print(r() or 'OK')"],
                       capture_output=True, text=True, timeout=120)
    why = (r.stdout.strip().splitlines() or [r.stderr.strip()[-300:]])[-1]
    return py, None if why == "OK" else why


@pytest.fixture(scope="module")
def triton_edge():
    if not HAVE_CLIENT:
        pytest.skip("tritonclient not installed (pip install 'tlcut[triton]')")
    py, why = _triton_python()
    if why:
        pytest.skip(f"cannot start PyTriton's tritonserver from {py}: {why}")
    grpc, http, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen([py, "-m", "tlcut.runtime.triton", str(BUNDLE), "--cut", "0", "--cut", "3",
                             "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics),
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "READY " in line:  # tritonserver's log may share the pipe mid-line
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or proc.poll() is not None:
        proc.kill()
        pytest.fail("PyTriton's tritonserver did not start:\n" + "".join(lines[-40:]))
    yield {"grpc": f"triton+grpc://127.0.0.1:{grpc}", "http": f"triton+http://127.0.0.1:{http}"}
    proc.terminate()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_device_through_triton_matches_the_whole_model(bundle, triton_edge, proto):
    import onnxruntime as ort

    whole = ort.InferenceSession(str(bundle.runnable("model")))
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 3, 7, 7)).astype(np.float32) for _ in range(2)]
    want = [whole.run(None, {"x": x})[0] for x in xs]
    assert not np.allclose(want[0], want[1]), "the check would be vacuous: the output does not move with the input"
    for cut, tl in (("0", False), ("3", False), ("input", False)):
        with Device(bundle, cut, tl=tl, edge=triton_edge[proto], timeout_s=20, fallback=False) as d:
            got = []
            for x in xs:
                y, rec = d.infer(x)
                got.append(y)
                assert not rec["fallback"] and rec["edge_ms"] > 0 and rec["transfer_ms"] >= 0
                assert rec["total_ms"] >= rec["edge_ms"]
            assert d.counts["offloaded"] == 2
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # the TL tail: the device's head with DeviceTL, the edge's EdgeTL tail, against the TL model run locally
    head = ort.InferenceSession(str(bundle.runnable("head", 0, True)))
    tail = ort.InferenceSession(str(bundle.runnable("tail", 0, True)))
    with Device(bundle, "0", tl=True, edge=triton_edge[proto], timeout_s=20, fallback=False) as d:
        for x in xs:
            y, _ = d.infer(x)
            z = head.run(None, {"x": x})[0]
            np.testing.assert_allclose(y, tail.run(None, {tail.get_inputs()[0].name: z})[0], rtol=1e-4, atol=1e-5)


def test_edge_time_comes_from_triton_statistics(triton_edge):
    with TritonClient(triton_edge["grpc"], timeout_s=20) as c:
        a = np.random.default_rng(0).standard_normal((1, 4, 1, 1)).astype(np.float32)
        c.request(a, 3)[1].server_us  # the first window may hold other clients' requests counted late
        for _ in range(3):
            t0 = time.perf_counter()
            y, h = c.request(a, 3)
            rtt_us = (time.perf_counter() - t0) * 1e6
            assert 0 < h.server_us <= rtt_us and h.edge_source == "stats"
        assert h.cut_id == 3 and h.type == P.RESULT and y.shape == (1, 4)
        assert c.ping().type == P.PONG
        # pipelined: several in flight, received out of order, each reply the one for its own request
        import onnxruntime as ort

        tail = ort.InferenceSession(str(Bundle.open(BUNDLE).runnable("tail", 3, False)))
        feeds = {k: a * k - k for k in range(1, 5)}
        want = {k: tail.run(None, {tail.get_inputs()[0].name: f})[0] for k, f in feeds.items()}
        assert not any(np.allclose(want[i], want[j], atol=1e-3) for i in want for j in want if i < j)
        rids = {k: c.send(f, 3) for k, f in feeds.items()}
        for k in (3, 1, 4, 2):
            np.testing.assert_allclose(c.receive(rids[k])[0], want[k], rtol=1e-4, atol=1e-5, err_msg=f"request {k}")


def test_cli_run_against_triton(triton_edge):
    r = subprocess.run([sys.executable, "-m", "tlcut", "run", str(BUNDLE), "--cut", "0", "--edge", triton_edge["grpc"],
                        "--requests", "5", "--warmup", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json

    s = json.loads(r.stdout)["summary"]
    assert s["requests"] == 5 and s["counts"]["offloaded"] == 6 and s["edge_ms"]["median"] > 0
