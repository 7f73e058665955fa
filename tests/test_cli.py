"""The command line: the pipeline end to end on a small model, and bad input. Every user mistake
ends with one line on stderr, exit code 2, and nothing half-written left behind."""

import json
import os

import onnx
import pytest

from tlcut.models import graphs
from tlcut import cli


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.startswith("tlcut: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "branches.onnx"
    onnx.save(graphs.branches(hw=16, c=8), p)
    return p


def test_pipeline_export_cuts_compile_bench_plan(tmp_path, capsys, model_file):
    b = tmp_path / "bundle"
    assert run(capsys, "export", model_file, "-o", b)[0] == 0
    code, out, _ = run(capsys, "cuts", b, "--json")
    assert code == 0
    cuts = json.loads(out)["cuts"]
    assert [c["tensor"] for c in cuts] == ["t", "cat"]
    code, out, _ = run(capsys, "cuts", b)
    assert "2 cuts of branches" in out and "cat" in out
    assert run(capsys, "compile", b, "--cuts", "all")[0] == 0
    for f in ("head.onnx", "tail.onnx", "head_tl.onnx", "tail_tl.onnx", "onnxrt/head_tl.onnx"):
        assert (b / "halves" / "1" / f).is_file(), f
    for role in ("device", "edge"):
        assert run(capsys, "bench", b, "--role", role, "--iterations", "3", "--check", "1",
                   "-o", tmp_path / f"{role}.json")[0] == 0
    # the device's whole model back to back, its heads after a request's wait
    dev = json.loads((tmp_path / "device.json").read_text())["settings"]
    assert (dev["idle_ms"], dev["head_idle_ms"]) == (0.0, 30.0)
    code, out, _ = run(capsys, "plan", "--device", tmp_path / "device.json", "--edge", tmp_path / "edge.json",
                       "--bandwidth", "57", "--latency", "28", "-o", tmp_path / "plan.json")
    assert code == 0 and "best:" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["network"]["up_mbps"] == 57 and plan["best"]["name"]
    assert not list(tmp_path.glob("**/*.tmp-*")), "no staging directories left behind"


def test_missing_model_file(tmp_path, capsys):
    code, _, err = run(capsys, "export", tmp_path / "nope.onnx", "-o", tmp_path / "b")
    one_line_error(code, err, "does not exist")
    assert not (tmp_path / "b").exists()


def test_corrupt_model_file_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    code, _, err = run(capsys, "export", bad, "-o", tmp_path / "b")
    one_line_error(code, err, "not a valid ONNX model")
    assert os.listdir(tmp_path) == ["bad.onnx"]


def test_failure_mid_export_leaves_no_bundle(tmp_path, capsys, model_file, monkeypatch):
    from tlcut.toolchain import export as exp

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(exp, "write_json_atomic", boom)
    with pytest.raises(OSError):
        cli.main(["export", str(model_file), "-o", str(tmp_path / "b")])
    assert sorted(os.listdir(tmp_path)) == ["branches.onnx"]


def test_existing_bundle_is_not_overwritten_without_force(tmp_path, capsys, model_file):
    b = tmp_path / "b"
    assert run(capsys, "export", model_file, "-o", b)[0] == 0
    before = (b / "manifest.json").read_text()
    code, _, err = run(capsys, "export", model_file, "-o", b)
    one_line_error(code, err, "already exists", "--force")
    assert (b / "manifest.json").read_text() == before
    assert run(capsys, "export", model_file, "-o", b, "--force")[0] == 0


def test_not_a_bundle(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    code, _, err = run(capsys, "cuts", tmp_path / "half")
    one_line_error(code, err, "not a complete tlcut bundle")
    code, _, err = run(capsys, "cuts", tmp_path / "absent")
    one_line_error(code, err, "does not exist", "tlcut export")


def test_unknown_cut(small_bundle, capsys):
    b = small_bundle("branches", tl=None, hw=16, c=8).path
    code, _, err = run(capsys, "compile", b, "--cuts", "7")
    one_line_error(code, err, "cut '7' not found", "2 cuts", "tlcut cuts")
    code, _, err = run(capsys, "compile", b, "--cuts", "no_such_tensor")
    one_line_error(code, err, "not found")
    code, _, err = run(capsys, "compile", b)
    one_line_error(code, err, "--cuts")
    assert not (b / "halves").exists() or not any((b / "halves").iterdir())


def test_profile_from_another_model(small_bundle, tmp_path, capsys):
    a, b = (small_bundle("branches", tl=None, hw=hw, c=8).path for hw in (16, 12))
    run(capsys, "bench", a, "--role", "device", "--iterations", "2", "--check", "0", "-o", tmp_path / "d.json")
    run(capsys, "bench", b, "--role", "edge", "--iterations", "2", "--check", "0", "-o", tmp_path / "e.json")
    code, _, err = run(capsys, "plan", "--device", tmp_path / "d.json", "--edge", tmp_path / "e.json")
    one_line_error(code, err, "different models")
    code, _, err = run(capsys, "plan", "--device", tmp_path / "e.json", "--edge", tmp_path / "e.json")
    one_line_error(code, err, "measured as the edge")


def test_impossible_constraint(small_bundle, tmp_path, capsys):
    b = small_bundle("branches", tl=None, hw=16, c=8).path
    for role in ("device", "edge"):
        run(capsys, "bench", b, "--role", role, "--iterations", "2", "--check", "0", "-o", tmp_path / f"{role}.json")
    code, _, err = run(capsys, "plan", "--device", tmp_path / "device.json", "--edge", tmp_path / "edge.json",
                       "--max-device-ms", "0", "--max-upload-bytes", "1")
    one_line_error(code, err, "no plan meets the constraints", "relax")


@pytest.mark.tf
def test_unknown_architecture(tmp_path, capsys):
    code, _, err = run(capsys, "export", "DenseNet170", "-o", tmp_path / "b")
    one_line_error(code, err, "unknown architecture 'DenseNet170'", "DenseNet169", "--list")
    assert not (tmp_path / "b").exists()


def test_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, tlcut.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "for v in ('cuts', 'compile', 'bench', 'plan'):\n"
            "    try:\n        c.main([v, '--help'])\n    except SystemExit:\n        pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "assert 'keras' not in sys.modules, 'keras imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_damaged_manifest(small_bundle, capsys):
    import json as _json

    b = small_bundle("branches", tl=None, hw=16, c=8).path
    m = _json.loads((b / "manifest.json").read_text())
    del m["cuts"]
    (b / "manifest.json").write_text(_json.dumps(m))
    code, _, err = run(capsys, "cuts", b)
    one_line_error(code, err, "is damaged", "re-export")
