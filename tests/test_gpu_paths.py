"""The GPU paths, as far as a CPU machine can test them (docs/gpu.md says what has run where).

ONNX Runtime's provider choice and its fallback (a real inference through it, equal to plain CPU);
the TensorRT backend's pure decisions (engine key, rebuild-or-load, builder flags, cache paths)
and its one-line error where TensorRT is absent; the Jetson folder (contents, a valid bundle that
`tlcut run` uses against a local edge, its build script's trtexec command lines for TensorRT 10
and 11 against tests/expected/, and a full run of that script against a stand-in trtexec); and
scripts/gpu-check.sh (syntax, its refusal without a GPU, and its CPU self-test end to end).
Tests that need an NVIDIA GPU are marked ``gpu`` and skipped here.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tlcut import cli
from tlcut import bundle as bundle_paths
from tlcut.bundle import Bundle, sha256_file
from tlcut.errors import TlcutError
from tlcut.models import graphs
from tlcut.runtime import backends
from tlcut.runtime.backends import onnxrt, tensorrt
from tlcut.runtime.run import Device
from tlcut.runtime.serve import local_edge
from tlcut.toolchain.compile import compile_cuts

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = Path(__file__).resolve().parent / "expected"
GPU_SKIP = "no NVIDIA GPU/TensorRT on this machine; run scripts/gpu-check.sh where there is one"
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def one_line_error(code, err, *needles):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.startswith("tlcut: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def work(small_bundle, tmp_path_factory):
    """A residual graph's bundle, cut 0 compiled at float32 and int8, and its Jetson folder."""
    root = tmp_path_factory.mktemp("gpu")
    b = small_bundle(hw=16, input_layout="NCHW")
    onnx.save(graphs.residual(hw=16, c=4), root / "r.onnx")  # the model gpu-check.sh exports itself
    calib = root / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    compile_cuts(b, [b.cuts[0]], tl="both", precision="int8", calib=str(calib), calib_count=8)
    subprocess.run([sys.executable, "-m", "tlcut", "keys", "-o", str(root / "keys"), "edge", "device1"],
                   check=True, capture_output=True)
    b = Bundle.open(b.path)
    assert cli.main(["compile", str(b.path), "--target", "jetson", "--cut", "0", "-o", str(root / "jetson"),
                     "--edge-endpoint", "tcp://192.0.2.2:5555", "--edge-key", str(root / "keys" / "edge.key")]) == 0
    return {"root": root, "bundle": b, "jetson": root / "jetson", "calib": calib}


# -- ONNX Runtime providers -----------------------------------------------------------------------
def test_provider_list_for_each_choice(tmp_path):
    assert onnxrt.provider_list("cpu") == [(CPU, {})]
    assert onnxrt.provider_list("cuda") == [(CUDA, {}), (CPU, {})]
    trt = onnxrt.provider_list("tensorrt", {"int8"}, tmp_path / "c")
    assert [p for p, _ in trt] == [TRT, CUDA, CPU]
    assert trt[0][1] == {"trt_fp16_enable": "False", "trt_int8_enable": "True", "trt_engine_cache_enable": "True",
                         "trt_engine_cache_path": str(tmp_path / "c"), "trt_timing_cache_enable": "True",
                         "trt_timing_cache_path": str(tmp_path / "c")}
    assert onnxrt.provider_list("tensorrt", {"float16"})[0][1] == {"trt_fp16_enable": "True",
                                                                   "trt_int8_enable": "False"}
    half = Path("/b/halves/3")
    assert onnxrt.trt_cache_dir(half / "onnxrt" / "head.onnx") == onnxrt.trt_cache_dir(half / "head.onnx") \
        == half / "onnxrt-trt-cache"
    assert onnxrt.trt_cache_dir(b"graph") is None


def test_fallback_when_gpu_providers_are_absent():
    kept, warning = onnxrt.select_providers("tensorrt", [CPU])
    assert kept == [(CPU, {})]
    assert "--providers tensorrt" in warning and TRT in warning and CPU in warning
    assert "pip install onnxruntime-gpu" in warning and "\n" not in warning
    kept, warning = onnxrt.select_providers("tensorrt", [CUDA, CPU])
    assert [p for p, _ in kept] == [CUDA, CPU] and f"running on {CUDA}" in warning
    kept, warning = onnxrt.select_providers("cuda", [TRT, CUDA, CPU])
    assert [p for p, _ in kept] == [CUDA, CPU] and warning is None


@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_inference_through_the_fallback_matches_plain_cpu(work, capsys, monkeypatch, choice):
    import onnxruntime as ort

    if onnxrt.EP_NAMES[choice] in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {onnxrt.EP_NAMES[choice]}: no fallback to test")
    monkeypatch.setattr(onnxrt, "_warned", set())
    b = work["bundle"]
    be = backends.get("onnxrt", providers=choice)
    assert be.name == f"onnxrt-{choice}" and not be.builds, "a GPU session runs the portable ONNX"
    x = np.random.default_rng(5).random(b.inputs[0]["shape"]).astype(np.float32)
    with local_edge(b, ["0"]) as ep:
        with Device(b, "0", tl=True, edge=ep) as cpu_dev:
            want = cpu_dev.infer(x)[0]
        capsys.readouterr()
        with Device(b, "0", tl=True, edge=ep, backend=be) as gpu_dev:
            got, got2 = gpu_dev.infer(x)[0], gpu_dev.infer(x)[0]
    assert np.array_equal(got, want) and np.array_equal(got2, want)
    with be.runner(b.path / b.find("head", 0, True).file) as r:  # a second half: the warning is not repeated
        r.infer({b.inputs[0]["name"]: x})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlcut: warning: --providers " + choice), err
    assert not (b.half_dir(b.cuts[0]) / bundle_paths.ORT_TRT_CACHE).exists(), "no TensorRT cache without the TensorRT EP"


def test_providers_flag_needs_the_onnxrt_backend(work, capsys):
    code = cli.main(["run", str(work["bundle"].path), "--cut", "0", "--edge", "tcp://127.0.0.1:9",
                     "--backend", "openvino", "--providers", "cuda"])
    one_line_error(code, capsys.readouterr().err, "--providers", "--backend onnxrt")


def test_each_backend_parses_its_own_flags(work, capsys, monkeypatch):
    """--providers is ONNX Runtime's and --hint OpenVINO's: each backend class adds and parses its
    own flag, and BackendArgs only loops over the registry."""
    from tlcut.cli.args import BackendArgs

    seen = []
    for name in backends.names():
        cls = backends.backend_class(name)
        parse = cls.options_from_args.__func__
        monkeypatch.setattr(cls, "options_from_args",
                            classmethod(lambda c, a, chosen, parse=parse: seen.append(c.name) or parse(c, a, chosen)))
    import argparse

    be = BackendArgs()
    p = argparse.ArgumentParser()
    be.add_to(p)
    be.parse(p.parse_args(["--backend", "onnxrt", "--providers", "cuda", "--hint", "throughput"]))
    assert seen == backends.names(), "every backend parses its own flags"
    assert be.backend.providers == "cuda" and be.backend.name == "onnxrt-cuda"
    assert not be.is_default and be.flags == "--backend/--providers"
    be.parse(p.parse_args(["--backend", "openvino", "--hint", "throughput"]))
    assert be.backend.hint == "throughput" and not hasattr(be.backend, "providers")
    be.parse(p.parse_args([]))
    assert be.is_default and be.backend.name == backends.DEFAULT
    assert backends.backend_class(backends.OPENVINO).options_from_args(
        argparse.Namespace(hint="throughput"), backends.ONNXRT) == {"hint": "throughput"}
    assert backends.backend_class(backends.TENSORRT).add_args(p) == []


def test_backend_names_come_from_the_registry(capsys):
    for name in backends.names():
        assert backends.backend_class(name).name == name
    with pytest.raises(TlcutError) as e:
        backends.get("nope")
    assert str(e.value) == "unknown backend 'nope'; available: onnxrt, openvino, tensorrt"
    with pytest.raises(SystemExit) as e:  # the CLI's choices are the registry's names
        cli.main(["bench", "/nonexistent", "--backend", "nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'nope'" in err and "'tensorrt'" in err and "Traceback" not in err


def test_qdq_int8_halves_load_in_onnx_runtime(work):
    import onnxruntime as ort

    head = work["jetson"] / Bundle.open(work["jetson"]).find("head", 0, True, precision="int8").file
    assert onnxrt.precision_needs(onnx.load(str(head))) == {"int8"}
    assert ort.InferenceSession(str(head), providers=[CPU]).get_inputs()[0].name == "x"


def test_precision_needs_reads_the_graph(work):
    j = Bundle.open(work["jetson"])
    needs = {p: onnxrt.precision_needs(onnx.load(str(j.path / j.find("head", 0, True, precision=p).file)))
             for p in ("float32", "float16", "int8")}
    assert needs == {"float32": set(), "float16": {"float16"}, "int8": {"int8"}}


# -- TensorRT backend: pure decisions ---------------------------------------------------------------
def test_engine_key():
    assert tensorrt.engine_key("10.3.0.30", "Orin", (8, 7)) == "trt10.3.0_orin_sm87"
    assert tensorrt.engine_key("11.0", "NVIDIA H100 80GB HBM3", "9.0") == "trt11.0.0_nvidia-h100-80gb-hbm3_sm90"
    assert tensorrt.engine_key("10.3.0", " (nvgpu) ", (8, 7)) == "trt10.3.0_nvgpu_sm87"
    assert tensorrt.engine_key("10.3.0", "", (8, 7)) == "trt10.3.0_gpu_sm87"
    assert len({tensorrt.engine_key(v, g, c) for v, g, c in
                [("10.3.0", "Orin", (8, 7)), ("10.4.0", "Orin", (8, 7)), ("10.3.0", "Thor", (8, 7)),
                 ("10.3.0", "Orin", (8, 6))]}) == 4, "any difference is another key"
    with pytest.raises(ValueError):
        tensorrt.version3("v10")


def test_rebuild_on_mismatch_never_load():
    key = tensorrt.engine_key("10.3.0", "Orin", (8, 7))
    meta = {"key": key, "onnx_sha256": "aa"}
    assert tensorrt.needs_rebuild(meta, key, "aa") is None
    assert tensorrt.needs_rebuild(meta, key, None) is None, "the ONNX is not at hand: the key decides"
    assert "another version of its ONNX" in tensorrt.needs_rebuild(meta, key, "bb")
    other = tensorrt.engine_key("10.3.0", "NVIDIA GeForce RTX 4090", (8, 9))
    assert f"was built for {key}, this machine is {other}" == tensorrt.needs_rebuild(meta, other, "aa")
    assert tensorrt.needs_rebuild(None, key, "aa") == "has no build record"
    assert tensorrt.needs_rebuild({}, key, "aa") == "has no build record"


def test_builder_flags_follow_the_onnx_and_the_version():
    assert tensorrt.builder_flags(set(), 10) == []
    assert tensorrt.builder_flags({"float16"}, 10) == ["FP16"]
    assert tensorrt.builder_flags({"int8"}, 10) == ["INT8"]
    assert tensorrt.builder_flags({"float16", "int8"}, 10) == ["FP16", "INT8"]
    assert all(tensorrt.builder_flags(n, 11) == [] for n in (set(), {"float16"}, {"int8"})), "strongly typed"


def test_engine_cache_paths():
    key = "trt10.3.0_orin_sm87"
    assert tensorrt.engine_cache_path("/b/halves/3/head_tl.int8.onnx", key) == \
        Path("/b/halves/3/tensorrt") / key / "head_tl.int8.engine"
    assert bundle_paths.timing_cache_file("/b/halves/3/tensorrt", key) == \
        Path(f"/b/halves/3/tensorrt/timing-{key}.cache")
    assert bundle_paths.build_record("/x/head.engine") == Path("/x/head.engine.json")
    for built in ("/b/halves/3/tensorrt/head.engine", f"/b/halves/3/tensorrt/{key}/head.engine"):
        assert bundle_paths.engine_dir_of(built, backends.TENSORRT) == Path("/b/halves/3/tensorrt"), built


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_absent_is_a_one_line_error(work, capsys):
    b = work["bundle"]
    before = (b.path / "manifest.json").read_text()
    code = cli.main(["compile", str(b.path), "--cuts", "1", "--backend", "tensorrt"])
    one_line_error(code, capsys.readouterr().err, "TensorRT", "not installed", "pip install 'tlcut[tensorrt]'",
                   "built on the machine that runs them")
    assert (b.path / "manifest.json").read_text() == before
    assert not list(b.path.glob("**/tensorrt")) and not list(b.path.glob("**/*.tmp-*"))


def test_help_imports_no_gpu_library():
    code = ("import sys; from tlcut import cli; cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'onnxruntime', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None,
                    reason=GPU_SKIP)
def test_tensorrt_engine_matches_onnx_runtime_on_the_gpu(work):
    b = work["bundle"]
    path = b.path / b.find("head", 0, True).file
    x = np.random.default_rng(1).random(b.inputs[0]["shape"]).astype(np.float32)
    with backends.get("onnxrt").runner(path) as r:
        want = next(iter(r.infer({"x": x}).values()))
    for graph in (False, True):
        with backends.get("tensorrt", cuda_graph=graph).runner(path) as r:
            got = next(iter(r.infer({"x": x}).values()))
        diff = np.abs(got - want)
        assert not ((diff > 1e-4) & (diff > 1e-4 * np.abs(want))).any()


# -- the Jetson folder ------------------------------------------------------------------------------
def test_jetson_folder_holds_what_the_device_needs(work):
    j, src = work["jetson"], work["bundle"]
    files = sorted(str(p.relative_to(j)) for p in j.rglob("*") if p.is_file())
    assert files == ["README.md", "build_engine.sh", "edge.key", "halves/0/head_tl.float16.onnx",
                     "halves/0/head_tl.int8.onnx", "halves/0/head_tl.onnx", "manifest.json", "model.onnx",
                     "payload.json"]
    assert not list(j.parent.glob("jetson.tmp-*")), "written aside and renamed into place"
    b = Bundle.open(j)
    assert b.manifest["format"] == "tlcut-bundle" and b.manifest["version"] == 2
    assert b.cuts == src.cuts and b.inputs == src.inputs and b.outputs == src.outputs
    assert b.model_sha256 == src.model_sha256 == sha256_file(j / "model.onnx")
    assert sorted((a.kind, a.precision) for a in b.artifacts) == [
        ("head", "float16"), ("head", "float32"), ("head", "int8"), ("model", "float32")]
    assert all(a.tl for a in b.artifacts if a.kind == "head") and not any(a.kind == "tail" for a in b.artifacts)
    assert b.find("head", 0, True, precision="int8").calibration["count"] == 8
    assert (j / "edge.key").read_bytes() == (work["root"] / "keys" / "edge.key").read_bytes()
    c = json.loads((j / "payload.json").read_text())
    assert c["cut"] == 0 and c["tl"] is True and c["cut_tensor"] == src.cuts[0].tensor
    assert c["payload"] == {"name": b.find("head", 0, True).output["name"], "dtype": "float32", "shape": [1, 4, 8, 8],
                            "layout": "NCHW", "bytes": 1024}
    assert c["wire"]["version"] == 1 and c["wire"]["cut_id"] == 0 and c["wire"]["flags"] == 1
    assert c["wire"]["payload_bytes_by_encoding"] == {"raw": 1024, "float16": 512, "int8": 256}
    assert c["edge"]["endpoint"] == "tcp://192.0.2.2:5555" and c["edge"]["curve"] and "--tl on" in c["edge"]["command"]
    readme = (j / "README.md").read_text()
    for needle in ("bash build_engine.sh", "DRY_RUN=1", "tlcut run . --cut 0 --tl on --edge tcp://192.0.2.2:5555",
                   "--edge-key edge.key", "built here", "x86"):
        assert needle in readme, needle
    assert os.access(j / "build_engine.sh", os.X_OK)


def test_tlcut_run_uses_the_jetson_folder_as_it_is(work, capsys):
    src, j = work["bundle"], Bundle.open(work["jetson"])
    x = np.random.default_rng(2).random(src.inputs[0]["shape"]).astype(np.float32)
    with local_edge(src, ["0"]) as ep:
        code = cli.main(["run", str(j.path), "--cut", "0", "--edge", ep, "--requests", "3", "--warmup", "1", "--json"])
        out = capsys.readouterr().out
        assert code == 0 and json.loads(out)["summary"]["counts"]["offloaded"] == 4
        with Device(j, "0", tl=True, edge=ep) as dev, Device(src, "0", tl=True, edge=ep) as ref:
            assert np.array_equal(dev.infer(x)[0], ref.infer(x)[0])
    with local_edge(src, ["0"], precision="int8") as ep, \
            Device(j, "0", tl=True, edge=ep, precision="int8") as dev, \
            Device(src, "0", tl=True, edge=ep, precision="int8") as ref:
        assert np.array_equal(dev.infer(x)[0], ref.infer(x)[0])


@pytest.mark.parametrize("args, needles", [
    (["--target", "jetson", "--cut", "0"], ["needs -o DIR"]),
    (["--target", "jetson", "--cuts", "0", "-o", "{tmp}/d"], ["--cut K, not --cuts"]),
    (["--target", "jetson", "--cut", "1", "-o", "{tmp}/d", "--precision", "int8"], ["compile int8 first"]),
    (["--target", "jetson", "--cut", "0", "-o", "{tmp}/d", "--edge-endpoint", "192.0.2.2:5555"], ["tcp://HOST:PORT"]),
    (["--target", "jetson", "--cut", "0", "-o", "{tmp}/d", "--edge-key", "{keys}/edge.key_secret"], ["secret"]),
    (["--target", "jetson", "--cut", "0", "-o", "{jetson}"], ["already exists", "--force"]),
    (["--cuts", "0", "-o", "{tmp}/d"], ["belongs to --target"]),
    (["--target", "jetson", "--cut", "0", "-o", "{tmp}/d", "--providers", "cuda"], ["drop --backend/--providers"]),
    (["--target", "jetson", "--cut", "0", "-o", "{tmp}/d", "--backend", "openvino"], ["drop --backend/--providers"]),
])
def test_jetson_folder_mistakes_are_one_line_errors(work, tmp_path, capsys, args, needles):
    fill = {"tmp": tmp_path, "keys": work["root"] / "keys", "jetson": work["jetson"]}
    code = cli.main(["compile", str(work["bundle"].path)] + [a.format(**fill) for a in args])
    one_line_error(code, capsys.readouterr().err, *needles)
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob("d.tmp-*"))


def test_jetson_folder_needs_the_cut_compiled(small_bundle, tmp_path, capsys):
    b = small_bundle("chain", tl=None, input_layout="NCHW")
    code = cli.main(["compile", str(b.path), "--target", "jetson", "--cut", "0", "--tl", "off",
                     "-o", str(tmp_path / "d")])
    one_line_error(code, capsys.readouterr().err, "no head of cut 0", f"tlcut compile {b.path} --cuts 0 --tl off")
    assert not (tmp_path / "d").exists()


def _build_script(work, tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("TRT_VERSION", "GPU_NAME", "GPU_CC", "JETPACK", "TRTEXEC")}
    e.update(env)
    return subprocess.run(["bash", str(work["jetson"] / "build_engine.sh")], capture_output=True, text=True, env=e)


@pytest.mark.parametrize("major, env", [
    ("10", {"TRT_VERSION": "10.3.0.30", "GPU_NAME": "Orin", "GPU_CC": "8.7", "JETPACK": "6.1"}),
    ("11", {"TRT_VERSION": "11.0.0", "GPU_NAME": "NVIDIA Thor", "GPU_CC": "11.0", "JETPACK": "7.0"}),
])
def test_build_script_trtexec_commands_match_the_recorded_expectation(work, tmp_path, major, env):
    r = _build_script(work, tmp_path, DRY_RUN="1", TIME="1", **env)
    assert r.returncode == 0, r.stderr
    want = (EXPECTED / f"jetson_build_engine_trt{major}.txt").read_text()
    assert r.stdout == want, f"build_engine.sh's commands changed; if on purpose, update {EXPECTED}"
    key = tensorrt.engine_key(env["TRT_VERSION"], env["GPU_NAME"], env["GPU_CC"])
    assert f"/tensorrt/{key}/" in r.stdout, "the script and the runtime file engines under the same key"


def test_build_script_refuses_what_it_cannot_do(work, tmp_path):
    r = _build_script(work, tmp_path, DRY_RUN="1", TRT_VERSION="8.5.2", GPU_NAME="Xavier", GPU_CC="7.2")
    assert r.returncode == 2 and "TensorRT 8.5.2" in r.stderr and "JetPack" in r.stderr
    r = _build_script(work, tmp_path, PATH="/usr/bin:/bin", GPU_NAME="Orin", GPU_CC="8.7")
    if not Path("/usr/src/tensorrt/bin/trtexec").exists():
        assert r.returncode == 2 and r.stderr.strip().startswith("build_engine.sh: error: trtexec not found")


def test_build_script_builds_and_records_with_a_stand_in_trtexec(work, tmp_path):
    """A full, non-dry run of build_engine.sh against a fake trtexec (this machine has none): the
    version comes from trtexec's banner, each engine gets a record tlcut's runtime accepts."""
    j = tmp_path / "jetson"
    shutil.copytree(work["jetson"], j)
    fake = tmp_path / "trtexec"
    fake.write_text("#!/usr/bin/env bash\n"
                    "for a in \"$@\"; do case $a in\n"
                    "  --version|--help) echo \"&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $a\";"
                    " exit 0;;\n"
                    "  --saveEngine=*) out=${a#--saveEngine=};;\n"
                    "esac; done\n"
                    "echo \"$*\" >> \"$(dirname \"$0\")/calls.txt\"; printf 'engine' > \"$out\"\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRT_VERSION", "DRY_RUN")}
    env.update(TRTEXEC=str(fake), GPU_NAME="NVIDIA Jetson AGX Orin (nvgpu)", GPU_CC="8.7", JETPACK="6.1")
    r = subprocess.run(["bash", str(j / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    key = tensorrt.engine_key("10.3.0", "NVIDIA Jetson AGX Orin (nvgpu)", (8, 7))
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 4 and "--noTF32" in calls[0] and "--fp16" in calls[1] and "--int8" in calls[2]
    assert "--onnx=model.onnx" in calls[3], "the whole model too: the device's fallback"
    for folder, stem in [("halves/0", "head_tl"), ("halves/0", "head_tl.float16"), ("halves/0", "head_tl.int8"),
                         (".", "model")]:
        engine = j / folder / "tensorrt" / key / f"{stem}.engine"
        meta = tensorrt.read_meta(engine)
        assert engine.read_bytes() == b"engine" and meta["builder"] == "trtexec"
        src = (engine.parent / meta["onnx"]).resolve()
        assert src == (j / folder / f"{stem}.onnx").resolve()
        assert tensorrt.needs_rebuild(meta, key, sha256_file(src)) is None, "the runtime would load it"
        assert tensorrt.needs_rebuild(meta, tensorrt.engine_key("10.4.0", "Orin", (8, 7)), None), "and no other"
        assert tensorrt.engine_cache_path(src, key) == engine, "where the runtime looks for it"
    assert not list(j.rglob("*.tmp"))


def test_scripts_parse():
    for script in (ROOT / "scripts" / "gpu-check.sh", ROOT / "scripts" / "build-c.sh"):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script


def test_generated_build_script_parses(work):
    assert subprocess.run(["bash", "-n", str(work["jetson"] / "build_engine.sh")]).returncode == 0


# -- scripts/gpu-check.sh ---------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or Path("/etc/nv_tegra_release").exists(),
                    reason="this machine has an NVIDIA GPU")
def test_gpu_check_says_clearly_that_there_is_no_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_CPU_SELFTEST"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path / "w")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()], "one line"
    assert r.stderr.startswith("gpu-check: error: no NVIDIA GPU here") and not (tmp_path / "w").exists()


def test_gpu_check_cpu_self_test_runs_the_whole_script(work, tmp_path):
    """The check's own code, end to end, with ONNX Runtime's CPU standing in for the GPU engines."""
    env = dict(os.environ, GPU_CHECK_CPU_SELFTEST="1", MODEL=str(work["root"] / "r.onnx"),
               EXPORT_ARGS="--input-layout NCHW", CUTS="0,1", CALIB=str(work["calib"]), CALIB_COUNT="8",
               SAMPLES="3", ITERATIONS="3", WARMUP="1", RESULTS=str(tmp_path / "res"))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), str(tmp_path / "w")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["mode"].startswith("cpu-selftest") and res["pass"] is True
    assert {(h["cut"], h["half"], h["precision"]) for h in res["halves"]} == {
        (k, half, p) for k in (0, 1) for half in ("head", "tail") for p in ("float32", "float16", "int8")}
    assert all(h["timing"]["with_copies_ms"]["n"] == 3 for h in res["halves"])
    assert {e["precision"] for e in res["head_then_tail"]} == {"float32", "float16", "int8"}
    assert "NOT a GPU measurement" in (tmp_path / "res.md").read_text()
