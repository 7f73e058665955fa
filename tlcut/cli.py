"""The `tlcut` command: one verb per pipeline step.

Each verb is a small function whose docstring is its --help text; shared flag groups are defined
once. Heavy libraries are imported inside the verbs that need them, so `tlcut --help` and the
ONNX-only verbs never import TensorFlow. A ``TlcutError`` ends the command with one line on stderr
and exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tlcut.errors import TlcutError

VERBS = {}


def verb(name):
    def deco(fn):
        VERBS[name] = fn
        return fn

    return deco


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit_json(obj, path: str | None = None) -> None:
    text = json.dumps(obj, indent=1)
    if path and path != "-":
        from tlcut.bundle import write_json_atomic

        write_json_atomic(Path(path), obj)
    else:
        print(text)


# ----------------------------------------------------------------------------------------------
# shared flag groups
# ----------------------------------------------------------------------------------------------
def _add_bundle(p):
    p.add_argument("bundle", help="bundle directory written by `tlcut export`")


def _add_threads(p):
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads for the backend (default: the backend's own choice)")


def _add_backend(p):
    p.add_argument("--backend", default="onnxrt", help="runtime backend (default: onnxrt)")


def _add_network(p):
    g = p.add_argument_group("network (the device's uplink to the edge)")
    g.add_argument("--bandwidth", type=float, metavar="MBPS", help="uplink bandwidth in Mbit/s (default 57, 5G uplink)")
    g.add_argument("--latency", type=float, metavar="MS", help="round-trip latency (ping) in ms (default 28)")
    g.add_argument("--down-bandwidth", type=float, metavar="MBPS", help="downlink bandwidth for the reply (default: 10x the uplink)")
    g.add_argument("--network", metavar="CSV", help="Scission-style CSV: source,destination,ping_ms,bandwidth_mbps")
    g.add_argument("--device-name", default="device", help="the device's name in --network (default: device)")
    g.add_argument("--edge-name", default="edge", help="the edge's name in --network (default: edge)")
    g.add_argument("--wire-overhead", type=float, metavar="X",
                   help="link bytes per payload byte (default 1514/1448: TCP/IPv4 over Ethernet)")


# ----------------------------------------------------------------------------------------------
# verbs
# ----------------------------------------------------------------------------------------------
@verb("export")
def cmd_export(a):
    """Convert a Keras model (file or keras.applications name) or an ONNX file into a bundle."""
    from tlcut.toolchain.export import export

    if a.list:
        from tlcut.models import zoo

        print("\n".join(zoo.names()))
        return 0
    if not a.model or not a.output:
        raise TlcutError("usage: tlcut export MODEL -o BUNDLE (or `tlcut export --list`)")
    shape = _parse_shape(a.input_shape) if a.input_shape else None
    export(a.model, a.output, weights=a.weights, input_shape=shape, classes=a.classes, batch=a.batch,
           opset=a.opset, input_layout=a.input_layout, force=a.force, progress=_say)
    return 0


def _parse_shape(text: str):
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(",") if x)
    except ValueError:
        raise TlcutError(f"--input-shape '{text}' is not a list of integers like 224,224,3") from None
    if not dims or any(d <= 0 for d in dims):
        raise TlcutError(f"--input-shape '{text}' must be positive integers like 224,224,3")
    return dims


def _args_export(p):
    p.add_argument("model", nargs="?", help="a .keras/.h5/.onnx file, or an architecture name (see --list)")
    p.add_argument("-o", "--output", help="bundle directory to write")
    p.add_argument("--weights", help="weights file to load into the model (default: random weights)")
    p.add_argument("--input-shape", metavar="H,W,C", help="input size for a named architecture (default: its own)")
    p.add_argument("--classes", type=int, help="number of classes for a named architecture")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the exported graph (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--input-layout", choices=["NCHW", "NHWC"],
                   help="layout of a 4-D input of an ONNX model (Keras models are NHWC)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--list", action="store_true", help="list the architecture names and exit")


@verb("cuts")
def cmd_cuts(a):
    """List every valid single-tensor cut of the model, in topological order."""
    from tlcut.bundle import Bundle
    from tlcut.toolchain.cuts import format_table

    b = Bundle.open(a.bundle)
    cuts = b.cuts
    if a.tl_only:
        cuts = [c for c in cuts if c.tl]
    if a.json:
        _emit_json({"model": b.name, "sha256": b.model_sha256, "cuts": [c.to_json() for c in cuts]})
    else:
        print(format_table(cuts, name=b.name))
    return 0


def _args_cuts(p):
    _add_bundle(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tl-only", action="store_true", help="only cuts where the TL applies")


@verb("compile")
def cmd_compile(a):
    """Write the runnable head and tail (with and without the TL) of the chosen cuts into the bundle."""
    from tlcut.bundle import Bundle
    from tlcut.toolchain.compile import compile_cuts, select_cuts

    b = Bundle.open(a.bundle)
    spec = a.cuts
    if a.plan:
        spec = str(_plan_best(a.plan, b))
    cuts = select_cuts(b, spec)

    def bar(items):
        from tqdm import tqdm

        return tqdm(items, desc="compile", unit="cut", file=sys.stderr, leave=False, disable=None)

    written = compile_cuts(b, cuts, tl=a.tl, backend=a.backend, threads=a.threads, progress=bar)
    for k, e in written.items():
        _say(f"[compile] cut {k}: {', '.join(sorted(e['files']))} in {b.path / e['dir']}")
    return 0


def _plan_best(path, bundle):
    try:
        plan = json.loads(Path(path).read_text())
        best = plan["best"]
    except (OSError, ValueError, KeyError):
        raise TlcutError(f"'{path}' is not a plan written by `tlcut plan --json -o`") from None
    if plan.get("model_sha256") != bundle.model_sha256:
        raise TlcutError(f"plan '{path}' was made for another model than bundle '{bundle.path}'")
    if best.get("cut") is None:
        raise TlcutError(f"the plan's best choice is {best['name']}, which has no cut to compile")
    return best["cut"]


def _args_compile(p):
    _add_bundle(p)
    p.add_argument("--cuts", help="cuts to compile: indices, ranges (3-7), tensor or layer names, or 'all'")
    p.add_argument("--plan", help="compile the best cut of this plan JSON instead of --cuts")
    p.add_argument("--tl", default="both", choices=["on", "off", "both"],
                   help="halves with the TL, without, or both (default both, where the TL applies)")
    _add_backend(p)
    _add_threads(p)


@verb("bench")
def cmd_bench(a):
    """Measure every cut on this machine: head, DeviceTL, serialization, payload, EdgeTL, tail."""
    from tlcut.bundle import Bundle
    from tlcut.toolchain.bench import bench

    from tqdm import tqdm

    b = Bundle.open(a.bundle)
    prof = bench(b, role=a.role, warmup=a.warmup, iterations=a.iterations, threads=a.threads,
                 check=a.check, backend=a.backend, progress=_say,
                 bar=lambda it: tqdm(it, desc="bench", unit="cut", file=sys.stderr, leave=False, disable=None))
    _emit_json(prof, a.output)
    if a.output and a.output != "-":
        _say(f"[bench] wrote {a.output}")
    return 0


def _args_bench(p):
    _add_bundle(p)
    p.add_argument("--role", required=True, choices=["device", "edge"], help="which side this machine plays")
    p.add_argument("-o", "--output", help="profile JSON to write (default: stdout)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--iterations", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--check", type=int, default=4, metavar="N",
                   help="time the real halves of N cuts against the profiled prefix sums (default 4; 0: none)")
    _add_backend(p)
    _add_threads(p)


@verb("plan")
def cmd_plan(a):
    """Rank every cut, with and without the TL, by predicted end-to-end latency over the network."""
    from tlcut.toolchain import plan as planmod

    net = planmod.network_from_args(a.bandwidth, a.latency, a.down_bandwidth, a.network, a.device_name, a.edge_name,
                                    a.wire_overhead)
    dev = planmod.load_profile(a.device, "device")
    edge = planmod.load_profile(a.edge, "edge")
    cons = planmod.Constraints(min_cut=a.min_cut, max_device_ms=a.max_device_ms, max_upload_bytes=a.max_upload_bytes,
                               tl=a.tl)
    result = planmod.plan(dev, edge, net, cons)
    if a.plot:
        planmod.plot(result, a.plot)
        _say(f"[plan] wrote {a.plot}")
    if a.json or (a.output and a.output != "-"):
        _emit_json(result, a.output if a.output else None)
    if not a.json:
        print(planmod.format_table(result, top=a.top))
    return 0


def _args_plan(p):
    p.add_argument("--device", required=True, metavar="PROFILE", help="profile JSON from `tlcut bench --role device`")
    p.add_argument("--edge", required=True, metavar="PROFILE", help="profile JSON from `tlcut bench --role edge`")
    _add_network(p)
    g = p.add_argument_group("constraints")
    g.add_argument("--min-cut", type=int, default=None, metavar="K",
                   help="earliest cut allowed (privacy: nothing earlier leaves the device)")
    g.add_argument("--max-device-ms", type=float, default=None, help="most device compute time allowed")
    g.add_argument("--max-upload-bytes", type=int, default=None, help="most bytes allowed on the uplink per request")
    g.add_argument("--tl", default="both", choices=["on", "off", "both"], help="rank cuts with the TL, without, or both")
    p.add_argument("--top", type=int, default=10, help="rows to print (default 10)")
    p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    p.add_argument("-o", "--output", help="write the plan JSON here")
    p.add_argument("--plot", metavar="PNG", help="write predicted latency per cut, stacked by component")


@verb("serve")
def cmd_serve(a):
    """The edge: serve the tail of the given cut(s) to devices over ZeroMQ."""
    import logging

    from tlcut.bundle import Bundle
    from tlcut.runtime.serve import Edge

    from tlcut.runtime.security import ServerCurve

    from tlcut.runtime.security import require_policy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.allow and not a.key:
        raise TlcutError("--allow needs the edge's own key pair: --key edge.key_secret")
    curve = ServerCurve.from_files(a.key, a.allow) if a.key else None
    require_policy(a.bind, curve, a.insecure, "edge")  # before the halves load, not after
    edge = Edge(Bundle.open(a.bundle), a.cut, tl=a.tl, backend=a.backend, threads=a.threads,
                max_message_bytes=a.max_message_mb << 20)
    try:
        edge.serve(a.bind, max_requests=a.max_requests, curve=curve, insecure=a.insecure, max_queue=a.max_queue,
                   metrics_port=a.metrics_port)
    finally:
        edge.close()
    return 0


def _args_serve(p):
    _add_bundle(p)
    p.add_argument("--cut", action="append", required=True, metavar="K",
                   help="cut to serve (index, tensor or layer name; 'input' for the whole model); repeatable")
    p.add_argument("--tl", default="both", choices=["on", "off", "both"],
                   help="serve the tail with EdgeTL, without, or both (default both, where compiled)")
    p.add_argument("--bind", default="tcp://*:5555", help="ZeroMQ endpoint to listen on (default tcp://*:5555)")
    p.add_argument("--max-message-mb", type=int, default=256, help="largest request accepted, MiB (default 256)")
    p.add_argument("--max-requests", type=int, default=None, help="stop after this many messages (default: never)")
    p.add_argument("--max-queue", type=int, default=64, help="messages one device may have queued (default 64)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics and /health/{live,ready} over HTTP on this port")
    g = p.add_argument_group("security (CURVE; required outside loopback)")
    g.add_argument("--key", metavar="SECRET", help="the edge's key pair, NAME.key_secret from `tlcut keys`")
    g.add_argument("--allow", metavar="DIR", help="folder of admitted devices' public keys (NAME.key)")
    g.add_argument("--insecure", action="store_true", help="plain TCP outside loopback (lab links only)")
    _add_backend(p)
    _add_threads(p)


@verb("run")
def cmd_run(a):
    """The device: run the head, send the payload to the edge, report per-request latency."""
    from tlcut.bundle import Bundle
    from tlcut.runtime import run as rt

    b = Bundle.open(a.bundle)
    if a.requests < 1:
        raise TlcutError(f"--requests must be at least 1, got {a.requests}")
    xs = rt.inputs(b, a.images, a.requests + a.warmup)
    from tlcut.runtime.security import ClientCurve

    if bool(a.key) != bool(a.edge_key):
        raise TlcutError("CURVE needs both --key (this device's NAME.key_secret) and --edge-key (the edge's NAME.key)")
    curve = ClientCurve.from_files(a.key, a.edge_key) if a.key else None
    with rt.Device(b, a.cut, tl=a.tl == "on", edge=a.edge, backend=a.backend, threads=a.threads,
                   timeout_s=a.timeout, encoding=a.encoding, retries=a.retries, fallback=a.fallback == "on",
                   curve=curve, insecure=a.insecure) as dev:
        def show(rec):
            if a.verbose:
                _say(f"[run] {rec['i']:4d} total {rec['total_ms']:8.2f} ms  device {rec['device_ms']:7.2f}  "
                     f"transfer {rec['transfer_ms']:7.2f}  edge {rec['edge_ms']:7.2f}")

        records, summary = rt.run(dev, xs, warmup=a.warmup, on_record=show)
        summary["counts"] = dev.report()
        result = {"plan": dev.plan.label, "cut": dev.plan.cut_index, "tl": dev.plan.tl, "edge": a.edge,
                  "encoding": a.encoding, "summary": summary, "requests": records}
    if a.output:
        _emit_json(result, a.output)
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(rt.format_summary(dev.plan.label, summary))
    return 0


def _args_run(p):
    _add_bundle(p)
    p.add_argument("--cut", required=True, metavar="K",
                   help="cut to run at (index, tensor or layer name), 'device' (all on the device) or 'input' (all on the edge)")
    p.add_argument("--tl", default="on", choices=["on", "off"], help="send through the TL (default on)")
    p.add_argument("--encoding", default="raw", choices=["raw", "float16", "int8"],
                   help="wire format of the payload: raw, float16, or int8 with a per-tensor scale (default raw)")
    p.add_argument("--edge", help="the edge's ZeroMQ endpoint, e.g. tcp://192.0.2.2:5555")
    p.add_argument("--images", metavar="DIR", help="folder of images to send (default: random tensors)")
    p.add_argument("--requests", type=int, default=30, help="timed requests (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for each attempt (default 10)")
    p.add_argument("--retries", type=int, default=2, help="resend a request this often on a fresh socket (default 2)")
    p.add_argument("--fallback", default="on", choices=["on", "off"],
                   help="run the whole model here when the edge is unreachable (default on)")
    g = p.add_argument_group("security (CURVE; required outside loopback)")
    g.add_argument("--key", metavar="SECRET", help="this device's key pair, NAME.key_secret from `tlcut keys`")
    g.add_argument("--edge-key", metavar="PUBLIC", help="the edge's public key, NAME.key (pinned)")
    g.add_argument("--insecure", action="store_true", help="plain TCP outside loopback (lab links only)")
    p.add_argument("--json", action="store_true", help="print the summary and every request as JSON")
    p.add_argument("-o", "--output", help="write the JSON here")
    p.add_argument("-v", "--verbose", action="store_true", help="print every request")
    _add_backend(p)
    _add_threads(p)


@verb("testbed")
def cmd_testbed(a):
    """Emulate device, edge and uplink on this machine (root): up, exec device|edge -- CMD, down, status."""
    from tlcut.runtime import testbed as tbm

    if a.action == "up":
        cfg = tbm.Config(bandwidth_mbps=a.bandwidth, latency_ms=a.latency, device_quota=a.device_quota,
                         device_cpus=a.device_cpus, edge_cpus=a.edge_cpus, port=a.port, delay=a.delay)
        tb = tbm.Testbed(cfg, name=a.name, log=_say)
        try:
            state = tb.up()
            tbm.save(state)
        except BaseException:
            tb.down()
            raise
        print(f"testbed '{state.name}' is up: devices connect to {state.device_endpoint}, the edge binds {state.edge_bind}")
        print(f"  tlcut testbed exec edge -- tlcut serve BUNDLE --cut K --bind {state.edge_bind}")
        print(f"  tlcut testbed exec device -- tlcut run BUNDLE --cut K --edge {state.device_endpoint}")
        print("  tlcut testbed down")
        return 0
    state = tbm.load(a.name)
    if a.action == "down":
        tbm.teardown_saved(state)
        _say(f"[testbed] '{state.name}' torn down")
        return 0
    if a.action == "status":
        print(json.dumps({"name": state.name, "device_endpoint": state.device_endpoint, "edge_bind": state.edge_bind,
                          "delay": state.delay_method, "config": vars(state.config)}, indent=1))
        return 0
    role, cmd = a.role, list(a.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    elif cmd and cmd[0].startswith("-"):
        raise TlcutError(f"options go before the role: tlcut testbed exec [--name N] {role} -- COMMAND [ARGS...]")
    if not cmd:
        raise TlcutError("usage: tlcut testbed exec [--name N] device|edge -- COMMAND [ARGS...]")
    if cmd[0] == "tlcut":
        cmd = [sys.executable, "-m", "tlcut", *cmd[1:]]
    tb = tbm.Testbed(state=state, log=_say)
    return tb.run(role, cmd).returncode


def _args_testbed(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build a testbed and leave it up")
    up.add_argument("--bandwidth", type=float, default=57.0, metavar="MBPS", help="uplink rate (default 57)")
    up.add_argument("--latency", type=float, default=28.0, metavar="MS", help="round-trip latency (default 28)")
    up.add_argument("--device-quota", type=float, default=0.2, metavar="CPUS",
                    help="CPU the device may use, in CPUs (default 0.2: about 5x slower than one edge core)")
    up.add_argument("--device-cpus", default="0", help="cores the device is pinned to (default 0)")
    up.add_argument("--edge-cpus", default="1", help="cores the edge is pinned to (default 1)")
    up.add_argument("--port", type=int, default=5555, help="edge port (default 5555)")
    up.add_argument("--delay", default="auto", choices=["auto", "netem", "relay", "none"],
                    help="how latency is added: netem where the kernel has it, else tlcut's delay relay (default auto)")
    ex = sub.add_parser("exec", help="run a command inside the device or the edge")
    ex.add_argument("role", choices=["device", "edge"])
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    sub.add_parser("down", help="tear a testbed down")
    sub.add_parser("status", help="show a testbed")
    for sp in sub.choices.values():
        sp.add_argument("--name", help="testbed name (default: new and random for up, the only one for the rest)")


@verb("demo")
def cmd_demo(a):
    """The main job: export, bench in the testbed, plan, then serve and run the best plans; predicted vs measured."""
    from tlcut.demo import demo

    demo(a.model, a.out, bandwidth=a.bandwidth, latency=a.latency, device_quota=a.device_quota, requests=a.requests,
         warmup=a.warmup, bench_iterations=a.iterations, bundle=a.bundle, input_shape=a.input_shape,
         min_cut=a.min_cut, say=_say)
    return 0


def _args_demo(p):
    p.add_argument("model", nargs="?", default="DenseNet169", help="architecture or model file (default DenseNet169)")
    p.add_argument("-o", "--out", help="results folder (default results/demo-MODEL)")
    p.add_argument("--bundle", help="reuse this bundle instead of exporting")
    p.add_argument("--input-shape", metavar="H,W,C", help="input size for the architecture")
    p.add_argument("--bandwidth", type=float, default=57.0, metavar="MBPS", help="uplink rate (default 57, 5G)")
    p.add_argument("--latency", type=float, default=28.0, metavar="MS", help="round-trip latency (default 28)")
    p.add_argument("--device-quota", type=float, default=0.2, metavar="CPUS", help="device CPU (default 0.2)")
    p.add_argument("--requests", type=int, default=30, help="timed requests per plan (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests per plan (default 3)")
    p.add_argument("--iterations", type=int, default=20, help="bench iterations (default 20)")
    p.add_argument("--min-cut", type=int, default=None, metavar="K",
                   help="privacy: plan only cuts K or later (the paper used 5); edge only is then not run")


def _add_data(p):
    p.add_argument("--data", help="'elpv' (the embedded solar-cell set) or a folder with one subfolder per class")
    p.add_argument("--limit", type=int, help="use only this many images (stratified), for quick runs")


@verb("train")
def cmd_train(a):
    """Train a baseline classifier on the data (CPU) and save it as a .keras model `tlcut export` takes."""
    from tlcut.toolchain.train import train

    train(a.model, a.data or "elpv", a.output, size=a.size, channels=a.channels, task=a.task, epochs=a.epochs,
          lr=a.lr, batch=a.batch_size, seed=a.seed, patience=a.patience, limit=a.limit, say=_say)
    return 0


def _args_train(p):
    p.add_argument("model", nargs="?", default="InspectNet", help="architecture name or .keras file (default InspectNet)")
    p.add_argument("-o", "--output", required=True, help="the .keras file to write (a .json report goes beside it)")
    _add_data(p)
    p.add_argument("--task", default="grade", choices=["grade", "binary"],
                   help="elpv: 4 defect grades, or functional/defective (default grade)")
    p.add_argument("--size", type=int, default=128, help="image size (default 128)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3], help="image channels (default 1)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=5, help="epochs without better validation accuracy before stopping")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")


@verb("retrain")
def cmd_retrain(a):
    """Insert the TL after a layer, fine-tune the TLModel, and split it into a bundle the runtime serves."""
    from tlcut.toolchain.train import retrain

    retrain(a.model, a.cut, a.output, data=a.data, epochs=a.epochs, lr=a.lr, batch=a.batch_size,
            patience=a.patience, limit=a.limit, force=a.force, say=_say)
    return 0


def _args_retrain(p):
    p.add_argument("model", help=".keras model written by `tlcut train`")
    p.add_argument("--cut", required=True, metavar="LAYER", help="Keras layer after which the TL goes (see `tlcut cuts`)")
    p.add_argument("-o", "--output", required=True, help="bundle to write")
    _add_data(p)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--force", action="store_true", help="replace an existing bundle")


@verb("eval")
def cmd_eval(a):
    """Accuracy of the deployed halves of a cut, run through the device and edge runtime."""
    from tqdm import tqdm

    from tlcut.bundle import Bundle
    from tlcut.toolchain.eval import evaluate

    b = Bundle.open(a.bundle)
    r = evaluate(b, a.cut, data=a.data, tl=a.tl == "on", encoding=a.encoding, split=a.split, limit=a.limit,
                 progress=lambda it: tqdm(it, desc="eval", unit="img", file=sys.stderr, leave=False, disable=None))
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        what = {"device": "device only", "input": "edge only"}.get(r["cut"], f"cut {r['cut']}{' + TL' if r['tl'] else ''}")
        print(f"{b.name} {what} ({r['encoding']}): accuracy {r['accuracy']:.4f} "
              f"on {r['n']} {r['split']} images; payload {r['payload_bytes']} B")
    return 0


def _args_eval(p):
    _add_bundle(p)
    p.add_argument("--cut", required=True, help="cut index/tensor/layer, 'device' or 'input'")
    p.add_argument("--tl", default="on", choices=["on", "off"])
    p.add_argument("--encoding", default="raw", choices=["raw", "float16", "int8"], help="wire format of the payload")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--json", action="store_true")
    _add_data(p)


@verb("perf")
def cmd_perf(a):
    """Load an edge from many device processes at once; every result is checked against the full model."""
    from tlcut.runtime.perf import perf

    r = perf(a.bundle, a.cut, a.edge, devices=a.devices, requests=a.requests, tl=a.tl == "on", timeout=a.timeout,
             retries=a.retries, fallback=a.fallback == "on", key=a.key, edge_key=a.edge_key, insecure=a.insecure,
             interval=a.interval)
    timeline = r.pop("timeline")
    if a.output:
        _emit_json({**r, "timeline": timeline}, a.output)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        lat = r["latency_ms"]
        print(f"{r['devices']} devices x {r['requests_per_device']} requests: {r['ok']} correct from the edge, "
              f"{r['fell_back']} ran locally, {r['failed']} failed, {r['wrong']} wrong; retried {r['retried']}; "
              f"{r['throughput_rps']:.1f} req/s; latency median {lat['median']:.2f} ms, p99 {lat['p99']:.2f} ms")
    return 0 if r["wrong"] == 0 and r["accounted"] else 1


def _args_perf(p):
    _add_bundle(p)
    p.add_argument("--cut", required=True, help="cut index/tensor/layer, or 'input'")
    p.add_argument("--tl", default="off", choices=["on", "off"])
    p.add_argument("--edge", required=True, help="the edge's ZeroMQ endpoint")
    p.add_argument("--devices", type=int, default=8, help="device processes (default 8)")
    p.add_argument("--requests", type=int, default=500, help="requests per device (default 500)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds per attempt (default 2)")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--fallback", default="on", choices=["on", "off"])
    p.add_argument("--interval", type=float, default=0.0, metavar="S", help="pause between a device's requests")
    p.add_argument("--key", metavar="SECRET")
    p.add_argument("--edge-key", metavar="PUBLIC")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--output", help="write the JSON (with every request's outcome over time) here")


@verb("calibrate")
def cmd_calibrate(a):
    """Measure the link to a running edge (ping, uplink goodput) and write it as a Scission network CSV."""
    from tlcut.bundle import Bundle
    from tlcut.calibrate.link import measure, write_csv
    from tlcut.runtime.security import ClientCurve

    curve = ClientCurve.from_files(a.key, a.edge_key) if a.key and a.edge_key else None
    m = measure(Bundle.open(a.bundle), a.edge, a.cut, pings=a.pings, requests=a.requests, tl=a.tl == "on",
                curve=curve, insecure=a.insecure)
    print(f"ping {m['ping_ms']:.2f} ms (p90 {m['ping_ms_p90']:.2f}), uplink {m['bandwidth_mbps']:.2f} Mbit/s "
          f"over {m['requests']} requests of {m['payload_bytes']} B")
    if a.output:
        write_csv(a.output, a.device_name, a.edge_name, m)
        _say(f"[calibrate] wrote {a.output}; use it with `tlcut plan --network {a.output}`")
    return 0


def _args_calibrate(p):
    _add_bundle(p)
    p.add_argument("--edge", required=True, help="the running edge's endpoint")
    p.add_argument("--cut", default="input", help="a cut the edge serves, or 'input' (default: the model input)")
    p.add_argument("--tl", default="off", choices=["on", "off"])
    p.add_argument("--pings", type=int, default=20)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("-o", "--output", help="Scission CSV to write")
    p.add_argument("--device-name", default="device")
    p.add_argument("--edge-name", default="edge")
    p.add_argument("--key", metavar="SECRET")
    p.add_argument("--edge-key", metavar="PUBLIC")
    p.add_argument("--insecure", action="store_true")


@verb("keys")
def cmd_keys(a):
    """Make CURVE key pairs for edges and devices (NAME.key public, NAME.key_secret private)."""
    from tlcut.runtime.security import make_keys

    for pub, sec in make_keys(a.output, a.names, force=a.force):
        print(f"{pub}  (public: give it to the other side)\n{sec}  (secret: keep it on this host)")
    return 0


def _args_keys(p):
    p.add_argument("names", nargs="*", help="one name per key pair, e.g. edge device1 device2")
    p.add_argument("-o", "--output", default="keys", help="folder to write (default keys)")
    p.add_argument("--force", action="store_true", help="replace existing keys")


# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from tlcut import __version__

    p = argparse.ArgumentParser(
        prog="tlcut",
        description="Cut a DNN between a device and an edge server, with a Transfer Layer at the cut.",
        epilog="pipeline: export -> cuts -> bench (device, edge) -> plan -> compile -> serve / run",
    )
    p.add_argument("--version", action="version", version=f"tlcut {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    for name, fn in VERBS.items():
        sp = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        globals()[f"_args_{name}"](sp)
        sp.set_defaults(func=fn)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    try:
        return a.func(a) or 0
    except TlcutError as e:
        print(f"tlcut: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tlcut: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
