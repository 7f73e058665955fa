"""bench on a small ONNX model: every cut measured, and its prefix-sum estimates set against the
real halves timed here, each its own ONNX Runtime session."""

import time

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tlcut.toolchain import bench, surgery


@pytest.fixture(scope="module")
def branchy(small_bundle):
    return small_bundle("branches", tl=None, hw=48, c=16)


def test_profile_covers_every_cut_with_every_component(branchy):
    p = bench.bench(branchy, role="device", warmup=1, iterations=5, check=2, progress=lambda *_: None)
    assert p["format"] == "tlcut-profile" and p["role"] == "device"
    assert p["model_sha256"] == branchy.model_sha256
    assert [c["index"] for c in p["cuts"]] == [c.index for c in branchy.cuts]
    for c, cut in zip(p["cuts"], branchy.cuts):
        assert c["bytes"] == cut.bytes and c["tl_bytes"] == cut.tl_bytes
        for k in ("head", "tail", "serialize", "deserialize"):
            s = c[k]
            assert s["n"] == 5 or k in ("serialize", "deserialize")
            assert 0 <= s["min"] <= s["median"] <= s["p90"] <= s["p99"] <= s["max"]
        assert ("device_tl" in c) == cut.tl and ("edge_tl" in c) == cut.tl
        # what each wire encoding sends and costs, plain and through the TL
        assert c["encodings"]["float16"]["bytes"] == cut.bytes // 2 and c["encodings"]["int8"]["bytes"] == cut.bytes // 4
        assert c["encodings"]["int8"]["serialize"]["median"] > 0
        assert ("encodings_tl" in c) == cut.tl
    assert [x["index"] for x in p["check"]["cuts"]] == [c.index for c in branchy.cuts]
    assert p["machine"]["onnxruntime"] and p["settings"]["iterations"] == 5


def _real_head_shares(bundle, rounds=15):
    """Each cut's head as a share of head + tail, both timed here as separate ONNX Runtime sessions
    (one thread, medians of interleaved runs): the same moments of a busy machine hit both alike."""
    model = onnx.load(str(bundle.model_path))
    feed = bench.random_feed(bundle.inputs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    shares = {}
    for c in bundle.cuts:
        head = ort.InferenceSession(surgery.head(model, c).SerializeToString(), so, providers=["CPUExecutionProvider"])
        tail = ort.InferenceSession(surgery.tail(model, c).SerializeToString(), so, providers=["CPUExecutionProvider"])
        mid = {c.tensor: head.run(None, feed)[0]}
        tail.run(None, mid)
        h, t = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            head.run(None, feed)
            t1 = time.perf_counter()
            tail.run(None, mid)
            h.append(t1 - t0)
            t.append(time.perf_counter() - t1)
        shares[c.index] = float(np.median(h) / (np.median(h) + np.median(t)))
    return shares


def test_prefix_sums_split_the_run_as_the_real_halves_do(branchy):
    """Where bench puts each cut (its head's share of the run) agrees with the real halves to within
    0.3: the branches graph's cuts sit near 0.1 and 0.5 of it, so a wrong node attribution fails."""
    real = _real_head_shares(branchy)
    assert max(real.values()) - min(real.values()) > 0.25, f"the cuts do not split the run apart: {real}"
    p = bench.bench(branchy, role="device", warmup=1, iterations=7, threads=1, check=0, progress=lambda *_: None)
    for c in p["cuts"]:
        est = c["head"]["median"] / (c["head"]["median"] + c["tail"]["median"])
        assert abs(est - real[c["index"]]) < 0.3, (c["index"], est, real)


def test_bad_settings_are_refused(branchy):
    from tlcut.errors import TlcutError

    with pytest.raises(TlcutError, match="iterations"):
        bench.bench(branchy, role="device", iterations=0, progress=lambda *_: None)
    with pytest.raises(TlcutError, match="role"):
        bench.bench(branchy, role="cloud", progress=lambda *_: None)
    with pytest.raises(TlcutError, match="idle-ms"):
        bench.bench(branchy, role="device", idle_ms=-1, progress=lambda *_: None)


def test_timed_runs_follow_an_idle_gap_that_is_not_timed():
    """A served engine idles between requests, so each timed run comes after the runner's idle_s
    of sleep; the sleep itself is never in a recorded time."""
    calls = []

    class Runner:
        idle_s = 0.05

        def infer(self, feed, check=True):
            calls.append(time.perf_counter())

    t0 = time.perf_counter()
    ts = bench.time_runner(Runner(), {}, warmup=1, iterations=4)
    assert time.perf_counter() - t0 >= 4 * 0.05
    assert len(ts) == 4 and max(ts) < 0.05
    assert min(b - a for a, b in zip(calls[1:], calls[2:])) >= 0.05  # timed runs are spaced by the gap
    Runner.idle_s = 0.0
    t0 = time.perf_counter()
    bench.time_runner(Runner(), {}, warmup=0, iterations=4)
    assert time.perf_counter() - t0 < 0.05


def test_the_idle_gap_is_recorded_in_the_profile(branchy):
    p = bench.bench(branchy, role="edge", warmup=1, iterations=3, check=0, idle_ms=5, progress=lambda *_: None)
    assert p["settings"]["idle_ms"] == 5
    # by default the edge idles between requests and the device (device only runs back to back) does not
    edge = bench.bench(branchy, role="edge", warmup=1, iterations=3, check=0, progress=lambda *_: None)
    dev = bench.bench(branchy, role="device", warmup=1, iterations=3, check=0, progress=lambda *_: None)
    assert (edge["settings"]["idle_ms"], dev["settings"]["idle_ms"]) == (30.0, 0.0)
    # a real head runs once per request, after a wait, in either role; a given gap holds for all
    assert (edge["settings"]["head_idle_ms"], dev["settings"]["head_idle_ms"], p["settings"]["head_idle_ms"]) == (30.0, 30.0, 5)


def test_device_heads_are_timed_after_the_gap_and_the_whole_model_back_to_back(int8_bundle, monkeypatch):
    """Under a CPU quota a head, which runs after the request's wait, meets a refilled quota; device
    only runs back to back. The int8 configuration times real halves: each head after the gap."""
    seen = []
    real = bench.time_runner

    def spy(runner, feed, warmup, iterations):
        seen.append((sorted(feed), runner.idle_s))
        return real(runner, feed, warmup, iterations)

    monkeypatch.setattr(bench, "time_runner", spy)
    p = bench.bench(int8_bundle, role="device", precision="int8", warmup=0, iterations=2, check=0,
                    progress=lambda *_: None)
    inp = sorted(i["name"] for i in int8_bundle.inputs)
    from_input = [idle for feed, idle in seen if feed == inp]
    # the whole model first, back to back; then each cut's head and TL head after the gap
    assert from_input[0] == 0.0 and len(from_input) == 1 + 2 * 2 and set(from_input[1:]) == {bench.HEAD_IDLE_MS / 1e3}
    assert all(idle == 0.0 for feed, idle in seen if feed != inp)  # tails: the edge's part, not timed here as served
    assert p["settings"]["head_idle_ms"] == bench.HEAD_IDLE_MS


def test_stats_are_in_milliseconds():
    s = bench.stats([0.001, 0.002, 0.003])
    assert s["median"] == pytest.approx(2.0) and s["min"] == pytest.approx(1.0) and s["n"] == 3


# -- engine configurations: one bench, each configuration the bundle and the machine can run -------

@pytest.fixture(scope="module")
def int8_bundle():
    """A small classifier compiled at float32 and, at cuts 2 and 4 and as a whole, at int8 (QDQ halves
    with and without the TL: scripts/make_c_test_bundle.py)."""
    from pathlib import Path

    from tlcut.bundle import Bundle

    return Bundle.open(Path(__file__).resolve().parents[1] / "runtime" / "c" / "tests" / "data" / "bundle_int8")


def test_every_configuration_in_one_profile_int8_at_its_compiled_cuts(int8_bundle, tmp_path):
    from tlcut.deployment import Engine
    from tlcut.runtime import backends
    from tlcut.toolchain import bench_configs
    from tlcut.toolchain.profile import Profile

    b = int8_bundle
    assert bench_configs.bundle_precisions(b) == ["float32", "int8"]
    said = []
    found = bench_configs.select(b, None, [1], progress=said.append)
    assert Engine(backends.ONNXRT, "int8", 1) in found and Engine(backends.ONNXRT, "float32", 1) in found
    assert all(e.backend in backends.names() for e in found)
    engines = bench_configs.select(b, f"{backends.ONNXRT}", [1])
    assert engines == [Engine(backends.ONNXRT, "float32", 1), Engine(backends.ONNXRT, "int8", 1)]
    prof = bench_configs.bench_engines(b, engines, role="device", warmup=1, iterations=3, check=1,
                                       progress=said.append)
    f32, i8 = prof.configs
    assert [c["index"] for c in f32.figures["cuts"]] == [c.index for c in b.cuts]
    # int8: only the compiled cut, with its TL, from the real halves; the whole int8 model too
    assert [c["index"] for c in i8.figures["cuts"]] == [2, 4] and i8.cuts[2]["tl"] and "device_tl" in i8.cuts[2]
    assert i8.full["n"] == 3 and i8.figures["settings"]["method"].startswith("real int8 halves")
    # what crosses the link costs the same whatever computed it: measured once
    assert i8.cuts[2]["encodings"] is f32.cuts[2]["encodings"] and i8.figures["input"] is f32.figures["input"]
    assert any("2 configurations in" in s for s in said) and any("configuration 2/2" in s for s in said)
    prof.save(tmp_path / "p.json")
    back = Profile.load(tmp_path / "p.json", "device")
    assert back.engines == engines and back.to_json() == json.loads(json.dumps(prof.to_json()))
    assert back.default.engine == engines[0] and back["machine"]["onnxruntime"]


def test_unknown_or_missing_engines_are_one_line_errors(int8_bundle, small_bundle, capsys):
    from tlcut import cli
    from tlcut.errors import TlcutError
    from tlcut.toolchain import bench_configs

    code = cli.main(["bench", str(int8_bundle.path), "--role", "device", "--engines", "nope:float32"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "unknown engine 'nope:float32'" in err
    with pytest.raises(TlcutError, match="unknown precision 'float64'"):
        bench_configs.select(int8_bundle, "onnxrt:float64", [None])
    plain = small_bundle(hw=8, tl="off")
    with pytest.raises(TlcutError, match="has no int8 halves.*--precision int8"):
        bench_configs.select(plain, "onnxrt:int8", [None])
    with pytest.raises(TlcutError, match="--thread-counts"):
        bench_configs.parse_threads("1,x", None)
