"""bench on a small ONNX model: every cut measured, prefix sums consistent, checked against real halves."""

import numpy as np
import onnx
import pytest

from tlcut.models import graphs
from tlcut.toolchain import bench
from tlcut.toolchain.export import export


@pytest.fixture(scope="module")
def branchy(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    onnx.save(graphs.branches(hw=48, c=16), d / "m.onnx")
    return export(str(d / "m.onnx"), d / "b", progress=lambda *_: None)


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
    # the head grows and the tail shrinks along the model: prefix sums of the same runs
    heads = [c["head"]["median"] for c in p["cuts"]]
    tails = [c["tail"]["median"] for c in p["cuts"]]
    assert heads == sorted(heads) and tails == sorted(tails, reverse=True)
    assert p["check"]["cuts"] and all(np.isfinite(x["head_err_pct"]) for x in p["check"]["cuts"])
    assert p["machine"]["onnxruntime"] and p["settings"]["iterations"] == 5


def test_head_plus_tail_is_the_whole_model_per_run(branchy):
    p = bench.bench(branchy, role="edge", warmup=1, iterations=7, check=0, progress=lambda *_: None)
    full = p["full"]["median"]
    for c in p["cuts"]:
        # medians of complementary prefix sums add up to about the median whole run
        assert c["head"]["median"] + c["tail"]["median"] == pytest.approx(full, rel=0.35)


def test_bad_settings_are_refused(branchy):
    from tlcut.errors import TlcutError

    with pytest.raises(TlcutError, match="iterations"):
        bench.bench(branchy, role="device", iterations=0, progress=lambda *_: None)
    with pytest.raises(TlcutError, match="role"):
        bench.bench(branchy, role="cloud", progress=lambda *_: None)


def test_stats_are_in_milliseconds():
    s = bench.stats([0.001, 0.002, 0.003])
    assert s["median"] == pytest.approx(2.0) and s["min"] == pytest.approx(1.0) and s["n"] == 3
