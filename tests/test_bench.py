"""bench on a small ONNX model: every cut measured, and its prefix-sum estimates set against the
real halves timed here, each its own ONNX Runtime session."""

import time

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


def test_stats_are_in_milliseconds():
    s = bench.stats([0.001, 0.002, 0.003])
    assert s["median"] == pytest.approx(2.0) and s["min"] == pytest.approx(1.0) and s["n"] == 3
