"""The testbed: device and edge in two namespaces over a shaped link. Needs root (CI runs as root)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tlcut.lab import testbed as tbm
from tlcut.lab.harness import wait_for_edge
from tlcut.toolchain.compile import compile_cuts

WHY = tbm.available()
pytestmark = [pytest.mark.root, pytest.mark.skipif(WHY is not None, reason=f"testbed unavailable: {WHY}")]


def _netns():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def bundle(small_bundle):
    return small_bundle("residual", hw=64, c=16)  # cut 0 carries 256 KiB


def test_round_trip_across_the_shaped_link(bundle, tmp_path):
    cfg = tbm.Config(bandwidth_mbps=20, latency_ms=30, port=5701)
    tlcut = [sys.executable, "-m", "tlcut"]
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        name = tb.state.ns_device
        assert name in _netns()
        # --insecure: where netem exists the edge binds the namespace's own address, not loopback
        edge = tb.popen("edge", tlcut + ["serve", str(bundle.path), "--cut", "0", "--bind", tb.state.edge_bind,
                                         "--insecure"], stderr=subprocess.DEVNULL)
        try:
            code = (
                "import json, sys, time, numpy as np\n"
                "from tlcut.bundle import Bundle\n"
                "from tlcut.runtime.run import Device, inputs\n"
                f"b = Bundle.open({str(bundle.path)!r})\n"
                "xs = inputs(b, None, 6, seed=1)\n"
                "deadline = time.time() + 60\n"
                "while True:\n"
                "    try:\n"
                f"        dev = Device(b, '0', tl=False, edge={tb.state.device_endpoint!r}, timeout_s=3, insecure=True); dev.infer(xs[0]); break\n"
                "    except Exception:\n"
                "        dev.close()\n"
                "        if time.time() > deadline: raise\n"
                f"tl = Device(b, '0', tl=True, edge={tb.state.device_endpoint!r}, timeout_s=10, insecure=True)\n"
                "out = []\n"
                "for x in xs[1:]:\n"
                "    y, rec = dev.infer(x); ytl, rtl = tl.infer(x)\n"
                "    out.append({'x': x.tolist(), 'y': y.tolist(), 'rec': rec, 'rtl': rtl})\n"
                "json.dump(out, sys.stdout)\n"
            )
            r = tb.run("device", [sys.executable, "-c", code], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
        finally:
            edge.terminate()
            edge.wait(10)
    assert name not in _netns(), "the testbed tore its namespaces down"
    sess = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    c = bundle.cuts[0]
    items = json.loads(r.stdout)
    for item in items:
        x = np.array(item["x"], np.float32)
        ref = sess.run(None, {"x": x})[0]
        assert np.abs(np.array(item["y"], np.float32) - ref).max() <= 1e-5
    # the link is really shaped and delayed: 262 kB at 20 Mbit/s is 105 ms, plus 30 ms. A busy
    # machine only ever adds time, so the floor holds for the median and the ceiling is checked on
    # the fastest request, the one a slow moment of a shared machine touched least.
    for key, nbytes in (("rec", c.bytes), ("rtl", c.tl_bytes)):
        want = 30 + (nbytes + 80) * 1514 / 1448 * 8 / 20e6 * 1e3
        got = [item[key]["transfer_ms"] for item in items]
        assert float(np.median(got)) > want * 0.85 and min(got) < want * 1.5, (key, got, want)


def test_teardown_on_error_leaves_nothing():
    cfg = tbm.Config(port=5702)
    with pytest.raises(RuntimeError):
        with tbm.Testbed(cfg, log=lambda *_: None) as tb:
            name, cg = tb.state.ns_device, tb.state.cgroup
            raise RuntimeError("boom")
    assert name not in _netns()
    assert cg is None or not __import__("os").path.exists(cg)


def _cpu_share(tb, role: str) -> float:
    """The CPU time a busy loop in ``role`` got over the wall-clock time it took."""
    loop = ("import time;t=time.perf_counter();c=time.process_time();x=0\nfor i in range(3000000): x+=i\n"
            "print((time.process_time()-c)/(time.perf_counter()-t))")
    r = tb.run(role, [sys.executable, "-c", loop], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


def _throttled(cgroup: str) -> int:
    """How many CPU periods the cgroup's quota cut short (cgroup v2 and v1 both say nr_throttled)."""
    stat = dict(line.split() for line in Path(cgroup, "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def test_device_is_slowed_by_the_quota():
    """The quota caps the device's CPU share however busy the machine is (other load only lowers
    it), and the cgroup really throttled it: a share and a count, not a wall-clock threshold."""
    with tbm.Testbed(tbm.Config(device_quota=0.25, port=5703), log=lambda *_: None) as tb:
        assert tb.state.cgroup, "no cgroup CPU controller: the device would run unthrottled"
        dev = _cpu_share(tb, "device")
        throttled = _throttled(tb.state.cgroup)
    assert dev <= 0.25 * 1.2, dev
    assert throttled > 0


def test_cli_up_exec_down(tmp_path):
    tl = [sys.executable, "-m", "tlcut", "testbed"]
    r = subprocess.run(tl + ["up", "--name", "citest", "--port", "5704"], capture_output=True, text=True)
    try:
        assert r.returncode == 0, r.stderr
        assert "tcp://192.0.2.2:5704" in r.stdout
        r = subprocess.run(tl + ["exec", "--name", "citest", "device", "--", "ip", "-o", "addr"], capture_output=True, text=True)
        assert r.returncode == 0 and "192.0.2.1" in r.stdout
    finally:
        d = subprocess.run(tl + ["down", "--name", "citest"], capture_output=True, text=True)
    assert d.returncode == 0, d.stderr
    assert "tlcut-citest" not in _netns()
    r = subprocess.run(tl + ["down", "--name", "citest"], capture_output=True, text=True)
    assert r.returncode == 2 and "no testbed is up" in r.stderr


def test_calibrate_measures_the_shaped_link(bundle, tmp_path):
    from tlcut.toolchain import plan

    # cut 0's 256 KiB take ~110 ms at 20 Mbit/s: long beside a busy machine's stalls; the device
    # has a whole CPU, as the link and not the device is measured
    cfg = tbm.Config(bandwidth_mbps=20, latency_ms=30, device_quota=1.0, port=5705)
    tlcut = [sys.executable, "-m", "tlcut"]
    nets = []
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        edge = tb.popen("edge", tlcut + ["serve", str(bundle.path), "--cut", "0", "--tl", "off", "--bind",
                                         tb.state.edge_bind, "--insecure"], stderr=subprocess.DEVNULL)
        try:
            wait_for_edge(tb, edge)
            for mbps, ms in ((20, 30), (10, 60)):
                tb.set_link(mbps, ms)
                out = tmp_path / f"net-{mbps}.csv"
                r = tb.run("device", tlcut + ["calibrate", str(bundle.path), "--edge", tb.state.device_endpoint,
                                              "--insecure", "--cut", "0", "--requests", "5", "--pings", "10", "-o", str(out)],
                           capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
                nets.append(plan.network_from_args(csv_path=out))
        finally:
            edge.terminate()
            edge.wait(10)
    fast, slow = nets
    # no load makes a ping shorter than the delay, nor a payload cross faster than the shaped rate
    assert fast.rtt_ms >= 30 * 0.87 and slow.rtt_ms >= 60 * 0.87, nets
    assert fast.up_mbps <= 20 * 1.2 and slow.up_mbps <= 10 * 1.2, nets
    # and the measures follow the link, compared within this one run: twice the delay, twice the
    # ping; half the rate, half the goodput
    assert 1.4 <= slow.rtt_ms / fast.rtt_ms <= 2.6, nets
    assert 1.5 <= fast.up_mbps / slow.up_mbps <= 2.6, nets


def test_set_link_changes_the_shaper_in_place():
    """A trace replay changes tc's rate (and the relay's delay) without rebuilding the testbed."""
    with tbm.Testbed(tbm.Config(bandwidth_mbps=57, latency_ms=28, port=5711), log=lambda *_: None) as tb:
        tb.set_link(10, 40)
        out = subprocess.run(["tc", "-n", tb.state.ns_device, "qdisc", "show"], capture_output=True, text=True).stdout
        assert "rate 10Mbit" in out, out
        if tb.state.delay_method == "relay":
            assert open(f"/tmp/tlcut-{tb.state.name}-link").read().split() == ["0", "40"]
    assert tb.state.made == []


def test_expose_puts_a_second_service_behind_the_same_link():
    """A Triton server's ports beside tlcut's edge: reachable from the device, delayed like the edge."""
    echo = ("import socket,sys\nh,p=sys.argv[1].rsplit(':',1)\ns=socket.create_server((h,int(p)))\nc,_=s.accept()\n"
            "while (d:=c.recv(65536)): c.sendall(d)\n")
    with tbm.Testbed(tbm.Config(latency_ms=40, port=5704), log=lambda *_: None) as tb:
        with pytest.raises(tbm.TlcutError, match="edge's own"):
            tb.expose(5704)
        bind = tb.expose(5714)
        srv = tb.popen("edge", [sys.executable, "-c", echo, bind])
        probe = ("import socket,time\nt=time.time()\n"
                 "while True:\n"
                 "    try: c=socket.create_connection(('%s',5714),timeout=5); break\n"
                 "    except OSError:\n"
                 "        if time.time()-t>20: raise\n"
                 "        time.sleep(0.1)\n"
                 "t=time.perf_counter(); c.sendall(b'x'*1000); got=b''\n"
                 "while len(got)<1000: got+=c.recv(65536)\n"
                 "print(got==b'x'*1000, (time.perf_counter()-t)*1e3)\n") % tbm.EDGE_IP
        r = tb.run("device", [sys.executable, "-c", probe], capture_output=True, text=True)
        srv.kill()
    same, ms = r.stdout.split()
    assert r.returncode == 0 and same == "True", r.stderr[-1000:]
    assert float(ms) >= 40 * 0.9, ms


def _device_answers(tb, bundle, cut: str, n: int, seed: int) -> list[dict]:
    """n requests from the device's namespace to the edge, as placement ``cut``: [{x, y, rec}]."""
    s = tb.state
    code = (
        "import json, sys, numpy as np\n"
        "from tlcut.bundle import Bundle\n"
        "from tlcut.runtime.client import wait_for_edge\n"
        "from tlcut.runtime.run import Device, inputs\n"
        f"b = Bundle.open({str(bundle.path)!r})\n"
        f"wait_for_edge({s.device_endpoint!r}, 60, insecure=True)\n"
        f"dev = Device(b, {cut!r}, edge={s.device_endpoint!r}, timeout_s=20, insecure=True)\n"
        "out = []\n"
        f"for x in inputs(b, None, {n}, seed={seed}):\n"
        "    y, rec = dev.infer(x)\n"
        "    out.append({'x': x.tolist(), 'y': y.tolist(), 'rec': rec})\n"
        "json.dump(out, sys.stdout)\n")
    r = tb.run("device", [sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _assert_the_models_answers(bundle, items) -> None:
    """Each answer is the whole model's on its input, and the answers move with the input."""
    sess = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    ys = [np.array(i["y"], np.float32) for i in items]
    for item, y in zip(items, ys):
        assert np.abs(y - sess.run(None, {"x": np.array(item["x"], np.float32)})[0]).max() <= 1e-5
    assert np.abs(ys[0] - ys[1]).max() > 1e-4, "the output must move with the input"


def test_three_tiers_chain_across_uplink_and_backbone(bundle):
    """device -> edge (middle part, 0.5 CPU) -> cloud: the answer is the model's, the backbone's
    delay shows inside the edge's time, and the device has no route to the cloud but the edge."""
    from tlcut.toolchain.compile import compile_middle

    compile_middle(bundle, bundle.cuts[0], bundle.cuts[1], tl="off", to_tl=False)
    compile_cuts(bundle, [bundle.cuts[1]], tl="both")
    cfg = tbm.Config(bandwidth_mbps=50, latency_ms=10, port=5711, cloud=True, backbone_mbps=200, backbone_ms=25,
                     cloud_port=5721, edge_quota=0.5)
    tlcut = [sys.executable, "-m", "tlcut", "serve", str(bundle.path), "--threads", "1", "--insecure"]
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        s = tb.state
        names = (s.ns_device, s.ns_edge, s.ns_cloud)
        assert all(n in _netns() for n in names)
        assert subprocess.run(["ip", "-n", s.ns_device, "route", "get", tbm.CLOUD_IP], capture_output=True).returncode != 0
        if s.edge_cgroup and Path(s.edge_cgroup, "cpu.max").exists():  # cgroup v2
            assert Path(s.edge_cgroup, "cpu.max").read_text().split()[0] == str(int(0.5 * tbm.CFS_PERIOD_US))
        cloud = tb.popen("cloud", tlcut + ["--cut", "1", "--bind", s.cloud_bind], stderr=subprocess.DEVNULL)
        edge = tb.popen("edge", tlcut + ["--cut", "0", "--bind", s.edge_bind, "--forward", s.cloud_endpoint,
                                         "--to", "1", "--forward-insecure"], stderr=subprocess.DEVNULL)
        try:
            items = _device_answers(tb, bundle, "0", 6, seed=2)
        finally:
            for p in (edge, cloud):
                p.terminate()
                p.wait(10)
    assert not any(n in _netns() for n in names), "the testbed tore all three namespaces down"
    _assert_the_models_answers(bundle, items)
    # the edge's time holds the backbone crossing: 25 ms delay plus cut 1's transfer at 200 Mbit/s
    edge_ms = float(np.median([i["rec"]["edge_ms"] for i in items]))
    want = 25 + bundle.cuts[1].bytes * 8 / 200e6 * 1e3
    assert want * 0.9 < edge_ms < want * 3 + 50, (edge_ms, want)


def test_tiles_over_edge_nodes_each_under_its_own_quota(bundle, tmp_path):
    """The edge coordinates input -> cut 1 in three bands: its own and two nodes' (each a process in
    the edge's namespace under its own cgroup quota); the device gets the model's answer."""
    from tlcut.toolchain.tiles import write_tiles

    write_tiles(bundle, "input", "1", [1, 1, 1], tmp_path / "tiles")
    cfg = tbm.Config(bandwidth_mbps=50, latency_ms=5, port=5731, nodes=2, node_quota=0.3, node_port=5741)
    serve = [sys.executable, "-m", "tlcut", "serve", str(bundle.path), "--threads", "1", "--insecure", "--cut", "input",
             "--tiles", str(tmp_path / "tiles")]
    with tbm.Testbed(cfg, log=lambda *_: None) as tb:
        s = tb.state
        assert len(s.node_cgroups) == 2 and len(set(s.node_cgroups)) == 2
        if s.node_cgroups[0] and Path(s.node_cgroups[0], "cpu.max").exists():  # cgroup v2
            assert Path(s.node_cgroups[1], "cpu.max").read_text().split()[0] == str(int(0.3 * tbm.CFS_PERIOD_US))
        with pytest.raises(Exception, match="node0..node1"):
            tb.command("node2", ["true"])
        procs = [tb.popen(f"node{k}", serve + ["--band", str(k + 1), "--bind", tb.node_endpoint(k)],
                          stderr=subprocess.DEVNULL) for k in range(2)]
        procs.append(tb.popen("edge", serve + ["--bind", s.edge_bind, "--workers",
                                               f"local,{tb.node_endpoint(0)},{tb.node_endpoint(1)}"],
                              stderr=subprocess.DEVNULL))
        try:
            items = _device_answers(tb, bundle, "input", 3, seed=3)
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    _assert_the_models_answers(bundle, items)
