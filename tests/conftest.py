"""Shared fixtures. Tests are grouped by what they need (markers in pyproject.toml):
unit tests need only ONNX and ONNX Runtime; `tf` tests export real Keras models; `root` tests
build network namespaces; `gpu` tests need an NVIDIA GPU and are skipped here."""

import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _have_tf() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf2onnx"))


def pytest_collection_modifyitems(config, items):
    if not _have_tf():
        skip = pytest.mark.skip(reason="TensorFlow/tf2onnx not installed (pip install 'tlcut[tf]')")
        for item in items:
            if "tf" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def keras_bundles(tmp_path_factory):
    """Bundles of real Keras Applications models, exported once per session (small inputs)."""
    from tlcut.toolchain.export import export

    root = tmp_path_factory.mktemp("keras")
    cache = {}

    def get(name, shape):
        key = (name, shape)
        if key not in cache:
            cache[key] = export(name, root / f"{name}-{'x'.join(map(str, shape))}", input_shape=shape,
                                progress=lambda *_: None)
        return cache[key]

    yield get
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def residual_bundle(tmp_path_factory):
    """make(hw, tl, **compile_kw): a fresh bundle of the small residual graph (tlcut.models.graphs),
    every cut compiled; each call its own folder, so a test module may add artifacts to it."""
    import onnx

    from tlcut.models import graphs
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    def make(hw: int = 9, tl: str = "both", **compile_kw):
        d = tmp_path_factory.mktemp("residual")
        onnx.save(graphs.residual(hw=hw, c=4), d / "m.onnx")
        b = export(str(d / "m.onnx"), d / "b", progress=lambda *_: None)
        compile_cuts(b, b.cuts, tl=tl, **compile_kw)
        return b

    return make
