"""A plan carried end to end: `compile --plan`, then `serve --plan` (the Python edge, or
tlcut-edged with TLCUT_EDGED set) and `run --plan` run the plan's choice, engines included, with
nothing re-typed; a plan that disagrees with the flags, the bundle or the machine is one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tlcut import cli
from tlcut.bundle import Bundle
from tlcut.deployment import Deployment, Engine, Plan
from tlcut.lab.loopback import free_port
from tlcut.placement import DEVICE, SPLIT, Placement
from tlcut.runtime import run as rt
from tlcut.runtime.client import wait_for_edge
from test_engines import images  # noqa: F401 (a fixture: calibration images)

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'tlcut[openvino]')")

COMPONENTS = ("device", "device_tl", "serialize", "latency", "transfer", "deserialize", "edge_tl", "edge", "reply")
EDGED = os.environ.get("TLCUT_EDGED", "")


def candidate(placement, device=Engine(), edge=Engine(), total=1.0):
    return Deployment(placement, {**{k: 0.0 for k in COMPONENTS}, "device": total}, 1000, device=device, edge=edge)


def save_plan(b, path, ranking, sha="bundle"):
    plan = Plan(b.name, b.model_sha256 if sha == "bundle" else sha,
                {"up_mbps": 57, "rtt_ms": 28, "down_mbps": 570}, ranking, ranking[0])
    plan.save(path)
    return plan


@pytest.fixture
def bundle(small_bundle):
    b = small_bundle(input_layout="NCHW", hw=16, tl=None)  # nothing compiled: compile --plan does it
    return b, next(c.index for c in b.cuts if c.tl)


def ranking(k):
    """The best: ORT float32 on the device, OpenVINO float32 on the edge, float16 on the wire;
    second: int8 halves on the other engines; third: device only."""
    return [candidate(Placement(SPLIT, k, False, "float16"), Engine("onnxrt", "float32", 1), Engine("openvino", "float32", 2)),
            candidate(Placement(SPLIT, k, False, "raw"), Engine("openvino", "int8", 1), Engine("onnxrt", "int8", 1), 2.0),
            candidate(Placement(DEVICE), Engine("onnxrt", "float32", 1), Engine(), 3.0)]


def assert_like_float_model(b, outs, xs, tol):
    """Each output within ``tol`` (of the largest) of the float32 model's, and moving with its input."""
    s = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    ref = [s.run(None, {b.inputs[0]["name"]: x})[0] for x in xs]
    assert len(outs) == len(xs)
    scale = max(np.abs(r).max() for r in ref)
    for y, r in zip(outs, ref):
        assert np.abs(y - r).max() <= tol * scale
    assert np.abs(ref[0] - ref[1]).max() > 1e-3 * scale and np.abs(outs[0] - outs[1]).max() > 1e-3 * scale, \
        "the output must move with the input"


def one_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("tlcut: warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tlcut: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def serve_and_run(edge_argv, b, plan, choice, tmp_path, monkeypatch):
    """``edge_argv`` serving on a loopback port, and `tlcut run --plan` in this process with each
    output kept: (result JSON, outputs, inputs, the edge's stderr)."""
    outs = []
    real = rt.Device.infer

    def infer(self, x):
        y, rec = real(self, x)
        outs.append(y)
        return y, rec

    monkeypatch.setattr(rt.Device, "infer", infer)
    ep = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "run.json"
    pick = ["--choice", str(choice)] if choice else []
    edge = subprocess.Popen([*edge_argv, "--bind", ep], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_edge(ep, 60)
        argv = ["run", str(b.path), "--plan", str(plan), *pick, "--edge", ep, "--requests", "3", "--warmup", "1",
                "-o", str(out)]
        assert cli.main(argv) == 0
    finally:
        edge.terminate()
        _, err = edge.communicate(timeout=30)
    return json.loads(out.read_text()), outs, rt.inputs(b, None, 4), err


@pytest.mark.parametrize("choice", [None, 2], ids=["best-float32", "choice-2-int8"])
def test_compile_serve_run_reproduce_the_plans_choice(bundle, tmp_path, images, monkeypatch, capsys, choice):
    b, k = bundle
    plan = tmp_path / "plan.json"
    ranks = ranking(k)
    want = ranks[(choice or 1) - 1]
    save_plan(b, plan, ranks)
    pick = ["--choice", str(choice)] if choice else []
    int8 = want.device.precision == "int8"
    if int8:  # int8 needs calibration, and says which flag
        code = cli.main(["compile", str(b.path), "--plan", str(plan), *pick])
        one_error(code, capsys.readouterr().err, "--calib")
    calib = ["--calib", str(images), "--calib-count", "8"] if int8 else []
    assert cli.main(["compile", str(b.path), "--plan", str(plan), *pick, *calib]) == 0
    err = capsys.readouterr().err
    assert f"--plan {plan}" in err
    got = Bundle.open(b.path)
    prec = want.device.precision
    assert got.find("head", k, False, precision=prec) and got.find("tail", k, False, precision=prec)
    assert not any(a.tl for a in got.artifacts) and {a.cut for a in got.artifacts if a.cut is not None} == {k}

    result, outs, xs, serve_err = serve_and_run([sys.executable, "-m", "tlcut", "serve", str(b.path), "--plan",
                                                 str(plan), *pick], b, plan, choice, tmp_path, monkeypatch)
    e = want.edge
    assert f"this side runs {e.backend} {e.precision}, {e.threads} threads" in serve_err, serve_err[-2000:]
    # the run ran the plan's placement, wire encoding and device engine, and recorded the plan's candidate
    assert result["placement"] == want.placement.to_json()
    assert (result["backend"], result["precision"], result["threads"]) == (want.device.backend, prec, want.device.threads)
    assert result["plan"]["engines"] == {"device": want.device.to_json(), "edge": want.edge.to_json()}
    assert result["plan"]["choice"] == choice and result["plan"]["label"] == want.label
    assert not any(r.get("fallback") for r in result["requests"])
    assert_like_float_model(b, outs, xs, 0.05 if int8 else 1e-2)


def test_a_plan_that_disagrees_is_one_line_that_says_what_to_do(bundle, tmp_path, capsys, monkeypatch):
    from tlcut.cli import from_plan

    b, k = bundle
    plan = tmp_path / "plan.json"
    save_plan(b, plan, ranking(k))
    ep = ["--edge", "tcp://127.0.0.1:9"]

    def check(argv, *needles):
        one_error(cli.main(argv), capsys.readouterr().err, *needles)

    # nothing compiled yet: the halves the plan runs are missing, and the fix is named
    check(["serve", str(b.path), "--plan", str(plan)], f"no float32 tail of cut {k}", f"tlcut compile {b.path} --plan")
    check(["run", str(b.path), "--plan", str(plan), "--choice", "2", *ep], f"no int8 head of cut {k}", "--calib DATA")
    assert cli.main(["compile", str(b.path), "--plan", str(plan)]) == 0
    capsys.readouterr()
    # a flag typed against the plan is refused, even when it is the flag's default value
    check(["serve", str(b.path), "--plan", str(plan), "--backend", "onnxrt"], "--backend onnxrt disagrees", "--backend openvino")
    check(["run", str(b.path), "--plan", str(plan), "--cut", str(k + 1), *ep], "--cut", "disagrees")
    check(["run", str(b.path), "--plan", str(plan), "--encoding", "raw", *ep], "--encoding raw disagrees")
    check(["run", str(b.path), "--plan", str(plan), "--threads", "3", *ep], "--threads 3 disagrees")
    check(["compile", str(b.path), "--plan", str(plan), "--tl", "on"], "--tl on disagrees")
    check(["compile", str(b.path), "--plan", str(plan), "--precision", "int8"], "--precision int8 disagrees")
    check(["compile", str(b.path), "--plan", str(plan), "--cuts", "0"], "drop --cuts")
    check(["compile", str(b.path), "--plan", str(plan), "--calib", "elpv"], "runs none")
    # flags that agree are fine
    assert cli.main(["compile", str(b.path), "--plan", str(plan), "--tl", "off", "--precision", "float32"]) == 0
    capsys.readouterr()
    check(["compile", str(b.path), "--plan", str(plan), "--backend", "onnxrt"], "--backend onnxrt disagrees")  # the edge runs openvino
    capsys.readouterr()
    # candidates: out of range, without a plan, one the edge has nothing of, with --adapt
    check(["run", str(b.path), "--plan", str(plan), "--choice", "9", *ep], "--choice 9", "1 to 3")
    check(["run", str(b.path), "--choice", "2", "--cut", "0", *ep], "add --plan")
    check(["serve", str(b.path), "--plan", str(plan), "--choice", "3"], "device only", "the edge serves nothing")
    check(["run", str(b.path), "--plan", str(plan), "--adapt", str(plan), *ep], "choose one")
    # an engine this machine lacks
    monkeypatch.setitem(from_plan.LIBRARIES, "openvino", "openvino_not_installed_here")
    check(["serve", str(b.path), "--plan", str(plan)], "lacks openvino_not_installed_here", "--choice N")
    monkeypatch.undo()
    # a plan for another model; a plan that does not say which model is taken, with a warning
    save_plan(b, plan, ranking(k), sha="0" * 64)
    check(["run", str(b.path), "--plan", str(plan), *ep], "another model", "plan again")
    d = json.loads(plan.read_text())
    del d["model_sha256"]
    plan.write_text(json.dumps(d))
    assert cli.main(["compile", str(b.path), "--plan", str(plan)]) == 0
    assert "tlcut: warning: plan" in capsys.readouterr().err


@pytest.mark.skipif(not EDGED or not os.access(EDGED, os.X_OK), reason="set TLCUT_EDGED to the built tlcut-edged")
def test_tlcut_edged_takes_the_plan(bundle, tmp_path, monkeypatch, capsys):
    b, k = bundle
    plan = tmp_path / "plan.json"
    ranks = ranking(k)
    save_plan(b, plan, ranks)
    assert cli.main(["compile", str(b.path), "--plan", str(plan)]) == 0
    capsys.readouterr()

    def edged(*args, timeout=30):
        return subprocess.run([EDGED, str(b.path), "--plan", str(plan), *args], capture_output=True, text=True,
                              timeout=timeout)

    # refused: a flag against the plan, a candidate out of range, an engine the C edge lacks, another model
    for args, needle in ((["--cut", str(k + 1)], "disagrees"), (["--precision", "int8"], "disagrees"),
                         (["--choice", "9"], "--choice")):
        r = edged(*args, "--max-requests", "1")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("tlcut-edged: error: ") and needle in r.stderr, r.stderr
    other = tmp_path / "other.json"
    save_plan(b, other, [candidate(ranks[0].placement, Engine("onnxrt"), Engine("tensorrt", "float32"))])
    r = subprocess.run([EDGED, str(b.path), "--plan", str(other)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "tensorrt" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    save_plan(b, other, ranks, sha="0" * 64)
    r = subprocess.run([EDGED, str(b.path), "--plan", str(other)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "another model" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # served from the plan alone, it answers `run --plan` as the plan chose
    result, outs, xs, err = serve_and_run([EDGED, str(b.path), "--plan", str(plan)], b, plan, None, tmp_path,
                                          monkeypatch)
    assert f"cut {k}" in err and "float32" in err, err
    assert result["placement"] == ranks[0].placement.to_json() and not any(r.get("fallback") for r in result["requests"])
    assert_like_float_model(b, outs, xs, 1e-2)


def test_run_adapt_keeps_the_candidates_one_edge_engine_serves(bundle, tmp_path, capsys):
    from tlcut.runtime.serve import local_edge
    from tlcut.toolchain.compile import compile_cuts

    b, k = bundle
    ov = Engine("openvino", "float32", 2)
    ranks = [candidate(Placement(SPLIT, k, False, "float16"), Engine("onnxrt", "float32", 1), ov),
             candidate(Placement(SPLIT, k, False, "raw"), Engine("onnxrt", "float32", 1), Engine("onnxrt", "float32", 1), 2.0),
             candidate(Placement(DEVICE), Engine("onnxrt", "float32", 1), Engine(), 3.0)]
    save_plan(b, tmp_path / "plan.json", ranks)
    compile_cuts(b, [b.cuts[k]], tl="off")
    with local_edge(b, [str(k)], tl="off") as ep:
        assert cli.main(["run", str(b.path), "--adapt", str(tmp_path / "plan.json"), "--edge", ep, "--requests", "4",
                         "--warmup", "0", "-o", str(tmp_path / "run.json")]) == 0
    err = capsys.readouterr().err
    # the raw-wire candidate's tail was planned on ONNX Runtime, the best's on OpenVINO: one edge runs one
    assert "1 of the plan's candidates run their tail on another edge engine than openvino float32, 2 threads" in err
    assert f"2 candidates; the edge must serve them all: tlcut serve {b.path} --cut {k} --backend openvino " \
           "--precision float32 --threads 2" in err
    used = {r["placement"] for r in json.loads((tmp_path / "run.json").read_text())["requests"]}
    assert used <= {ranks[0].label, ranks[2].label} and used
