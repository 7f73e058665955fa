"""`tlcut export`: a Keras model (or an ONNX file) becomes a bundle with a fully annotated ONNX graph.

Every activation tensor gets a static shape, a dtype, a layout (NHWC/NCHW where it can be known)
and the Keras layer it came from, because every later step needs them: cuts are reported per
layer, the TL must pool the right axes, and runtimes need static input shapes.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

from tlcut import __version__, dtypes
from tlcut.bundle import FORMAT, MANIFEST, MODEL, ONNX, VERSION, Artifact, Bundle, artifact_file, sha256_file, staged_dir, write_json_atomic
from tlcut.errors import TlcutError

DEFAULT_OPSET = 17

# ONNX ops whose 4-D data input and output are NCHW by the operator's definition.
_NCHW_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "GlobalAveragePool", "GlobalMaxPool", "DepthToSpace",
    "SpaceToDepth", "MaxUnpool", "QLinearConv", "ConvInteger",
}
# Ops that keep the layout of their (4-D) data input: elementwise, concat along an axis, pads.
_SAME_LAYOUT_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow",
    "Sqrt", "Exp", "Log", "Abs", "Neg", "Erf", "Gelu", "Mish", "Identity", "Dropout", "Cast",
    "Concat", "Pad", "Where", "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Equal", "Less",
    "Greater", "Not", "And", "Or", "QuantizeLinear", "DequantizeLinear", "Swish",
}


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        raise TlcutError(
            "exporting a Keras model needs TensorFlow; install it with `pip install 'tlcut[tf]'`"
        ) from None
    return keras


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


def keras_to_onnx(m, batch: int = 1, opset: int = DEFAULT_OPSET) -> tuple[onnx.ModelProto, str]:
    """Convert with tf2onnx, which keeps Keras layer names in node names (needed to map cuts back)."""
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
    proto, _ = tf2onnx.convert.from_keras(m, input_signature=tuple(spec), opset=opset)
    return proto, f"tf2onnx {tf2onnx.__version__}, tensorflow {tf.__version__}"


# --------------------------------------------------------------------------------------------
# Annotation: static shapes, dtypes, layouts, Keras layers
# --------------------------------------------------------------------------------------------
def _np_dtype(elem_type: int) -> str:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _static_shape(t) -> tuple | None:
    if not t.type.HasField("tensor_type") or not t.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in t.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def fix_batch(model: onnx.ModelProto, batch: int) -> None:
    """Give every graph input a static batch size so that every intermediate shape can be static."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if not d.HasField("dim_value"):
                if k == 0:
                    d.Clear()
                    d.dim_value = batch
                else:
                    raise TlcutError(
                        f"model input '{inp.name}' has a dynamic dimension {k} ({d.dim_param or '?'}); "
                        "export it with a fixed input shape"
                    )


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Static shapes for every tensor: ONNX shape inference, then one ORT run for what it misses."""
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    known = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output) if _static_shape(vi)}
    known |= {i.name for i in inferred.graph.input}
    missing = [o for n in inferred.graph.node for o in n.output if o and o not in known]
    if not missing:
        return inferred
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    have = {o.name for o in probe.graph.output}
    for name in missing:
        if name not in have:
            probe.graph.output.append(helper.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros(i.shape, dtype=dtypes.from_ort(i.type)) for i in sess.get_inputs()}
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    vis = {vi.name: vi for vi in inferred.graph.value_info}
    for name in missing:
        v = np.asarray(values[name])
        elem = helper.np_dtype_to_tensor_dtype(v.dtype)
        new = helper.make_tensor_value_info(name, elem, list(v.shape))
        if name in vis:
            vis[name].CopyFrom(new)
        else:
            inferred.graph.value_info.append(new)
    return inferred


def activation_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that depend on a graph input; the rest are weights or constants and are never cut."""
    inits = {i.name for i in graph.initializer}
    live = {i.name for i in graph.input if i.name not in inits}
    for node in graph.node:
        if any(i in live for i in node.input if i):
            live.update(o for o in node.output if o)
    return live


def propagate_layouts(graph: onnx.GraphProto, input_layouts: dict[str, str | None],
                      shapes: dict[str, tuple]) -> dict[str, str | None]:
    """Follow the layout of every 4-D tensor from the inputs through transposes and NCHW-only ops."""
    layout: dict[str, str | None] = dict(input_layouts)
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        outs = [o for o in node.output if o]
        data_in = [i for i in node.input if i and len(shapes.get(i, ())) == 4 and i not in consts]
        known = [layout.get(i) for i in data_in if layout.get(i)]
        result = None
        if node.op_type == "Transpose" and data_in and layout.get(node.input[0]):
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
            src = layout[node.input[0]]
            result = "".join(src[p] for p in perm) if len(perm) == 4 else None
        elif node.op_type in _NCHW_OPS:
            result = "NCHW"
        elif node.op_type in _SAME_LAYOUT_OPS and known and all(k == known[0] for k in known):
            result = known[0]
        elif node.op_type == "Resize" and known:
            result = known[0]
        for o in outs:
            if len(shapes.get(o, ())) == 4:
                layout[o] = result
    return layout


_SUFFIX = re.compile(r"_\d+$")


def keras_layer_of(node_name: str, layer_names: set[str]) -> str | None:
    """tf2onnx names nodes `model/layer_scope/op`; Keras 3 appends `_<n>` to each scope."""
    parts = node_name.split("/")
    for part in parts[1:] + parts[:1]:
        stripped = _SUFFIX.sub("", part)
        for cand in (stripped, part):
            if cand in layer_names:
                return cand
    return None


def annotate(model: onnx.ModelProto, input_layout: str | None, layer_names: set[str] | None):
    """Per-tensor facts the later steps need, for every activation tensor of the model."""
    g = model.graph
    vinfo = {vi.name: vi for vi in list(g.value_info) + list(g.output) + list(g.input)}
    shapes, types = {}, {}
    for name, vi in vinfo.items():
        s = _static_shape(vi)
        if s is not None:
            shapes[name] = s
            types[name] = _np_dtype(vi.type.tensor_type.elem_type)
    act = activation_tensors(g)
    inits = {i.name for i in g.initializer}
    in_names = [i.name for i in g.input if i.name not in inits]
    layouts = propagate_layouts(g, {n: input_layout for n in in_names if len(shapes.get(n, ())) == 4}, shapes)
    producer = {o: node for node in g.node for o in node.output}
    tensors = {}
    for name in [*in_names, *(o for n in g.node for o in n.output if o)]:
        if name not in act:
            continue
        if name not in shapes:
            raise TlcutError(f"tensor '{name}' has no static shape after inference; export with a fixed input shape")
        node = producer.get(name)
        layer = keras_layer_of(node.name, layer_names) if (node is not None and layer_names) else None
        tensors[name] = {"shape": list(shapes[name]), "dtype": types[name], "layout": layouts.get(name), "layer": layer}
    return tensors


VALIDATION_TOLERANCE = 1e-4


def compare_with_keras(km, proto: onnx.ModelProto, batch: int, seed: int = 0) -> dict:
    """Run the converted graph and the Keras model on the same random input, as Polygraphy would."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    xs = [rng.random((batch, *t.shape[1:])).astype(np.float32) for t in km.inputs]
    want = km(xs if len(xs) > 1 else xs[0], training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
    diff = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    return {"against": "keras", "input": f"uniform [0,1), seed {seed}", "max_abs_diff": diff}


# --------------------------------------------------------------------------------------------
# The verb
# --------------------------------------------------------------------------------------------
def export(model: str, out, *, weights: str | None = None, input_shape=None, classes: int | None = None,
           batch: int = 1, opset: int = DEFAULT_OPSET, input_layout: str | None = None, force: bool = False,
           progress=print) -> Bundle:
    """Build a bundle for MODEL in OUT. Nothing appears at OUT unless every step succeeded."""
    from tlcut.toolchain.cuts import enumerate_cuts

    out = Path(out)
    if out.exists() and not force:
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
    else:
        progress(f"[export] building {model} in Keras")
        km, source = load_keras(model, weights=weights, input_shape=input_shape, classes=classes)
        layer_names = {layer.name for layer in km.layers}
        progress(f"[export] converting {len(km.layers)} Keras layers to ONNX (opset {opset})")
        proto, producer = keras_to_onnx(km, batch=batch, opset=opset)
        input_layout = "NHWC"  # Keras image models are channels-last
    progress("[export] inferring static shapes and layouts")
    proto = infer_shapes(proto)
    validation = None
    if layer_names is not None:
        validation = compare_with_keras(km, proto, batch)
        progress(f"[export] ONNX vs Keras on a random input: max abs diff {validation['max_abs_diff']:.2e}")
        if validation["max_abs_diff"] > VALIDATION_TOLERANCE:
            progress(f"[export] warning: the conversion differs from Keras by more than {VALIDATION_TOLERANCE:g}")
    tensors = annotate(proto, input_layout, layer_names)
    cuts = enumerate_cuts(proto, tensors)
    g = proto.graph
    inits = {i.name for i in g.initializer}

    def io(vi):
        t = tensors.get(vi.name) or {"shape": list(_static_shape(vi) or ()), "dtype": _np_dtype(vi.type.tensor_type.elem_type), "layout": None}
        return {"name": vi.name, "shape": t["shape"], "dtype": t["dtype"], "layout": t.get("layout")}

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tlcut_version": __version__,
        "source": source,
        "model": {"file": MODEL, "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
                  "producer": producer, "batch": batch, "nodes": len(g.node)},
        "inputs": [io(vi) for vi in g.input if vi.name not in inits],
        "outputs": [io(vi) for vi in g.output],
        "validation": validation,
        "tensors": tensors,
        "cuts": [c.to_json() for c in cuts],
        "artifacts": [],
    }
    with staged_dir(out, overwrite=force) as tmp:
        onnx.save(proto, str(tmp / MODEL))
        if len(manifest["inputs"]) == 1:
            strip = lambda d: {k: d[k] for k in ("name", "dtype", "shape")}  # noqa: E731
            manifest["artifacts"].append(Artifact("model", None, False, ONNX, "float32", artifact_file("model", None),
                                                  strip(manifest["inputs"][0]), strip(manifest["outputs"][0])).to_json())
        manifest["model"]["sha256"] = sha256_file(tmp / MODEL)
        write_json_atomic(tmp / MANIFEST, manifest)
    progress(f"[export] wrote {out} ({len(g.node)} nodes, {len(cuts)} cuts, "
             f"{sum(c.tl for c in cuts)} take the TL)")
    return Bundle.open(out)
