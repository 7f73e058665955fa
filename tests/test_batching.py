"""Batching in tlcut's own edge: tails compiled with a batch dimension, requests that arrive
together run as one batch, each one still validated and answered on its own."""

import time

import numpy as np
import onnxruntime as ort
import pytest
import zmq
from onnx import helper, numpy_helper

from tlcut.bundle import BATCH_DYNAMIC, Bundle
from tlcut.errors import TlcutError
from tlcut.lab.loopback import free_port
from tlcut.models import graphs
from tlcut.runtime import protocol as P
from tlcut.runtime.edge import serving
from tlcut.runtime.serve import Edge
from tlcut.toolchain import surgery
from tlcut.toolchain.compile import compile_cuts, parse_batch


@pytest.fixture(scope="module")
def bundle(small_bundle):
    b = small_bundle(compile={"batch": "dynamic"})
    compile_cuts(b, [b.cuts[1]], tl="off", batch=4)
    return Bundle.open(b.path)


@pytest.fixture(scope="module")
def edge(bundle):
    e = Edge(bundle, ["0", "1"], tl="both", max_batch=8)
    yield e
    e.close()


def tail_input(bundle, cut, tl, seed):
    a = bundle.find("tail", cut, tl)
    return np.random.default_rng(seed).standard_normal(a.input["shape"]).astype(np.float32)


def tail_output(bundle, cut, tl, x):
    s = ort.InferenceSession(str(bundle.runnable("tail", cut, tl)), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def request(x, rid, cut, tl=False):
    return [bytes(f) for f in P.tensor_frames(P.REQUEST, x, rid, cut, P.FLAG_TL if tl else 0)]


def decode(reply):
    return P.decode([bytes(reply[0]), bytes(reply[1])])


def test_compile_writes_batched_tails_beside_the_batch_1_halves(bundle):
    rows = [a for a in bundle.artifacts if a.batch != 1]
    assert {(a.cut, a.tl, a.batch) for a in rows if a.engine == "onnx"} == {
        (0, False, "dynamic"), (0, True, "dynamic"), (1, False, "dynamic"), (1, True, "dynamic"), (1, False, 4)}
    dyn = bundle.find("tail", 0, False, batch=BATCH_DYNAMIC)
    assert dyn.input["shape"][0] == -1 and dyn.file.endswith(".batch-dynamic.onnx") and (bundle.path / dyn.file).is_file()
    assert bundle.find("tail", 1, False, batch=4).input["shape"][0] == 4
    # what every other reader asks for is still the batch-1 tail
    assert bundle.find("tail", 0, False).batch == 1 and bundle.find("tail", 0, False).input["shape"][0] == 1
    assert bundle.batched_tail(0, True).batch == BATCH_DYNAMIC
    raw = bundle.manifest["artifacts"]
    assert all("batch" not in r for r in raw if r["file"].count("batch-") == 0)


def test_batched_results_equal_unbatched_per_request(bundle, edge):
    keys = [(0, False), (0, True), (1, False), (0, False), (1, True), (0, True), (0, False)]
    xs = [tail_input(bundle, c, tl, seed=i) for i, (c, tl) in enumerate(keys)]
    before = edge.stats["batches"]
    replies = edge.handle_batch([(request(x, 100 + i, c, tl), f"peer{i}".encode(), time.perf_counter())
                                 for i, (x, (c, tl)) in enumerate(zip(xs, keys))])
    assert edge.stats["batches"] - before == 4  # (0, off) x3, (0, TL) x2, (1, off), (1, TL): one run each
    ys = []
    for i, ((c, tl), x, reply) in enumerate(zip(keys, xs, replies)):
        h, y = decode(reply)
        assert h.type == P.RESULT and h.request_id == 100 + i and h.cut_id == c and bool(h.flags & P.FLAG_TL) == tl
        assert y.shape[0] == 1
        np.testing.assert_allclose(y, tail_output(bundle, c, tl, x), rtol=1e-5, atol=1e-5)
        ys.append(y)
    assert np.abs(ys[0] - ys[3]).max() > 1e-3, "the output must move with the input, or the check proves nothing"


def test_a_static_batch_is_padded_and_split(bundle):
    from tlcut.runtime import backends

    e = Edge(bundle, ["1"], tl="off", max_batch=8)
    assert e.batched[(1, 0)][2] is None  # the symbolic batch is preferred where both exist
    a = bundle.find("tail", 1, False, batch=4)
    e.batched[(1, 0)] = (backends.get().runner(bundle.path / a.file).activate(), a.input["name"], 4)
    xs = [tail_input(bundle, 1, False, seed=50 + i) for i in range(6)]
    before = e.stats["batches"]
    replies = e.handle_batch([(request(x, i + 1, 1), b"p", time.perf_counter()) for i, x in enumerate(xs)])
    assert e.stats["batches"] - before == 2  # 4, then 2 padded to 4
    for i, (x, reply) in enumerate(zip(xs, replies)):
        h, y = decode(reply)
        assert h.request_id == i + 1
        np.testing.assert_allclose(y, tail_output(bundle, 1, False, x), rtol=1e-5, atol=1e-5)
    e.close()


def test_a_bad_request_in_a_batch_gets_its_error_and_the_others_their_results(bundle, edge):
    good = [tail_input(bundle, 0, False, seed=20 + i) for i in range(3)]
    wrong_shape = np.zeros((1, 4, 9, 8), np.float32)
    batch = [
        (request(good[0], 1, 0), b"a"),
        (request(wrong_shape, 2, 0), b"b"),                 # wrong tensor
        (request(good[1], 3, 0), b"c"),
        ([b"garbage"], b"d"),                                # bad frame
        (request(good[1], 5, 7), b"e"),                      # wrong cut
        (request(good[2], 6, 0), b"f"),
        (request(good[2], 6, 0), b"f"),                      # replayed id on f's connection
        ([P.Header(type=P.PING, request_id=8).pack(), b""], b"g"),
    ]
    t0 = time.perf_counter()
    replies = edge.handle_batch([(f, peer, t0) for f, peer in batch])
    got = [decode(r)[0] for r in replies]
    assert [h.type for h in got] == [P.RESULT, P.ERROR, P.RESULT, P.ERROR, P.ERROR, P.RESULT, P.ERROR, P.PONG]
    assert [h.request_id for h in got] == [1, 2, 3, 0, 5, 6, 6, 8]
    assert [h.status for h in got if h.type == P.ERROR] == [P.E_WRONG_TENSOR, P.E_BAD_FRAME, P.E_WRONG_CUT, P.E_REPLAY]
    for x, r in zip(good, (replies[0], replies[2], replies[5])):
        np.testing.assert_allclose(decode(r)[1], tail_output(bundle, 0, False, x), rtol=1e-5, atol=1e-5)


def test_an_engine_failure_fails_only_its_own_batch(bundle):
    e = Edge(bundle, ["0", "1"], tl="off", max_batch=4)
    br = e.batched[(1, 0)][0]
    br._infer_impl = lambda feed: (_ for _ in ()).throw(RuntimeError("boom"))
    x0, x1 = tail_input(bundle, 0, False, 1), tail_input(bundle, 1, False, 2)
    t0 = time.perf_counter()
    replies = e.handle_batch([(request(x1, 1, 1), b"a", t0), (request(x0, 2, 0), b"b", t0),
                              (request(x1, 3, 1), b"c", t0), (request(x0, 4, 0), b"d", t0)])
    got = [decode(r)[0] for r in replies]
    assert [(h.type, h.request_id) for h in got] == [(P.ERROR, 1), (P.RESULT, 2), (P.ERROR, 3), (P.RESULT, 4)]
    assert got[0].status == P.E_INTERNAL and e.errors["internal error"] == 2
    e.close()


def dealer(ep):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s


def test_requests_sent_together_over_the_socket_are_batched_and_answered_by_id(bundle):
    e = Edge(bundle, ["0"], tl="off", max_batch=8)
    xs = [tail_input(bundle, 0, False, seed=30 + i) for i in range(6)]
    with serving(e, max_queue_delay_us=200_000) as ep:
        socks = [dealer(ep) for _ in range(3)]
        time.sleep(0.2)  # connected before anything is sent
        for i, x in enumerate(xs):
            socks[i % 3].send_multipart(request(x, 10 + i, 0))
        got = {}
        for i, s in enumerate(socks):
            for _ in range(2):
                assert s.poll(10_000), "no reply"
                h, y = P.decode(s.recv_multipart())
                got[h.request_id] = (i, y, h)
        for s in socks:
            s.close()
        metrics = e.metrics()
    assert sorted(got) == list(range(10, 16))
    for i, x in enumerate(xs):
        sock_i, y, h = got[10 + i]
        assert sock_i == i % 3 and h.type == P.RESULT and h.server_us > 0  # each reply on its own connection
        np.testing.assert_allclose(y, tail_output(bundle, 0, False, x), rtol=1e-5, atol=1e-5)
    assert e.stats["ok"] == 6 and e.stats["batches"] < 6
    assert f"tlcut_edge_batches_total {e.stats['batches']}" in metrics and "tlcut_edge_requests_total 6" in metrics
    e.close()


def test_a_lone_request_waits_at_most_the_queue_delay(bundle):
    """With a queue delay a lone request waits for company up to the delay, never much beyond it;
    without one it does not wait. Both are timed in one run, so a busy machine slows both alike."""
    delay_us = 300_000
    x = tail_input(bundle, 0, False, seed=40)
    want = tail_output(bundle, 0, False, x)

    def lone(delay):
        e = Edge(bundle, ["0"], tl="off", max_batch=8)
        with serving(e, max_queue_delay_us=delay) as ep:
            s = dealer(ep)
            time.sleep(0.2)
            t = time.perf_counter()
            s.send_multipart(request(x, 1, 0))
            assert s.poll(5_000), "no reply"
            h, y = P.decode(s.recv_multipart())
            took = time.perf_counter() - t
            s.close()
        e.close()
        assert h.type == P.RESULT and h.request_id == 1
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        return took, h.server_us

    took0, server0 = lone(0)
    took, server = lone(delay_us)
    assert server >= 0.8 * delay_us, server  # its own receipt-to-reply time includes the wait
    assert server0 < 0.5 * delay_us and took0 < took - 0.5 * delay_us * 1e-6, (took0, took)
    assert took - took0 < delay_us * 1e-6 + 0.5, (took0, took)


def test_an_edge_without_batched_tails_batches_nothing_but_still_serves(small_bundle, caplog):
    b = small_bundle("chain", tl="off", cuts=[0], hw=5, c=2)
    e = Edge(b, ["0"], tl="off", max_batch=4)
    assert not e.batched and "no batched tail" in caplog.text and "--batch dynamic" in caplog.text
    xs = [tail_input(b, 0, False, seed=i) for i in range(3)]
    replies = e.handle_batch([(request(x, i + 1, 0), b"p", time.perf_counter()) for i, x in enumerate(xs)])
    ys = [decode(r)[1] for r in replies]
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, tail_output(b, 0, False, x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(ys[0], ys[1]), "the output does not move with the input"
    e.close()


def _flatten_classifier():
    """Keras' Flatten as tf2onnx writes it: Reshape to [1, -1], the batch 1 baked in."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((2 * 3 * 3, 5)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return graphs.make(nodes, [w, shape], [1, 2, 3, 3], [1, 5])


def _batch_summing():
    """A graph that sums over the batch axis: right at batch 1, wrong at any other."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)]
    return graphs.make(nodes, [axes], [1, 2, 3, 3], [1, 2, 3, 3])


def test_a_baked_batch_in_a_reshape_is_rewritten_and_checked():
    """The rewritten Reshape keeps each row apart: at batch 3 every row is what batch 1 gives for it
    (as is, the baked [1, -1] would flatten the stack into one row of 3x as many features)."""
    m = _flatten_classifier()
    one = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    xs = np.random.default_rng(2).standard_normal((3, 2, 3, 3)).astype(np.float32)
    want = np.concatenate([one.run(None, {"x": x[None]})[0] for x in xs])
    assert not np.allclose(want[0], want[1]), "the output does not move with the input"
    for batch in ("dynamic", 3):
        batched = surgery.with_batch(m, batch)
        surgery.check_batched(m, batched, batch, "flatten")
        got = ort.InferenceSession(batched.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
        assert got.shape == (3, 5)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_graph_that_mixes_the_batch_is_refused_in_one_line():
    m = _batch_summing()
    with pytest.raises(TlcutError, match="other results at batch dynamic") as e:
        surgery.check_batched(m, surgery.with_batch(m, "dynamic"), "dynamic", "the tail of cut 0")
    assert "\n" not in str(e.value)


def test_flags_are_checked():
    assert parse_batch("dynamic") == "dynamic" and parse_batch("8") == 8
    for bad in ("0", "-2", "x"):
        with pytest.raises(TlcutError, match="--batch"):
            parse_batch(bad)
    with pytest.raises(TlcutError, match="--max-batch"):
        Edge(None, ["0"], max_batch=0)


def test_cli_serve_flags(bundle):
    """`tlcut serve --max-batch 4 --max-queue-delay-us 1000` answers a device."""
    import subprocess
    import sys

    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "tlcut", "serve", str(bundle.path), "--cut", "0", "--tl", "off",
                          "--bind", f"tcp://127.0.0.1:{port}", "--max-batch", "4", "--max-queue-delay-us", "1000",
                          "--max-requests", "2"], stderr=subprocess.PIPE, text=True)
    try:
        s = dealer(f"tcp://127.0.0.1:{port}")
        x = tail_input(bundle, 0, False, seed=7)
        s.send_multipart(request(x, 1, 0))
        s.send_multipart(request(x, 2, 0))
        for rid in (1, 2):
            assert s.poll(60_000), "no reply"
            h, y = P.decode(s.recv_multipart())
            assert h.type == P.RESULT
            np.testing.assert_allclose(y, tail_output(bundle, 0, False, x), rtol=1e-5, atol=1e-5)
        s.close()
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0 and "batching up to 4 requests" in err
