"""CURVE on by default outside loopback, key files, and an edge that admits only listed devices."""

import socket
import threading
import time

import numpy as np
import pytest
import zmq
import zmq.utils.z85

from tlcut import cli
from tlcut.errors import TlcutError
from tlcut.runtime import security as S
from tlcut.runtime.client import EdgeClient, EdgeError, EdgeUnavailable, wait_for_edge
from tlcut.runtime.run import Device
from tlcut.runtime.serve import Edge


from tlcut.lab.loopback import free_port as _port
from tlcut.runtime.edge import serving


@pytest.mark.parametrize("ep, local", [("tcp://127.0.0.1:5", True), ("tcp://localhost:5", True), ("ipc:///tmp/x", True),
                                       ("tcp://192.0.2.2:5555", False), ("tcp://*:5555", False), ("tcp://10.0.0.1:1", False)])
def test_loopback_detection(ep, local):
    assert S.is_loopback(ep) == local


def test_plain_tcp_outside_loopback_needs_insecure():
    with pytest.raises(TlcutError, match="refusing plain TCP"):
        S.require_policy("tcp://192.0.2.2:5555", None, False, "device")
    S.require_policy("tcp://192.0.2.2:5555", None, True, "device")  # allowed, with a warning
    S.require_policy("tcp://127.0.0.1:5555", None, False, "edge")


def test_keys_cli_and_errors(tmp_path, capsys):
    assert cli.main(["keys", "-o", str(tmp_path), "edge", "dev1"]) == 0
    assert (tmp_path / "edge.key").is_file() and (tmp_path / "edge.key_secret").stat().st_mode & 0o777 == 0o600
    assert cli.main(["keys", "-o", str(tmp_path), "edge"]) == 2
    assert "already exist" in capsys.readouterr().err
    with pytest.raises(TlcutError, match="holds no secret key"):
        S.load_secret(tmp_path / "edge.key")
    with pytest.raises(TlcutError, match="does not exist"):
        S.load_secret(tmp_path / "nope.key_secret")
    with pytest.raises(TlcutError, match="holds no public keys"):
        (tmp_path / "empty").mkdir()
        S.ServerCurve.from_files(tmp_path / "edge.key_secret", tmp_path / "empty")


def test_zap_decisions_match_the_c_edge():
    key = bytes(range(32))
    allowed = {zmq.utils.z85.encode(key)}
    ask = [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE"]
    assert S.zap_decide([*ask, key], allowed)[1:4] == [b"7", b"200", b"OK"]
    assert S.zap_decide([*ask, bytes(32)], allowed)[2] == b"400"
    assert S.zap_decide([*ask[:5], b"NULL"], allowed)[2] == b"400"
    assert S.zap_decide([*ask, key[:31]], allowed)[2] == b"400"
    assert S.zap_decide([b"2.0", *ask[1:], key], allowed)[2] == b"500"
    assert S.zap_decide([b"1.0"], allowed) == [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]


@pytest.fixture
def small(small_bundle):
    """A small residual model, compiled without the TL."""
    return small_bundle(tl="off", hw=8)


def test_only_listed_devices_are_served(tmp_path, small):
    b = small
    S.make_keys(tmp_path / "k", ["edge", "good", "bad"])
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "good.key").write_bytes((tmp_path / "k" / "good.key").read_bytes())
    ep = f"tcp://127.0.0.1:{_port()}"
    edge = Edge(b, ["1"])
    curve = S.ServerCurve.from_files(tmp_path / "k" / "edge.key_secret", tmp_path / "allow")
    try:
        with serving(edge, ep, curve=curve):
            good = S.ClientCurve.from_files(tmp_path / "k" / "good.key_secret", tmp_path / "k" / "edge.key")
            with Device(b, "1", edge=ep, curve=good) as dev:
                y, rec = dev.infer(np.ones(b.inputs[0]["shape"], np.float32))
                assert y.shape == tuple(b.outputs[0]["shape"]) and not rec["fallback"]
            bad = S.ClientCurve.from_files(tmp_path / "k" / "bad.key_secret", tmp_path / "k" / "edge.key")
            with EdgeClient(ep, timeout_s=1, curve=bad) as c:
                with pytest.raises(EdgeUnavailable):
                    c.ping()
            # a device that pins the wrong edge key cannot talk to this edge either
            wrong_pin = S.ClientCurve.from_files(tmp_path / "k" / "good.key_secret", tmp_path / "k" / "bad.key")
            with EdgeClient(ep, timeout_s=1, curve=wrong_pin) as c:
                with pytest.raises(EdgeUnavailable):
                    c.ping()
            assert edge.stats["ok"] == 1
            assert edge.zap.denied >= 1  # the unlisted key; the wrong pin fails before ZAP is asked
            assert f"tlcut_edge_connections_refused_total {edge.zap.denied}" in edge.metrics()
    finally:
        edge.close()


def test_fallback_runs_locally_and_comes_back(small):
    b = small
    ep = f"tcp://127.0.0.1:{_port()}"
    x = np.ones(b.inputs[0]["shape"], np.float32)
    with Device(b, "1", edge=ep, timeout_s=0.3, retries=1, fallback=True, probe_s=0.2) as dev:
        y0, rec = dev.infer(x)  # no edge yet
        assert rec["fallback"] and dev.edge_away and dev.client.retried == 1
        edge = Edge(b, ["1"])
        try:
            with serving(edge, ep):
                import time

                time.sleep(0.3)
                y1, rec = dev.infer(x)
                assert not rec["fallback"] and not dev.edge_away
                np.testing.assert_allclose(y0, y1, atol=1e-5)
                assert dev.report()["fell_back"] == 1 and dev.report()["offloaded"] == 1
        finally:
            edge.close()


def test_metrics_and_health_endpoints(small):
    import urllib.request

    b = small
    ep, mport = f"tcp://127.0.0.1:{_port()}", _port()
    edge = Edge(b, ["1"])
    try:
        with serving(edge, ep, metrics_port=mport):
            with Device(b, "1", edge=ep) as dev:
                for _ in range(3):
                    dev.infer(np.ones(b.inputs[0]["shape"], np.float32))
            with EdgeClient(ep) as c:
                with pytest.raises(EdgeError, match="wrong tensor"):
                    c.request(np.ones((1, 2), np.float32), 1)
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode()
            assert "tlcut_edge_requests_total 3" in text
            assert 'tlcut_edge_errors_total{kind="wrong_tensor"} 1' in text
            assert 'tlcut_edge_request_duration_us{quantile="0.99"}' in text
            assert urllib.request.urlopen(f"http://127.0.0.1:{mport}/health/ready").status == 200
    finally:
        edge.close()


def test_a_flooding_device_does_not_starve_another(small_bundle):
    """ZeroMQ fair-queues the edge's input per connection: a device that pipelines a thousand
    requests is served in turn with one that sends one at a time, which waits for about one
    request of the flood each time, not for all of it. The edge runs in its own process, as
    deployed (in this process it would share the GIL with the devices)."""
    import subprocess
    import sys
    import time

    import zmq

    from tlcut.runtime import protocol as P

    b = small_bundle(tl="off", hw=64, c=16)  # about a millisecond a request
    ep = f"tcp://127.0.0.1:{_port()}"
    edge = subprocess.Popen([sys.executable, "-m", "tlcut", "serve", str(b.path), "--cut", "0", "--tl", "off",
                             "--bind", ep, "--max-queue", "4000"], stderr=subprocess.DEVNULL)
    try:
        x = np.zeros(b.cuts[0].shape, np.float32)
        wait_for_edge(ep)
        flood = zmq.Context.instance().socket(zmq.DEALER)
        flood.setsockopt(zmq.LINGER, 0)
        flood.setsockopt(zmq.SNDHWM, 0)
        flood.connect(ep)
        n_flood = 3000
        for i in range(n_flood):
            flood.send_multipart(P.tensor_frames(P.REQUEST, x, i + 1, 0))
        time.sleep(0.05)  # the flood is queued at the edge first
        t0 = time.perf_counter()
        waits = []
        with EdgeClient(ep, timeout_s=30) as polite:
            for _ in range(10):
                t1 = time.perf_counter()
                polite.request(x, 0)
                waits.append(time.perf_counter() - t1)
        polite_done = time.perf_counter() - t0
        got = 0
        while got < n_flood and flood.poll(30000):
            flood.recv_multipart()
            got += 1
        flood_done = time.perf_counter() - t0
        flood.close()
        assert got == n_flood
        # the polite device finished long before the flood drained
        assert polite_done < flood_done / 3, (polite_done, flood_done, waits)
        assert float(np.median(waits)) < flood_done / 20, (waits, flood_done)
    finally:
        edge.terminate()
        edge.wait(10)


@pytest.mark.parametrize("argv, text", [
    (["perf", "{b}", "--cut", "1", "--edge", "tcp://127.0.0.1:9", "--key", "{k}/dev.key_secret"], "needs both --key"),
    (["calibrate", "{b}", "--edge", "tcp://127.0.0.1:9", "--key", "{k}/dev.key_secret"], "needs both --key"),
    (["run", "{b}", "--cut", "1", "--edge", "tcp://127.0.0.1:9", "--edge-key", "{k}/edge.key"], "needs both --key"),
    (["serve", "{b}", "--cut", "1", "--allow", "{k}"], "needs both --key"),
    (["serve", "{b}", "--cut", "1", "--key", "{k}/edge.key_secret"], "needs both --key"),
    (["calibrate", "{b}", "--edge", "tcp://127.0.0.1:9", "--key", "{k}/dev.key_secret", "--edge-key", "{k}/edge.key",
      "--insecure"], "--insecure asks for plain TCP"),
    (["perf", "{b}", "--cut", "1", "--edge", "tcp://192.0.2.9:5555"], "refusing plain TCP"),
    (["calibrate", "{b}", "--edge", "tcp://192.0.2.9:5555"], "refusing plain TCP"),
])
def test_security_flags_follow_one_rule_in_every_verb(small, tmp_path, capsys, argv, text):
    """Every verb with keys takes them through one flag group: the same rules, one-line errors."""
    S.make_keys(tmp_path / "k", ["edge", "dev"])
    args = [a.format(b=small.path, k=tmp_path / "k") for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlcut: error:") and text in err[0], err


def test_calibrate_uses_its_keys(small_bundle, tmp_path):
    """--key/--edge-key reach the link: an edge admitting only that key answers calibrate, which
    measures the link (exit 0, its Scission CSV written)."""
    S.make_keys(tmp_path / "k", ["edge", "dev"])
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "dev.key").write_bytes((tmp_path / "k" / "dev.key").read_bytes())
    from tlcut.calibrate.link import measure

    # cut 1 carries 1 MiB: even on loopback it takes longer to cross, CURVE-encrypted, than a ping
    b = small_bundle(tl="off", hw=256)
    curve_srv = S.ServerCurve.from_files(tmp_path / "k" / "edge.key_secret", tmp_path / "allow")
    edge = Edge(b, ["1"])
    try:
        with serving(edge, "tcp://127.0.0.1:*", curve=curve_srv):
            code = cli.main(["calibrate", str(b.path), "--edge", edge.endpoint, "--cut", "1", "--pings", "3",
                             "--requests", "3", "--key", str(tmp_path / "k" / "dev.key_secret"),
                             "--edge-key", str(tmp_path / "k" / "edge.key"), "-o", str(tmp_path / "link.csv")])
            assert code == 0
            assert edge.stats["ping"] >= 3 and edge.stats["ok"] >= 3, edge.stats
            row = (tmp_path / "link.csv").read_text().splitlines()[1].split(",")
            assert row[:2] == ["device", "edge"] and float(row[2]) > 0 and float(row[3]) > 0, row
            with pytest.raises(EdgeUnavailable):  # without the keys the same edge does not answer at all
                measure(b, edge.endpoint, "1", pings=3, requests=3, timeout_s=1)
    finally:
        edge.close()


def _listening_host(port: int) -> str:
    """The local address a TCP socket listens on for ``port``, from /proc/net/tcp."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            return socket.inet_ntoa(bytes.fromhex(host)[::-1])
    return ""


def test_metrics_listen_on_the_bind_host_only(small):
    ep, mport = f"tcp://127.0.0.1:{_port()}", _port()
    edge = Edge(small, ["1"])
    try:
        with serving(edge, ep, metrics_port=mport):
            assert _listening_host(mport) == "127.0.0.1"
    finally:
        edge.close()


def test_a_busy_metrics_port_is_a_clear_error_and_leaks_nothing(small, tmp_path):
    S.make_keys(tmp_path / "k", ["edge", "dev"])
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "dev.key").write_bytes((tmp_path / "k" / "dev.key").read_bytes())
    curve = S.ServerCurve.from_files(tmp_path / "k" / "edge.key_secret", tmp_path / "allow")
    ep = f"tcp://127.0.0.1:{_port()}"
    before = {th.name for th in threading.enumerate()}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        edge = Edge(small, ["1"])
        try:
            with pytest.raises(TlcutError, match="cannot serve metrics"):
                edge.serve(ep, curve=curve, metrics_port=busy.getsockname()[1])
        finally:
            edge.close()
    time.sleep(0.5)
    assert {th.name for th in threading.enumerate() if th.is_alive()} <= before  # no ZAP or HTTP thread left
    import zmq

    s = zmq.Context.instance().socket(zmq.ROUTER)  # and the endpoint is free again
    try:
        s.bind(ep)
    finally:
        s.close(linger=0)
