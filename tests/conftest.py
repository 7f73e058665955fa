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


# The graph sizes most tests use: small enough to run in milliseconds, big enough to have cuts.
SMALL_GRAPH = {"residual": {"hw": 9, "c": 4}, "chain": {"hw": 9, "c": 4}, "branches": {"hw": 12, "c": 4},
               "nhwc_classifier": {}}


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """make(graph="residual", tl="both", *, cuts=None, input_layout=None, compile=None, opset=None, **graph_kw): a
    fresh bundle of a small ONNX graph (tlcut.models.graphs), each call its own folder, so a test may
    add artifacts to it. ``cuts`` (indexes; all by default) are compiled with ``tl`` and the
    ``compile`` keywords of compile_cuts; ``tl=None`` leaves the bundle as export wrote it; ``opset``
    declares another ONNX opset (an engine that reads only older ones)."""
    import onnx

    from tlcut.models import graphs
    from tlcut.toolchain.compile import compile_cuts
    from tlcut.toolchain.export import export

    def make(graph: str = "residual", tl: str | None = "both", *, cuts=None, input_layout=None, compile=None,
             opset: int | None = None, **graph_kw):
        d = tmp_path_factory.mktemp(graph)
        m = getattr(graphs, graph)(**{**SMALL_GRAPH[graph], **graph_kw})
        if opset is not None:
            m.opset_import[0].version = opset
            onnx.checker.check_model(m)
        onnx.save(m, d / "m.onnx")
        b = export(str(d / "m.onnx"), d / "b", input_layout=input_layout, progress=lambda *_: None)
        if tl is not None:
            compile_cuts(b, b.cuts if cuts is None else [b.cuts[k] for k in cuts], tl=tl, **(compile or {}))
        return b

    return make
