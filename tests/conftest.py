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
