"""Fidelity (toolchain/fidelity.py): each lossy choice against the float32 model, on images, no labels.

A small classifier ending in a Softmax (so logits are compared), its image folder, and the same
model with its input multiplied by zero, whose output cannot move: that one must read unknown.
"""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tlcut import cli
from tlcut.bundle import Bundle, fidelity_key
from tlcut.models import graphs
from tlcut.placement import DEVICE, EDGE, SPLIT, Placement
from tlcut.toolchain import fidelity
from tlcut.toolchain.compile import compile_cuts
from tlcut.toolchain.export import export

N_IMAGES = 20


def _conv(name, x, y, cin, cout, rng, inits):
    """A 3x3 conv with weights from ``rng``: the same model whatever other tests built before."""
    inits += [numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32), name + "_w"),
              numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")]
    return helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], name=name, kernel_shape=[3, 3], pads=[1] * 4)


def _classifier(constant: bool = False, hw: int = 16, classes: int = 5):
    """x -> conv -> relu -> conv -> relu -> mean -> matmul -> softmax; ``constant``: x times zero first."""
    i = []
    rng = np.random.default_rng(1)
    i += [numpy_helper.from_array(rng.standard_normal((8, classes)).astype(np.float32), "fc_w")]
    i += [numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "zero")] if constant else []
    nodes = [helper.make_node("Mul", ["x", "zero"], ["x0"], name="mute")] if constant else []
    nodes += [_conv("stem", "x0" if constant else "x", "a", 3, 8, rng, i),
              helper.make_node("Relu", ["a"], ["r"], name="stem_relu"),
              _conv("body", "r", "b", 8, 8, rng, i),
              helper.make_node("Relu", ["b"], ["c"], name="body_relu"),
              helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat"),
              helper.make_node("MatMul", ["f", "fc_w"], ["z"], name="fc"),
              helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1)]
    return graphs.make(nodes, i, [1, 3, hw, hw], [1, classes])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of smooth, different pictures: gradients at random angles with noise."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:24, 0:24] / 23.0
    for k in range(N_IMAGES):
        a, c = rng.uniform(0, np.pi), rng.uniform(0.2, 1.0, 3)
        ramp = np.cos(a) * xx + np.sin(a) * yy
        img = np.stack([ramp * c[j] + rng.normal(0, 0.05, ramp.shape) for j in range(3)], -1)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / f"im{k:02d}.png")
    return d


def _bundle(tmp_path, constant=False, **compile_kw):
    onnx.save(_classifier(constant), tmp_path / "m.onnx")
    b = export(str(tmp_path / "m.onnx"), tmp_path / "b", input_layout="NCHW", progress=lambda *_: None)
    compile_cuts(b, b.cuts, tl="both", **compile_kw)
    return b


@pytest.fixture(scope="module")
def measured(tmp_path_factory, images):
    """The classifier compiled at float32 and int8 (calibrated on 8 of the folder's images), measured."""
    b = _bundle(tmp_path_factory.mktemp("fid"))
    compile_cuts(b, b.cuts, tl="both", precision="int8", calib=str(images), calib_count=8)
    rows = fidelity.measure(b, images=str(images), count=N_IMAGES)
    return b, rows


def _row(rows, **key):
    hits = [r for r in rows if all(r[k] == v for k, v in key.items())]
    assert len(hits) == 1, key
    return hits[0]


def test_raw_float32_is_exact(measured):
    b, rows = measured
    cut = next(c for c in b.cuts if c.tl)
    for where, c in ((SPLIT, cut.index), (DEVICE, None), (EDGE, None)):
        r = _row(rows, where=where, cut=c, tl=False, encoding="raw", engine="onnxrt", precision="float32")
        assert r["status"] == "measured" and r["compared"] == "logits"
        assert r["max_rel_error"] < 1e-5 and r["cosine_min"] > 1 - 1e-9 and r["top1"] == 1.0
    uint8 = _row(rows, where=EDGE, encoding="uint8", precision="float32")  # a camera's pixels lose nothing
    assert uint8["max_rel_error"] < 1e-5
    assert fidelity.fidelity_of(b, Placement(SPLIT, cut.index), "onnxrt", "float32") == fidelity.EXACT


def test_lossy_choices_differ_but_agree_within_bounds(measured):
    b, rows = measured
    cut = next(c for c in b.cuts if c.tl)
    wire = _row(rows, where=SPLIT, cut=cut.index, tl=False, encoding="int8", precision="float32")
    assert 0 < wire["max_rel_error"] < 0.05 and wire["cosine"] > 0.999 and wire["top1"] >= 0.9
    f16 = _row(rows, where=SPLIT, cut=cut.index, tl=False, encoding="float16", precision="float32")
    assert 0 < f16["max_rel_error"] < wire["max_rel_error"]
    halves = _row(rows, where=SPLIT, cut=cut.index, tl=False, encoding="raw", precision="int8")
    assert 0 < halves["max_rel_error"] < 0.2 and halves["cosine"] > 0.99 and halves["top1"] >= 0.8
    jpeg = _row(rows, where=EDGE, encoding="jpeg", precision="float32")
    assert jpeg["quality"] == 90 and 0 < jpeg["max_rel_error"] < 0.2
    got = fidelity.fidelity_of(b, Placement(SPLIT, cut.index, False, "int8"), "onnxrt", "float32")
    assert got["status"] == "measured" and got["top1"] == wire["top1"]
    # never measured (another engine) is unknown, never lossless
    assert fidelity.fidelity_of(b, Placement(SPLIT, cut.index, False, "int8"), "openvino", "float32") is None
    mixed = fidelity.deployment_fidelity(b, Placement(SPLIT, cut.index), ("onnxrt", "int8"), ("onnxrt", "float32"))
    assert mixed["status"] == "estimated" and mixed["max_rel_error"] == halves["max_rel_error"]


def test_calibration_images_are_left_out(measured):
    _, rows = measured
    assert {r["images"]["calibration_images_left_out"] for r in rows} == {8}
    assert {r["images"]["n"] for r in rows} == {N_IMAGES - 8}


def test_records_survive_a_reload_and_go_stale_with_their_files(measured):
    b, rows = measured
    again = Bundle.open(b.path)
    assert again.fidelity == rows
    cut = next(c for c in b.cuts if c.tl)
    p = Placement(SPLIT, cut.index, True, "int8")
    assert fidelity.fidelity_of(again, p, "onnxrt", "int8") == _row(rows, where=SPLIT, cut=cut.index, tl=True,
                                                                    encoding="int8", precision="int8")
    # measuring one choice again replaces its row and keeps the others
    fidelity.measure(again, cuts=[cut], tl="on", precisions=["int8"], wire=["int8"], whole=False,
                     images=rows[0]["images"]["source"], count=N_IMAGES)
    assert len(Bundle.open(b.path).fidelity) == len(rows)


def test_a_learned_tls_rows_never_stand_for_the_pool_tls(measured):
    b, rows = measured
    cut = next(c for c in b.cuts if c.tl)
    row = _row(rows, where=SPLIT, cut=cut.index, tl=True, encoding="int8", precision="int8")
    assert row["tl_kind"] == "pool"
    pool = Placement(SPLIT, cut.index, True, "int8")
    learned = Placement(SPLIT, cut.index, True, "int8", tl_kind="bottleneck:8")
    assert fidelity.fidelity_of(b, pool, "onnxrt", "int8")["status"] == "measured"
    assert fidelity.fidelity_of(b, learned, "onnxrt", "int8") is None  # unknown, not the pool TL's numbers
    old = {k: v for k, v in row.items() if k != "tl_kind"}  # a row from before kinds were recorded: pool
    assert fidelity_key(old) == fidelity_key(row) != fidelity_key({**row, "tl_kind": "bottleneck:8"})
    assert fidelity_key({**old, "tl": False, "cut": None})[3] is None


def test_a_changed_file_makes_its_rows_unknown(tmp_path, images):
    b = _bundle(tmp_path)
    cut = next(c for c in b.cuts if c.tl)
    fidelity.measure(b, cuts=[cut], tl="on", wire=["int8"], whole=False, images=str(images), count=4)
    p = Placement(SPLIT, cut.index, True, "int8")
    assert fidelity.fidelity_of(b, p) is not None
    compile_cuts(b, [cut], tl="on")  # the same halves written again: same bytes, still known
    assert fidelity.fidelity_of(b, p) is not None
    tail = b.path / b.find("tail", cut.index, True).file
    m = onnx.load(str(tail))
    m.doc_string = "changed"
    onnx.save(m, str(tail))
    assert fidelity.fidelity_of(b, p) is None


def test_a_constant_output_model_is_unknown(tmp_path, images):
    b = _bundle(tmp_path, constant=True)
    rows = fidelity.measure(b, images=str(images), count=6)
    assert rows and all(r["status"] == "unknown" and r["reason"] == fidelity.STILL for r in rows)
    assert not any(k in r for r in rows for k in fidelity.METRICS)
    cut = next(c for c in b.cuts if c.tl)
    assert fidelity.fidelity_of(b, Placement(SPLIT, cut.index, True), "onnxrt", "float32") is None
    assert fidelity.fidelity_of(b, Placement(EDGE, encoding="jpeg"), "onnxrt", "float32") is None


def test_cli_measures_and_compile_int8_says_one_line_per_cut(tmp_path, images, capsys):
    b = _bundle(tmp_path)
    assert cli.main(["fidelity", str(b.path), "--images", str(images), "-n", "4", "--encodings", "int8",
                     "--cuts", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out and all("top-1" in line for line in out) and any(line.startswith("cut 0") for line in out)
    cut = next(c for c in b.cuts if c.tl)
    assert cli.main(["compile", str(b.path), "--cuts", str(cut.index), "--precision", "int8",
                     "--calib", str(images), "--calib-count", "4"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[fidelity]")]
    assert len(err) == 2 and f"cut {cut.index} on onnxrt int8: top-1" in err[1] and "device only" in err[0]
    again = Bundle.open(b.path)  # the CLI wrote the manifest
    assert fidelity.fidelity_of(again, Placement(SPLIT, cut.index, True), "onnxrt", "int8")["status"] == "measured"


def test_compile_without_images_beside_the_calibration_ones_says_unknown(tmp_path, images, capsys):
    b = _bundle(tmp_path)
    assert cli.main(["compile", str(b.path), "--cuts", "0", "--precision", "int8", "--calib", str(images),
                     "--calib-count", str(N_IMAGES)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[fidelity]")]
    assert len(err) == 1 and "int8: unknown" in err[0] and "0 image(s) besides the 20 calibration read" in err[0]
    assert not Bundle.open(b.path).fidelity


@pytest.mark.parametrize("flags, says", [
    (["--encodings", "bogus"], "unknown encoding 'bogus'"),
    (["--engines", "nope"], "unknown backend 'nope'"),
    (["--precisions", "int4"], "has no int4 halves"),
    (["--tl", "sideways"], "--tl must be one of"),
    (["-n", "x"], "-n takes"),
    (["-n", "1"], "at least 2"),
    (["--images", "/no/such/folder"], "does not exist"),
    (["--cuts", "99"], "cut '99' not found"),
    (["--cuts", "0", "--precisions", "float32"], "cut 0 has no float32 halves"),
])
def test_a_bad_flag_is_a_one_line_error(tmp_path, capsys, flags, says):
    onnx.save(_classifier(), tmp_path / "m.onnx")
    b = export(str(tmp_path / "m.onnx"), tmp_path / "b", input_layout="NCHW", progress=lambda *_: None)
    assert cli.main(["fidelity", str(b.path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlcut: error:") and says in err[0], err
