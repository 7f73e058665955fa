"""The Python edge against the shared behaviour table (tests/vectors/behaviour.json), over ZeroMQ,
and against random frames (Hypothesis): every message gets exactly one well-formed reply and the
edge keeps serving. tests/test_c_edge.py runs the same table against the C edge."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import behaviour
from tlcut.bundle import Bundle
from tlcut.runtime import protocol as P
from tlcut.runtime.serve import Edge, local_edge

SERVE = behaviour.VECTORS["serve"]


@pytest.fixture(scope="module")
def bundle():
    return Bundle.open(behaviour.ROOT / behaviour.VECTORS["bundle"])


@pytest.fixture(scope="module")
def endpoint(bundle):
    with local_edge(bundle, SERVE["cuts"], tl=SERVE["tl"], max_message_bytes=SERVE["max_message_mb"] << 20) as ep:
        yield ep


def test_every_row_of_the_behaviour_table(endpoint):
    results = behaviour.run_rows(endpoint)
    assert len(results) == len(behaviour.VECTORS["rows"]) >= 40
    failed = [(name, why) for name, why in results if why]
    assert not failed, "\n".join(f"{n}: {w}" for n, w in failed)


def test_the_table_can_fail(endpoint):
    """The runner notices a wrong reply: the same rows with one expectation changed fail."""
    row = next(r for r in behaviour.VECTORS["rows"] if r["expect"]["type"] == "RESULT")
    bad = {**row, "expect": {**row["expect"], "values": [v + 1 for v in row["expect"]["values"]]}}
    good_reply = _send(endpoint, behaviour.frames_of(row))
    assert behaviour.mismatch(row, good_reply) is None
    assert "differs" in behaviour.mismatch(bad, good_reply)
    wrong_code = {**row, "expect": {**row["expect"], "type": "ERROR"}}
    assert "type is RESULT" in behaviour.mismatch(wrong_code, good_reply)


def _send(ep, frames):
    import zmq

    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    s.send_multipart(frames)
    assert s.poll(5000)
    reply = s.recv_multipart()
    s.close()
    return reply


@pytest.fixture(scope="module")
def handler(bundle):
    e = Edge(bundle, SERVE["cuts"], tl=SERVE["tl"], max_message_bytes=SERVE["max_message_mb"] << 20)
    yield e
    e.close()


def _header_bytes():
    """Headers near valid ones: every field drawn, magic and version usually right."""
    return st.builds(
        lambda magic, version, mtype, dtype, rank, rid, cut, flags, enc, plen, scale, dims: P.HEADER.pack(
            magic, version, mtype, dtype, rank, rid, cut, flags, enc, 0, plen, scale, 0, 0, 0, *dims),
        st.sampled_from([b"TLCT", b"TLCX"]), st.sampled_from([1, 1, 1, 2]), st.integers(0, 7),
        st.integers(0, 9), st.integers(0, 9), st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 3, 42, P.INPUT_CUT]),
        st.integers(0, 3), st.integers(0, 4), st.integers(0, 2**16), st.floats(allow_nan=True, width=32),
        st.lists(st.sampled_from([0, 1, 3, 4, 7, 2**32 - 1]), min_size=8, max_size=8))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.one_of(
    st.lists(st.binary(max_size=200), max_size=4),
    st.tuples(_header_bytes(), st.binary(max_size=1024)).map(list),
), peer=st.sampled_from([None, b"a", b"b"]))
def test_random_frames_always_get_one_well_formed_reply(handler, frames, peer):
    reply = handler.handle(frames, peer=peer)
    assert len(reply) == 2
    h, body = P.decode([bytes(reply[0]), bytes(reply[1])])
    assert h.type in (P.RESULT, P.ERROR, P.PONG)
    if h.type == P.ERROR:
        assert h.status in P.ERRORS and isinstance(body, str) and body
    else:
        assert h.request_id == P.Header.unpack(frames[0]).request_id


@pytest.mark.parametrize("max_batch", [1, 4])
def test_a_message_of_many_frames_is_never_held_whole_by_the_edge(bundle, monkeypatch, max_batch):
    """48 frames, each under the limit: the edge reads them one by one and keeps only the
    protocol's two (those past them are released as they are read), answers bad frame with the
    whole count, and serves the next request; with batching as without."""
    from tlcut.runtime.edge import EdgeCore, serving

    seen = []
    real = EdgeCore.handle_batch

    def spy(self, requests):
        seen.extend(len(frames) for frames, _, _ in requests)
        return real(self, requests)

    monkeypatch.setattr(EdgeCore, "handle_batch", spy)
    e = Edge(bundle, ["1"], tl="off", max_message_bytes=SERVE["max_message_mb"] << 20, max_batch=max_batch)
    try:
        with serving(e) as ep:
            good = [bytes(f) for f in P.tensor_frames(P.REQUEST, np.zeros((1, 4, 7, 7), np.float32), 5, 1)]
            h, body = P.decode(_send(ep, [good[0], good[1]] + [b"x" * 1024] * 46))
            assert (h.type, h.status) == (P.ERROR, P.E_BAD_FRAME) and "message has 48 frames" in body
            assert P.decode(_send(ep, good))[0].type == P.RESULT
    finally:
        e.close()
    assert seen and max(seen) <= 2, f"the edge held {max(seen)} frames of one message"
