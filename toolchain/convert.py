"""Keras models in, ONNX out: load a Keras model (file or architecture name) and convert it with
tf2onnx, which keeps Keras layer names in node names so cuts map back to layers.

TensorFlow is imported only inside these functions: ``tlcut --help`` and ONNX-only paths never
load it.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import onnx

from tlcut.bundle import sha256_file
from tlcut.errors import TlcutError
from tlcut.toolchain.tf2onnx_patches import convolutions_without_xla, lean_tf2onnx

DEFAULT_OPSET = 17


def _keras():
    from tlcut.quiet import import_keras

    try:
        return import_keras()
    except ImportError:
        raise TlcutError(
            "exporting a Keras model needs TensorFlow; install it with `pip install 'tlcut[tf]'`"
        ) from None


def load_keras(model: str, weights: str | None = None, input_shape=None, classes: int | None = None):
    """A Keras model from a saved file (.keras, .h5) or a `keras.applications` / tlcut zoo name."""
    from tlcut.models import zoo

    path = Path(model)
    if path.suffix in (".keras", ".h5", ".hdf5"):
        if not path.is_file():
            raise TlcutError(f"model file '{model}' does not exist")
        keras = _keras()
        try:
            m = keras.models.load_model(path, compile=False)
        except Exception as e:  # Keras raises many types for a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TlcutError(f"cannot load Keras model '{model}': {first[:200]}; is it a complete .keras/.h5 file?") from None
        if weights:
            _load_weights(m, weights)
        source = {"kind": "keras-file", "name": path.stem, "path": str(path.resolve()), "sha256": sha256_file(path)}
        report = Path(str(path) + ".json")  # written beside the model by `tlcut train` / `tlcut retrain`
        if report.is_file():
            try:
                source["training"] = json.loads(report.read_text())
            except ValueError:
                pass
        return m, source
    if path.suffix or os.sep in model:
        raise TlcutError(
            f"'{model}' is neither an existing .keras/.h5/.onnx file nor an architecture name; "
            "list architectures with `tlcut export --list`"
        )
    names = zoo.names()
    match = {n.lower(): n for n in names}.get(model.lower())
    if match is None:
        close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise TlcutError(f"unknown architecture '{model}'; {hint}list them with `tlcut export --list`")
    m = zoo.build(match, input_shape=input_shape, classes=classes)
    if weights:
        _load_weights(m, weights)
    return m, {"kind": "keras-application" if match in zoo.keras_application_names() else "tlcut-zoo",
               "name": match, "weights": str(Path(weights).resolve()) if weights else None}


def _load_weights(m, weights: str) -> None:
    if not Path(weights).is_file():
        raise TlcutError(f"weights file '{weights}' does not exist")
    try:
        m.load_weights(weights)
    except Exception as e:
        raise TlcutError(f"weights '{weights}' do not fit this model: {str(e).splitlines()[0][:200]}") from None



def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler for TF's Erfc, which exact GELU (`approximate=False`) lowers to: 1 - Erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    node.type = "Erf"
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_one_minus"),
                                  inputs=[one.output[0], node.output[0]])
    return node


# TF ops tf2onnx 1.17 lacks, converted by tlcut: {TF op: (handler, args)} in tf2onnx's format.
_OP_HANDLERS = {"Erfc": (_erfc_as_one_minus_erf, [])}


def unconverted_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Node op types that are no ONNX operator at the model's opset: what the converter left as it was.

    tf2onnx only logs an op it cannot convert and keeps the TensorFlow node, so a "converted" model
    may hold ops no ONNX runtime knows; counting them turns that into an error the user can act on.
    """
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    found: dict[str, int] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        version = opsets.get(domain)
        if domain in ("ai.onnx", "ai.onnx.ml") and version is not None and \
                onnx.defs.has(node.op_type, version, "" if domain == "ai.onnx" else domain):
            continue
        if domain not in ("ai.onnx", "ai.onnx.ml") and version is not None:
            continue  # a declared custom domain: the model says which runtime it needs
        found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


_TF_OP_IN_MESSAGE = re.compile(r"\[[^\]:]+: (\w+)\]")


def _unsupported(name: str, converter: str, ops: dict[str, int] | None, detail: str | None = None) -> TlcutError:
    """The one line a user gets when the converter cannot do a model: which ops, and what to do."""
    what = f"{converter} cannot convert {name}"
    if ops:
        what += ": unsupported ops " + ", ".join(f"{op} (x{n})" for op, n in sorted(ops.items()))
    elif detail:
        what += f": {detail}"
    return TlcutError(f"{what}; convert the model to ONNX with another tool and run `tlcut export MODEL.onnx`, "
                      "or choose another architecture")


def keras_to_onnx(m, batch: int = 1, opset: int = DEFAULT_OPSET, large_model: bool = False):
    """Convert with tf2onnx, which keeps Keras layer names in node names (needed to map cuts back).

    Returns (model, producer, external tensors): with ``large_model`` the weights stay out of the
    proto, in the dict tf2onnx returns, so no step after it copies them.
    """
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError:
        raise TlcutError("exporting needs tf2onnx; install it with `pip install 'tlcut[tf]'`") from None
    spec = []
    for i, t in enumerate(m.inputs):
        shape = (batch,) + tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise TlcutError(
                f"model input {i} has an unknown size {tuple(t.shape)}; give it with --input-shape H,W,C"
            )
        spec.append(tf.TensorSpec(shape, t.dtype, name=f"input_{i}" if len(m.inputs) > 1 else "input"))
    converter = f"tf2onnx {tf2onnx.__version__}"
    log = logging.getLogger("tf2onnx")
    level = log.level
    log.setLevel(logging.CRITICAL)  # it logs every unsupported op; the one-line error below says it once
    try:
        with convolutions_without_xla(), lean_tf2onnx():
            proto, external = tf2onnx.convert.from_keras(m, input_signature=tuple(spec), opset=opset,
                                                         custom_op_handlers=dict(_OP_HANDLERS),
                                                         large_model=large_model)
    except TlcutError:
        raise
    except Exception as e:  # tf2onnx raises ValueError, KeyError, TypeError, ... for what it cannot do
        text = str(e).strip()
        ops = {op: 1 for op in _TF_OP_IN_MESSAGE.findall(text)}
        first = text.splitlines()[0][:200] if text else type(e).__name__
        raise _unsupported(m.name, converter, ops, f"{type(e).__name__}: {first}") from None
    finally:
        log.setLevel(level)
    leftover = unconverted_ops(proto)
    if leftover:
        raise _unsupported(m.name, converter, leftover)
    return proto, f"{converter}, tensorflow {tf.__version__}", external



VALIDATION_TOLERANCE = 1e-4


def compare_with_keras(km, model, batch: int, seed: int = 0) -> dict:
    """Run the converted graph and the Keras model on the same random input, as Polygraphy would.

    ``model`` is a ModelProto or the path of a saved model.onnx (which ONNX Runtime reads with its
    weights file, so no serialised copy of a large model is made).
    """
    import onnxruntime as ort
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    xs = [rng.random((batch, *t.shape[1:])).astype(np.float32) for t in km.inputs]
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # Keras' XLA-compiled grouped convolutions warn about retracing
    try:
        want = km(xs if len(xs) > 1 else xs[0], training=False)
    finally:
        tf.get_logger().setLevel(level)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
    diff = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    return {"against": "keras", "input": f"uniform [0,1), seed {seed}", "max_abs_diff": diff}
