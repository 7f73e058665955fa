"""What a new user meets first: error hints that never cost their files, one-line errors for a
damaged bundle, outputs that follow the umask, and quiet, visible long steps (issue 24)."""

import json
import os
import re
import stat

import onnx
import pytest

from tlcut.bundle import Bundle, staged_dir, write_json_atomic
from tlcut.cli import main
from tlcut.models import graphs


def _quiet(*_):
    pass


@pytest.fixture
def bundle(tmp_path):
    from tlcut.toolchain.export import export

    onnx.save(graphs.residual(hw=9, c=4), tmp_path / "m.onnx")
    return export(str(tmp_path / "m.onnx"), tmp_path / "b", progress=_quiet)


def _one_error(capsys, code, *needles):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tlcut: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _results_folder(bundle, tmp_path):
    """A demo's results folder: the bundle one level down, beside the user's results."""
    res = tmp_path / "results" / "demo-m"
    res.mkdir(parents=True)
    os.replace(bundle.path, res / "bundle")
    for name in ("summary.md", "summary.json", "plan.png"):
        (res / name).write_text("mine")
    (res / "profiles").mkdir()
    return res


# -- 1. a hint never proposes --force on a folder holding anything but a bundle -----------------
def test_cuts_on_a_results_folder_points_to_its_bundle_and_never_to_force(bundle, tmp_path, capsys):
    res = _results_folder(bundle, tmp_path)
    line = _one_error(capsys, main(["cuts", str(res)]), f"did you mean {res / 'bundle'}?")
    assert "--force" not in line


def test_a_folder_of_other_files_gets_no_force_hint_and_export_force_refuses_it(tmp_path, capsys):
    res = tmp_path / "results"
    res.mkdir()
    (res / "summary.md").write_text("mine")
    line = _one_error(capsys, main(["cuts", str(res)]), "summary.md")
    assert "--force" not in line
    onnx.save(graphs.residual(hw=9, c=4), tmp_path / "m.onnx")
    _one_error(capsys, main(["export", str(tmp_path / "m.onnx"), "-o", str(res), "--force"]),
               "not a tlcut bundle", "summary.md")
    line = _one_error(capsys, main(["export", str(tmp_path / "m.onnx"), "-o", str(res)]), "summary.md")
    assert "--force replaces only a bundle" in line and "pass --force" not in line
    assert sorted(p.name for p in res.iterdir()) == ["summary.md"], "the user's files are still there"


def test_a_bundle_with_its_manifest_lost_may_still_be_re_exported(bundle, capsys):
    (bundle.path / "manifest.json").unlink()
    _one_error(capsys, main(["cuts", str(bundle.path)]), "--force")


def test_a_bundle_path_that_is_a_file_says_so(bundle, capsys):
    line = _one_error(capsys, main(["cuts", str(bundle.path / "manifest.json")]), "is a file, not a bundle folder",
                      f"did you mean {bundle.path}?")
    assert "does not exist" not in line


# -- 2. a damaged model is one error line, and the manifest's sha256 is checked ----------------
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("verb", [["cuts"], ["cuts", "--json"], ["compile", "--cuts", "1"]])
def test_a_truncated_model_is_refused_by_its_sha256(bundle, capsys, verb):
    _truncate(bundle.model_path)
    argv = [verb[0], str(bundle.path), *verb[1:]]
    _one_error(capsys, main(argv), str(bundle.model_path), "changed since export", "re-export")


def test_a_model_that_does_not_parse_is_one_line_in_compile(bundle, capsys):
    """Even where the manifest's sha256 was rewritten to match, compile says the file is bad."""
    from tlcut.bundle import sha256_file

    _truncate(bundle.model_path)
    bundle.manifest["model"]["sha256"] = sha256_file(bundle.model_path)
    bundle.save_manifest()
    _one_error(capsys, main(["compile", str(bundle.path), "--cuts", "1"]), str(bundle.model_path),
               "not a readable ONNX model", "re-export")


def test_checking_the_model_is_cheap_on_a_57_mb_file(tmp_path):
    import time

    from tlcut.bundle import sha256_file

    big = tmp_path / "big"
    big.write_bytes(os.urandom(57 << 20))
    t = time.perf_counter()
    sha256_file(big)
    assert time.perf_counter() - t < 2.0, "about 0.1 s on an idle machine"


# -- 3. outputs follow the umask ------------------------------------------------------------------
@pytest.fixture(params=[0o022, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writes_keep_the_umask(tmp_path, mask):
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert _mode(tmp_path / "r.json") == 0o666 & ~mask
    (tmp_path / "plain.md").write_text("x")
    assert _mode(tmp_path / "r.json") == _mode(tmp_path / "plain.md"), "JSON results like every other file"
    with staged_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    assert _mode(tmp_path / "d") == 0o777 & ~mask


def test_an_exported_bundle_and_its_manifest_keep_the_umask(tmp_path, mask):
    from tlcut.toolchain.export import export

    onnx.save(graphs.residual(hw=9, c=4), tmp_path / "m.onnx")
    b = export(str(tmp_path / "m.onnx"), tmp_path / "b", progress=_quiet)
    assert _mode(b.path) == 0o777 & ~mask and _mode(b.path / "manifest.json") == 0o666 & ~mask
    from tlcut.toolchain.compile import compile_cuts

    compile_cuts(b, b.cuts[1:2])
    assert _mode(b.half_dir(b.cuts[1])) == 0o777 & ~mask
    assert json.loads((b.path / "manifest.json").read_text())["artifacts"]
    assert _mode(b.path / "manifest.json") == 0o666 & ~mask


# -- 4. library noise off unless -v; long steps show progress on stderr only ----------------------
def _tlcut(*argv):
    """`tlcut ARGV` as a user's shell starts it: no TF_CPP_MIN_LOG_LEVEL (the tests' conftest sets one)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "tlcut", *argv], capture_output=True, text=True, timeout=600, env=env)


def test_export_list_needs_no_tensorflow():
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("keras") is None:
        pytest.skip("Keras not installed")
    code = ("import sys; from tlcut.cli import main; main(['export', '--list']); "
            "print('tensorflow' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "DenseNet169" in r.stdout.split() and "TinyBranchNet" in r.stdout.split()
    assert r.stderr.strip() == "False", r.stderr


@pytest.mark.tf
def test_export_prints_only_its_own_lines(tmp_path):
    r = _tlcut("export", "TinyBranchNet", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    noise = [line for line in r.stderr.splitlines() if not line.startswith("[export]")]
    assert not noise, noise


class _Terminal:
    """A stderr that says it is a terminal, so tqdm draws its bars as it would for a user."""

    def __init__(self):
        import io

        self.buf = io.StringIO()

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_bench_shows_progress_on_stderr_and_says_what_the_check_means(bundle, capsys, monkeypatch):
    import sys

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    rc = main(["bench", str(bundle.path), "--role", "device", "--warmup", "1", "--iterations", "3", "--check", "1"])
    out = capsys.readouterr().out
    err = term.buf.getvalue()
    assert rc == 0 and json.loads(out)["role"] == "device", "stdout is the profile and nothing else"
    for step in ("whole model", "TL and wire", "check"):  # tqdm's bar: "DESC:  50%|#####     | 2/4 [...]"
        assert re.search(rf"{step}: +\d+%\|", err), (step, err[-2000:])
    line = next(x for x in err.splitlines() if "prefix sums vs real halves" in x)
    assert "the plan predicts" in line


def test_verbose_is_taken_before_or_after_the_verb(tmp_path):
    from tlcut.cli import build_parser

    p = build_parser()
    assert p.parse_args(["-v", "cuts", "B"]).verbose and p.parse_args(["cuts", "B", "-v"]).verbose
    assert not p.parse_args(["cuts", "B"]).verbose


def test_output_cut_short_by_head_is_no_traceback():
    """`tlcut export --list | head -1`: the reader is gone before tlcut writes."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "tlcut", "export", "--list"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141 and "Traceback" not in err, err


def test_a_folder_that_cannot_be_listed_is_one_error_line(tmp_path, capsys, monkeypatch):
    """As another user's 0700 folder is (root lists every folder, so the refusal is simulated)."""
    import pathlib

    d = tmp_path / "locked"
    d.mkdir()
    real = pathlib.Path.iterdir

    def iterdir(self):
        if self == d:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    line = _one_error(capsys, main(["cuts", str(d)]), "not a tlcut bundle", "cannot list")
    assert "--force" not in line


def test_retrain_force_refuses_a_folder_that_is_not_a_bundle_before_training(tmp_path):
    from tlcut.errors import TlcutError
    from tlcut.toolchain.train import retrain

    res = tmp_path / "results"
    res.mkdir()
    (res / "summary.md").write_text("mine")
    with pytest.raises(TlcutError, match="not a tlcut bundle"):
        retrain(str(tmp_path / "no-such.keras"), "1", res, force=True)
    with pytest.raises(TlcutError) as e:
        retrain(str(tmp_path / "no-such.keras"), "1", res)
    assert "pass --force" not in str(e.value)
    assert (res / "summary.md").read_text() == "mine"


# -- serve as the README writes it: the refusal names the loopback way to try it -------------
def test_serve_refused_on_any_address_names_the_loopback_bind(bundle, capsys):
    line = _one_error(capsys, main(["serve", str(bundle.path), "--cut", "1"]),
                      "refusing plain TCP on tcp://*:5555", "--bind tcp://127.0.0.1:5555",
                      "--key edge.key_secret --allow DIR", "--insecure")
    assert line.index("--bind tcp://127.0.0.1:5555") < line.index("--key")
    _one_error(capsys, main(["serve", str(bundle.path), "--cut", "1", "--bind", "tcp://0.0.0.0:6000"]),
               "--bind tcp://127.0.0.1:6000")


def test_the_c_edge_refuses_any_address_with_the_same_words():
    import subprocess
    from pathlib import Path

    edged = os.environ.get("TLCUT_EDGED")
    if not edged or not os.path.exists(edged):
        pytest.skip("TLCUT_EDGED is not set to a built tlcut-edged")
    data = Path(__file__).resolve().parents[1] / "runtime" / "c" / "tests" / "data" / "bundle"
    r = subprocess.run([edged, str(data), "--cut", "0"], capture_output=True, text=True, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.startswith("tlcut-edged: error:")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    for needle in ("refusing plain TCP on tcp://*:5555", "--bind tcp://127.0.0.1:5555",
                   "--key edge.key_secret --allow DIR", "--insecure"):
        assert needle in lines[0], (needle, lines[0])
    r = subprocess.run([edged, str(data), "--cut", "0", "--bind", "127.0.0.1:5555"], capture_output=True, text=True,
                       timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.startswith("tlcut-edged: error:")]
    assert r.returncode == 2 and len(lines) == 1 and "'127.0.0.1:5555' names no transport: write tcp://127.0.0.1:5555" \
        in lines[0] and "plain TCP" not in lines[0], r.stderr
    # with --insecure too: the same line, where it was a warning and "cannot listen on ...: Invalid argument"
    r = subprocess.run([edged, str(data), "--cut", "0", "--bind", "0.0.0.0:5555", "--insecure"], capture_output=True,
                       text=True, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.startswith("tlcut-edged: error:")]
    assert r.returncode == 2 and len(lines) == 1 and "'0.0.0.0:5555' names no transport: write tcp://0.0.0.0:5555" \
        in lines[0] and "WARNING" not in r.stderr, r.stderr


# -- an endpoint without its transport is called that, not a plain-TCP risk ------------------
@pytest.mark.parametrize("verb, ep, fix", [
    (["run", "{b}", "--cut", "1", "--edge", "127.0.0.1:5555"], "127.0.0.1:5555", "tcp://127.0.0.1:5555"),
    (["serve", "{b}", "--cut", "1", "--bind", "127.0.0.1:5555"], "127.0.0.1:5555", "tcp://127.0.0.1:5555"),
    (["serve", "{b}", "--cut", "1", "--bind", "5555"], "5555", "tcp://127.0.0.1:5555"),
    (["serve", "{b}", "--cut", "1", "--bind", "tcp://127.0.0.1:5599", "--forward", "cloud:5555", "--to", "2"],
     "cloud:5555", "tcp://cloud:5555")])
def test_an_endpoint_without_a_scheme_is_named_as_such(bundle, capsys, verb, ep, fix):
    argv = [a.replace("{b}", str(bundle.path)) for a in verb]
    line = _one_error(capsys, main(argv), f"'{ep}' names no transport", f"write {fix}")
    assert "plain TCP" not in line


# -- a dead edge is not a measurement: exit 3 and one loud line naming it -----------------------
def _free_endpoint():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def compiled(bundle):
    assert main(["compile", str(bundle.path), "--cuts", "1", "--tl", "off"]) == 0
    return Bundle.open(bundle.path)


_FAST = ["--tl", "off", "--timeout", "0.3", "--retries", "0", "--requests", "3", "--warmup", "1"]


@pytest.mark.parametrize("json_out", [False, True])
def test_a_run_that_never_reached_the_edge_fails_loudly(compiled, capsys, json_out):
    dead = _free_endpoint()
    code = main(["run", str(compiled.path), "--cut", "1", "--edge", dead, *_FAST, *(["--json"] if json_out else [])])
    out, err = capsys.readouterr()
    assert code == 3, err
    lines = [l for l in err.splitlines() if l.startswith("tlcut: error:")]
    assert len(lines) == 1 and f"no request reached the edge at {dead}" in lines[0] and "all 4 ran on this device" in lines[0]
    assert out.strip(), "the table (or JSON) is still printed: it is what the device alone measured"


def test_a_run_where_some_requests_fell_back_exits_0_and_counts_them(compiled, capsys):
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge

    edge = Edge(compiled, ["1"], tl="off")
    try:
        with serving(edge, max_requests=2) as ep:  # answers the first two, then is gone
            code = main(["run", str(compiled.path), "--cut", "1", "--edge", ep, *_FAST])
    finally:
        edge.close()
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "tlcut: error" not in err and f"tlcut: warning: 2 of 4 requests fell back to this device: the edge at {ep}" in err


def test_a_run_with_a_live_edge_says_nothing_of_fallback(compiled, capsys):
    from tlcut.runtime.edge import serving
    from tlcut.runtime.serve import Edge

    edge = Edge(compiled, ["1"], tl="off")
    try:
        with serving(edge) as ep:
            code = main(["run", str(compiled.path), "--cut", "1", "--edge", ep, *_FAST])
    finally:
        edge.close()
    _, err = capsys.readouterr()
    assert code == 0 and "fell back" not in err and "tlcut: error" not in err, err


def test_an_adaptive_run_against_a_dead_edge_exits_3(small_bundle, tmp_path, capsys):
    from tlcut.toolchain.bench import bench

    b = small_bundle(hw=16, tl="off")
    for role in ("device", "edge"):
        (tmp_path / f"{role}.json").write_text(json.dumps(bench(b, role=role, iterations=2, progress=_quiet)))
    assert main(["plan", "--device", str(tmp_path / "device.json"), "--edge", str(tmp_path / "edge.json"),
                 "--tl", "off", "-o", str(tmp_path / "plan.json")]) == 0
    dead = _free_endpoint()
    code = main(["run", str(b.path), "--adapt", str(tmp_path / "plan.json"), "--edge", dead, "--cut", "input",
                 "--timeout", "0.3", "--retries", "0", "--requests", "4", "--warmup", "0", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 3 and f"tlcut: error: no request reached the edge at {dead}" in err, err
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["requests"] == 4, "the run's record is still written"


def test_an_adaptive_run_that_never_reached_the_edge_fails_loudly():
    from tlcut.runtime.run import edge_verdict

    per = {"cut 1 + TL": {"offloaded": 0, "ran_here_instead": 5}, "device only": {"offloaded": 0, "ran_here_instead": 0}}
    code, line = edge_verdict({"per_placement": per, "probes": 0, "switches": []}, "tcp://192.0.2.1:5555")
    assert code == 3 and "no request reached the edge at tcp://192.0.2.1:5555" in line
    per["cut 1 + TL"]["offloaded"] = 1
    assert edge_verdict({"per_placement": per}, "tcp://e:1")[0] == 0
    per["cut 1 + TL"].update(offloaded=0, ran_here_instead=0)
    assert edge_verdict({"per_placement": per}, "tcp://e:1") == (0, None), "all on the device by choice"


# -- a demo of a model that cannot be exported: one line, nothing made ---------------------------
@pytest.mark.parametrize("model, says", [("NoSuchNet", "unknown architecture 'NoSuchNet'"),
                                         ("densenet16", "did you mean DenseNet169"),
                                         ("nofile.onnx", "model file 'nofile.onnx' does not exist")])
def test_a_demo_of_an_unknown_model_is_one_line_and_makes_nothing(tmp_path, capfd, model, says):
    out = tmp_path / "demo"
    code = main(["demo", model, "-o", str(out), "--emulation", "loopback"])
    _, err = capfd.readouterr()
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tlcut: error: ") and says in lines[0], err
    assert not out.exists()
