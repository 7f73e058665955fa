"""`tlcut export`: a Keras model (or an ONNX file) becomes a bundle with a fully annotated ONNX graph.

Every activation tensor gets a static shape, a dtype, a layout (NHWC/NCHW where it can be known)
and the Keras layer it came from, because every later step needs them: cuts are reported per
layer, the TL must pool the right axes, and runtimes need static input shapes.

This module is the order of the steps; each step lives in its own module: ``convert`` (Keras to
ONNX), ``weights`` (inline or external data) and ``annotate`` (shapes, dtypes, layouts, layers).
"""

from __future__ import annotations

import datetime as _dt
import gc
from pathlib import Path

import onnx

from tlcut import __version__
from tlcut.bundle import (FORMAT, MANIFEST, MODEL, ONNX, VERSION, Artifact, Bundle, artifact_file, check_replaceable,
                          sha256_file, staged_dir, write_json_atomic)
from tlcut.errors import TlcutError
from tlcut.toolchain.annotate import annotate, fix_batch, infer_shapes, io_entry
from tlcut.toolchain.convert import DEFAULT_OPSET, VALIDATION_TOLERANCE, compare_with_keras, keras_to_onnx, load_keras
from tlcut.toolchain.weights import place_weights, save_model


def export(model: str, out, *, weights: str | None = None, input_shape=None, classes: int | None = None,
           batch: int = 1, opset: int = DEFAULT_OPSET, input_layout: str | None = None, force: bool = False,
           progress=print) -> Bundle:
    """Build a bundle for MODEL in OUT. Nothing appears at OUT unless every step succeeded."""
    from tlcut.toolchain.cuts import enumerate_cuts

    out = Path(out)
    if out.exists():
        check_replaceable(out)  # --force replaces a bundle, never the user's other files
        if not force:
            raise TlcutError(f"'{out}' already exists; choose another -o or pass --force to replace it")
    if batch < 1:
        raise TlcutError(f"--batch must be at least 1, got {batch}")
    layer_names = None
    if str(model).endswith(".onnx"):
        src = Path(model)
        if not src.is_file():
            raise TlcutError(f"model file '{model}' does not exist")
        try:
            proto = onnx.load(str(src))
            onnx.checker.check_model(proto)
        except Exception as e:
            raise TlcutError(f"'{model}' is not a valid ONNX model ({str(e).splitlines()[0][:160]})") from None
        source = {"kind": "onnx-file", "name": src.stem, "path": str(src.resolve()), "sha256": sha256_file(src)}
        producer = f"{proto.producer_name} {proto.producer_version}".strip()
        if input_layout not in (None, "NCHW", "NHWC"):
            raise TlcutError(f"--input-layout must be NCHW or NHWC, got '{input_layout}'")
        fix_batch(proto, batch)
        storage = None
    else:
        progress(f"[export] building {model} in Keras")
        km, source = load_keras(model, weights=weights, input_shape=input_shape, classes=classes)
        layer_names = {layer.name for layer in km.layers}
        progress(f"[export] converting {len(km.layers)} Keras layers to ONNX (opset {opset})")
        proto, producer, external = keras_to_onnx(km, batch=batch, opset=opset, large_model=True)
        storage = external.name_to_tensor_data
        del external
        gc.collect()  # the converter's TensorFlow and tf2onnx graphs are cycles: free them before the ONNX steps
        input_layout = "NHWC"  # Keras image models are channels-last
    with staged_dir(out, overwrite=force) as tmp:
        weights_file = place_weights(proto, tmp, storage)
        del storage
        progress("[export] inferring static shapes and layouts")
        proto = infer_shapes(proto, tmp)
        if weights_file is not None:
            progress(f"[export] weights in {weights_file['file']} ({weights_file['bytes'] / 2**20:.1f} MiB)")
        save_model(proto, tmp / MODEL, weights_file)
        validation = None
        if layer_names is not None:
            validation = compare_with_keras(km, tmp / MODEL, batch)
            progress(f"[export] ONNX vs Keras on a random input: max abs diff {validation['max_abs_diff']:.2e}")
            if validation["max_abs_diff"] > VALIDATION_TOLERANCE:
                progress(f"[export] warning: the conversion differs from Keras by more than {VALIDATION_TOLERANCE:g}")
        tensors = annotate(proto, input_layout, layer_names)
        cuts = enumerate_cuts(proto, tensors)
        g = proto.graph
        inits = {i.name for i in g.initializer}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tlcut_version": __version__,
            "source": source,
            "model": {"file": MODEL, "sha256": sha256_file(tmp / MODEL),
                      "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
                      "producer": producer, "batch": batch, "nodes": len(g.node)},
            "inputs": [io_entry(vi, tensors) for vi in g.input if vi.name not in inits],
            "outputs": [io_entry(vi, tensors) for vi in g.output],
            "validation": validation,
            "tensors": tensors,
            "cuts": [c.to_json() for c in cuts],
            "artifacts": [],
        }
        if weights_file is not None:
            manifest["model"]["weights"] = weights_file
        if len(manifest["inputs"]) == 1:
            strip = lambda d: {k: d[k] for k in ("name", "dtype", "shape")}  # noqa: E731
            manifest["artifacts"].append(Artifact("model", None, False, ONNX, "float32", artifact_file("model", None),
                                                  strip(manifest["inputs"][0]), strip(manifest["outputs"][0])).to_json())
        write_json_atomic(tmp / MANIFEST, manifest)
    progress(f"[export] wrote {out} ({len(g.node)} nodes, {len(cuts)} cuts, "
             f"{sum(c.tl for c in cuts)} take the TL)")
    return Bundle.open(out)
