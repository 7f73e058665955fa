"""The mistakes a user makes, across the verbs: each is one `tlcut: error:` line that says what was
wrong, exit code 2, and nothing written or changed (issue 24)."""

import os
import shutil

import pytest

from tlcut.cli import main

EP = "tcp://127.0.0.1:5599"  # nothing listens there; every mistake is refused before connecting

# (what the user typed, with B the bundle, R a demo's results folder, T the test's folder; words
# the error must say)
MISTAKES = [
    (["cuts"], ["required", "bundle"]),
    (["cuts", "B/model.onnx"], ["is a file"]),
    (["cuts", "R"], ["did you mean", "bundle"]),
    (["cuts", "T/nowhere"], ["does not exist"]),
    (["compile", "B", "--cuts", "999"], ["cut '999' not found", "tlcut cuts"]),
    (["compile", "B", "--cuts", "1", "--precision", "int8"], ["--calib"]),
    (["compile", "B", "--cuts", "1", "--calib", "elpv"], ["--precision int8"]),
    (["compile", "B", "--cuts", "1", "--tl", "maybe"], ["--tl"]),
    (["bench", "B", "--role", "devcie"], ["--role", "devcie"]),
    (["bench", "B", "--role", "device", "--iterations", "0"], ["--iterations"]),
    (["bench", "B", "--role", "device", "--engines", "onnxrt:float64"], ["float64"]),
    (["plan", "--device", "T/dev.json", "--edge", "T/edge.json", "--bandwidth", "57", "--latency", "28"],
     ["dev.json", "tlcut bench"]),
    (["plan", "--device", "T/dev.json", "--edge", "T/edge.json", "--bandwidth", "fast", "--latency", "28"],
     ["--bandwidth"]),
    (["run", "B", "--cut", "1", "--edge", "127.0.0.1:5599"], ["tcp://127.0.0.1:5599"]),
    (["run", "B", "--cut", "1"], ["needs an edge", "--edge"]),
    (["run", "B", "--cut", "999", "--edge", EP], ["999"]),
    (["run", "B", "--cut", "1", "--encoding", "jpeg", "--edge", EP], ["jpeg"]),
    (["run", "B", "--cut", "input", "--encoding", "jpeg", "--jpeg-quality", "101", "--edge", EP], ["quality"]),
    (["run", "B", "--plan", "T/plan.json"], ["plan.json"]),
    (["run", "B", "--cut", "1", "--edge", EP, "--choice", "2"], ["--choice", "--plan"]),
    (["serve", "B", "--cut", "1", "--bind", "tcp://*:5599"], ["--bind tcp://127.0.0.1"]),
    (["serve", "B", "--cut", "1", "--bind", "5599"], ["tcp://127.0.0.1:5599"]),
    (["serve", "B"], ["--cut"]),
    (["export", "T/nosuch.onnx", "-o", "T/out"], ["nosuch.onnx"]),
    (["export", "B/model.onnx", "-o", "R", "--force"], ["not a tlcut bundle"]),
    (["tiles", "B", "--from", "0", "--to", "1", "--bands", "0", "-o", "T/tiles"], ["--bands"]),
    (["keys", "-o"], ["-o"]),
    (["nosuchverb"], ["nosuchverb"]),
]


def _tree(root):
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(small_bundle, tmp_path_factory):
    """A bundle and a demo's results folder (its bundle one level down, beside the user's files)."""
    b = small_bundle("residual", tl="both")
    t = tmp_path_factory.mktemp("mistakes")
    shutil.copytree(b.path, t / "b")
    res = t / "results"
    shutil.copytree(b.path, res / "bundle")
    for name in ("summary.md", "summary.json", "plan.png"):
        (res / name).write_text("the user's results")
    return t


@pytest.mark.parametrize("argv, says", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(world, capfd, argv, says):
    subst = {"B": str(world / "b"), "R": str(world / "results"), "T": str(world)}
    args = [subst.get(a, a) for a in argv]
    args = [next((v + a[1:] for k, v in subst.items() if a.startswith(k + "/")), a) for a in args]
    before = _tree(world)
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tlcut: error: "), err
    for word in says:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in out + err
    assert _tree(world) == before, "a mistake wrote or changed files"


def test_the_table_is_as_wide_as_promised():
    assert len(MISTAKES) >= 20 and len({m[0][0] for m in MISTAKES}) >= 9
