"""`tlcut testbed`: the paper's device, edge and 5G uplink, emulated on one Linux machine.

Two network namespaces joined by a veth pair act as the two hosts (device 192.0.2.1, edge
192.0.2.2: TEST-NET-1 addresses that exist only inside these namespaces). The device's egress is
shaped with tc's token bucket (tbf) to the uplink rate. The round-trip latency is added to the
uplink with netem where the kernel has it; where it does not, by tlcut's user-space delay relay
in the edge namespace, which holds every byte from the device for the latency before passing it
to the edge server (so request payloads see rate-limited transfer plus the delay, like a real
path). The device runs under a cgroup CPU quota (a Jetson-class device several times slower than
the edge) and device and edge are pinned to different cores. Everything made is torn down on
exit, error, Ctrl-C or SIGTERM.

With ``cloud`` a third namespace (cloud 198.51.100.2, TEST-NET-2) sits behind the edge on a second
veth pair, the backbone, shaped and delayed the same way on the edge's egress (three tiers: the
edge forwards to the cloud). The edge may get a CPU quota of its own (a small edge box).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tlcut.errors import TlcutError
from tlcut.lab.emulation import Emulation

DEVICE_IP, EDGE_IP = "192.0.2.1", "192.0.2.2"
EDGE_BACK_IP, CLOUD_IP = "198.51.100.1", "198.51.100.2"  # the backbone, edge -> cloud
STATE_DIR = Path("/run/tlcut")
CFS_PERIOD_US = 10_000  # a short period keeps the throttled device's timing smooth


@dataclass
class Config:
    bandwidth_mbps: float = 57.0
    latency_ms: float = 28.0
    device_quota: float = 0.2  # fraction of one CPU the device may use
    device_cpus: str = "0"
    edge_cpus: str = "1"
    port: int = 5555
    delay: str = "auto"  # auto | netem | relay | none
    edge_quota: float | None = None  # fraction of a CPU for the edge; None: its whole core
    cloud: bool = False  # a third tier behind the edge, on the backbone
    backbone_mbps: float = 1000.0
    backbone_ms: float = 20.0
    cloud_cpus: str = "0"  # shares the device's core: the device may use only its quota of it
    cloud_port: int = 5565
    nodes: int = 0  # edge nodes beside the edge (tiles): its namespace, each under its own CPU quota
    node_quota: float = 0.5
    node_cpus: str = "0,1"
    node_port: int = 5575  # node k listens on 127.0.0.1:node_port + k inside the edge's namespace


@dataclass
class State:
    name: str
    config: Config
    ns_device: str
    ns_edge: str
    delay_method: str = ""
    cgroup: str | None = None  # the device's
    ns_cloud: str | None = None
    edge_cgroup: str | None = None
    node_cgroups: list = field(default_factory=list)
    relay_pid: int | None = None
    made: list = field(default_factory=list)

    @property
    def device_endpoint(self) -> str:
        """What a device connects to."""
        return f"tcp://{EDGE_IP}:{self.config.port}"

    @property
    def edge_bind(self) -> str:
        """What the edge server binds (behind the relay where one is used)."""
        if self.delay_method == "relay":
            return f"tcp://127.0.0.1:{self.config.port + 1}"
        return f"tcp://{EDGE_IP}:{self.config.port}"

    @property
    def cloud_endpoint(self) -> str:
        """What the edge forwards to (three tiers)."""
        return f"tcp://{CLOUD_IP}:{self.config.cloud_port}"

    @property
    def cloud_bind(self) -> str:
        """What the cloud server binds (behind the backbone's relay where one is used)."""
        if self.delay_method == "relay":
            return f"tcp://127.0.0.1:{self.config.cloud_port + 1}"
        return self.cloud_endpoint


def _sh(*argv, check=True, quiet=False):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise TlcutError(f"testbed: `{' '.join(map(str, argv))}` failed: {(r.stderr or r.stdout).strip()[:300]}")
    return r


def available() -> str | None:
    """None if a testbed can be built here, else why not."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, tc, cgroups)"
    for tool in ("ip", "tc", "taskset"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed (Debian: apt-get install iproute2 util-linux)"
    name = f"tlcut-probe-{uuid.uuid4().hex[:6]}"
    r = _sh("ip", "netns", "add", name, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    _sh("ip", "netns", "del", name, check=False)
    return None


def _cgroup_root() -> tuple[str, Path] | None:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2", Path("/sys/fs/cgroup")
    if Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists():
        return "v1", Path("/sys/fs/cgroup/cpu")
    return None


class Testbed(Emulation):
    """Context manager: ``with Testbed(Config()) as tb: tb.popen("edge", [...])``."""

    kind = "testbed"

    def __init__(self, config: Config | None = None, name: str | None = None, log=print, state: State | None = None):
        super().__init__(state.config if state else (config or Config()), log)
        short = name or uuid.uuid4().hex[:6]
        self.state = state or State(name=short, config=self.config, ns_device=f"tlcut-{short}-dev",
                                    ns_edge=f"tlcut-{short}-edge",
                                    ns_cloud=f"tlcut-{short}-cloud" if self.config.cloud else None)

    # -- life cycle ---------------------------------------------------------------------------------
    def up(self) -> State:
        why = available()
        if why:
            raise TlcutError(why)
        c, s = self.config, self.state
        if c.bandwidth_mbps <= 0 or c.latency_ms < 0 or not 0 < c.device_quota <= 64:
            raise TlcutError("testbed: bandwidth must be > 0, latency >= 0 and the device quota in (0, 64] CPUs")
        if c.edge_quota is not None and not 0 < c.edge_quota <= 64:
            raise TlcutError(f"testbed: the edge quota must be in (0, 64] CPUs, got {c.edge_quota:g}")
        if c.nodes and not 0 < c.node_quota <= 64:
            raise TlcutError(f"testbed: a node's quota must be in (0, 64] CPUs, got {c.node_quota:g}")
        if c.cloud and (c.backbone_mbps <= 0 or c.backbone_ms < 0):
            raise TlcutError("testbed: the backbone's bandwidth must be > 0 and its latency >= 0")
        for ns in (s.ns_device, s.ns_edge, *([s.ns_cloud] if c.cloud else [])):
            _sh("ip", "netns", "add", ns)
            s.made.append(["netns", ns])
        s.delay_method = self._link(s.ns_device, f"tl{s.name}d", DEVICE_IP, s.ns_edge, f"tl{s.name}e", EDGE_IP,
                                    c.bandwidth_mbps, c.latency_ms, c.delay, "edge", c.port, _relay_control(s))
        if c.cloud:
            # the backbone delays the same way as the uplink, so both hops are measured alike
            self._link(s.ns_edge, f"tl{s.name}b", EDGE_BACK_IP, s.ns_cloud, f"tl{s.name}c", CLOUD_IP,
                       c.backbone_mbps, c.backbone_ms, s.delay_method if s.delay_method != "none" else c.delay,
                       "cloud", c.cloud_port, _relay_control(s) + "-backbone")
        s.cgroup = self._make_cgroup("device", c.device_quota)
        if c.edge_quota is not None:
            s.edge_cgroup = self._make_cgroup("edge", c.edge_quota)
        s.node_cgroups = [self._make_cgroup(f"node{k}", c.node_quota) for k in range(c.nodes)]
        edge_cpu = f"{c.edge_quota:g} CPU of core {c.edge_cpus}" if c.edge_quota is not None else f"cpus {c.edge_cpus}"
        self.log(f"[testbed] device {DEVICE_IP} (cpus {c.device_cpus}, quota {c.device_quota:g} CPU) -> "
                 f"edge {EDGE_IP} ({edge_cpu}); uplink {c.bandwidth_mbps:g} Mbit/s (tc tbf), "
                 f"latency {c.latency_ms:g} ms ({_delay_words(s.delay_method)})"
                 + (f"; backbone edge {EDGE_BACK_IP} -> cloud {CLOUD_IP} (cpus {c.cloud_cpus}) "
                    f"{c.backbone_mbps:g} Mbit/s, {c.backbone_ms:g} ms" if c.cloud else ""))
        return s

    def _link(self, ns_a: str, dev_a: str, ip_a: str, ns_b: str, dev_b: str, ip_b: str, mbps: float, ms: float,
              method: str, role_b: str, port: int, control: str) -> str:
        """A veth pair from ``ns_a`` to ``ns_b``, shaped on a's egress to ``mbps`` and delayed by
        ``ms`` (netem, or the relay in b listening on ``port`` before b's server at ``port + 1``);
        returns the delay method used."""
        _sh("ip", "link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        _sh("ip", "link", "set", dev_a, "netns", ns_a)
        _sh("ip", "link", "set", dev_b, "netns", ns_b)
        for ns, dev, ip in ((ns_a, dev_a, ip_a), (ns_b, dev_b, ip_b)):
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            # a persistent connection must not fall back to slow start between requests
            _sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0", check=False)
        # shaping on a's egress; the burst is ~2 ms at the rate, so even small payloads travel at
        # the shaped rate
        rate_bytes = mbps * 1e6 / 8
        tbf = ["tbf", "rate", f"{mbps}mbit", "burst", str(max(3200, int(rate_bytes * 0.002))), "latency", "2000ms"]
        if ms == 0 or method == "none":
            _sh("tc", "-n", ns_a, "qdisc", "add", "dev", dev_a, "root", *tbf)
            return "none"
        if method in ("auto", "netem"):
            r = _sh("tc", "-n", ns_a, "qdisc", "add", "dev", dev_a, "root", "handle", "1:", "netem",
                    "delay", f"{ms}ms", "limit", "100000", check=False)
            if r.returncode == 0:
                _sh("tc", "-n", ns_a, "qdisc", "add", "dev", dev_a, "parent", "1:1", "handle", "10:", *tbf)
                return "netem"
            if method == "netem":
                raise TlcutError(f"testbed: netem is not available in this kernel ({r.stderr.strip()}); use --delay relay")
        _sh("tc", "-n", ns_a, "qdisc", "add", "dev", dev_a, "root", *tbf)
        self._start_relay(port, port + 1, role=role_b, listen_ip=ip_b, control=control, ms=ms)
        return "relay"

    def _undo(self) -> None:
        teardown(self.state)

    def set_link(self, mbps: float, ms: float) -> None:
        """Change the uplink's rate and delay in place (a trace replay calls this): tc changes the
        shaper (and netem's delay), the relay takes the delay from its control file."""
        s = self.state
        vd = f"tl{s.name}d"
        rate_bytes = mbps * 1e6 / 8
        tbf = ["tbf", "rate", f"{mbps}mbit", "burst", str(max(3200, int(rate_bytes * 0.002))), "latency", "2000ms"]
        if s.delay_method == "netem":
            _sh("tc", "-n", s.ns_device, "qdisc", "change", "dev", vd, "root", "handle", "1:", "netem",
                "delay", f"{ms}ms", "limit", "100000")
            _sh("tc", "-n", s.ns_device, "qdisc", "change", "dev", vd, "parent", "1:1", "handle", "10:", *tbf)
        else:
            _sh("tc", "-n", s.ns_device, "qdisc", "change", "dev", vd, "root", *tbf)
            if s.delay_method == "relay":
                control = _relay_control(s)
                Path(control + ".new").write_text(f"0 {ms}\n")  # rate 0: the relay only delays
                os.replace(control + ".new", control)

    def describe(self) -> str:
        c = self.config
        edge = (f"edge limited to {c.edge_quota:g} CPU on core {c.edge_cpus}" if c.edge_quota is not None
                else f"edge on core {c.edge_cpus}")
        return (f"testbed (root): network namespaces, uplink {c.bandwidth_mbps:g} Mbit/s by tc tbf, latency "
                f"{c.latency_ms:g} ms by {_delay_words(self.state.delay_method)}, device limited to "
                f"{c.device_quota:g} CPU by a cgroup quota on core {c.device_cpus}, {edge}"
                + (f"; backbone edge -> cloud {c.backbone_mbps:g} Mbit/s, {c.backbone_ms:g} ms, cloud on core "
                   f"{c.cloud_cpus}" if c.cloud else "")
                + (f"; {c.nodes} edge nodes in the edge's namespace (loopback to the edge), each limited to "
                   f"{c.node_quota:g} CPU on cores {c.node_cpus}" if c.nodes else ""))

    def node_endpoint(self, k: int) -> str:
        """Where edge node ``k`` listens, as the edge (its namespace's loopback) reaches it."""
        return f"tcp://127.0.0.1:{self.config.node_port + k}"

    # -- running things inside ----------------------------------------------------------------------
    def cpus(self) -> dict[str, str]:
        c = self.config
        return {"device": c.device_cpus, "edge": c.edge_cpus, **({"cloud": c.cloud_cpus} if c.cloud else {}),
                **{f"node{k}": c.node_cpus for k in range(c.nodes)}}

    def _enter(self, role: str) -> list[str]:
        s = self.state
        ns = s.ns_edge if role.startswith("node") else {"device": s.ns_device, "edge": s.ns_edge, "cloud": s.ns_cloud}[role]
        return ["ip", "netns", "exec", ns]

    def _popen_kw(self, role: str) -> dict:
        """Join the role's cgroup (the device's quota, the edge's, a node's) before the command runs."""
        node = _node_index(role, self.config.nodes)
        cgroup = (self.state.node_cgroups[node] if node is not None
                  else {"device": self.state.cgroup, "edge": self.state.edge_cgroup}.get(role))
        procs = _cgroup_procs_file(cgroup) if cgroup else None

        def enter():
            if procs:
                Path(procs).write_text(str(os.getpid()))

        return {"preexec_fn": enter}

    def _make_cgroup(self, role: str, cpus: float) -> str | None:
        root = _cgroup_root()
        if root is None:
            self.log(f"[testbed] no cgroup CPU controller found: the {role} runs unthrottled")
            return None
        kind, base = root
        path = base / f"tlcut-{self.state.name}-{role}"
        path.mkdir(exist_ok=True)
        self.state.made.append(["cgroup", str(path)])
        quota = int(cpus * CFS_PERIOD_US)
        if kind == "v2":
            with contextlib.suppress(OSError):
                (base / "cgroup.subtree_control").write_text("+cpu")
            (path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        return str(path)

    def expose(self, port: int) -> str:
        """Make another edge service reachable from the device at EDGE_IP:``port`` across the same
        link (a Triton server's gRPC and HTTP ports beside tlcut's edge); returns the host:port the
        service must listen on in the edge namespace."""
        if port in (self.config.port, self.config.port + 1):
            raise TlcutError(f"testbed: port {port} is the edge's own; expose another")
        if self.state.delay_method != "relay":
            return f"{EDGE_IP}:{port}"
        self._start_relay(port, port + 1)
        return f"127.0.0.1:{port + 1}"

    def _start_relay(self, port: int, upstream: int, role: str = "edge", listen_ip: str = EDGE_IP,
                     control: str | None = None, ms: float | None = None) -> int:
        s, c = self.state, self.config
        control = control or _relay_control(s)
        ms = c.latency_ms if ms is None else ms
        if not Path(control).exists():  # every relay of one link follows its one control file
            Path(control).write_text(f"0 {ms}\n")  # rate 0: the relay only delays; tc shapes
            s.made.append(["file", control])
        argv = self.command(role, [sys.executable, "-m", "tlcut.lab.relay", f"{listen_ip}:{port}",
                                   f"127.0.0.1:{upstream}", str(ms), "0", control])
        p = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        s.made.append(["pid", p.pid])
        if role == "edge" and s.relay_pid is None:
            s.relay_pid = p.pid
        ns = s.ns_cloud if role == "cloud" else s.ns_edge
        # wait until it listens
        for _ in range(100):
            if p.poll() is not None:
                raise TlcutError(f"testbed: the delay relay failed: {p.stderr.read().decode()[-300:]}")
            r = _sh("ip", "netns", "exec", ns, "ss", "-ltn", f"sport = :{port}", check=False)
            if str(port) in r.stdout:
                return p.pid
            time.sleep(0.05)
        raise TlcutError("testbed: the delay relay did not start listening")


def _delay_words(method: str) -> str:
    return {"netem": "tc netem", "relay": "tlcut delay relay; netem is not in this kernel",
            "none": "no delay added"}[method]


def _relay_control(s: State) -> str:
    return f"/tmp/tlcut-{s.name}-link"


def _node_index(role: str, nodes: int) -> int | None:
    """k for role ``nodeK`` of a testbed with that many edge nodes, else None."""
    k = role[4:] if role.startswith("node") else ""
    return int(k) if k.isdigit() and int(k) < nodes else None


def _cgroup_procs_file(path: str) -> str:
    return str(Path(path) / "cgroup.procs")


def teardown(s: State) -> None:
    """Undo everything in ``s.made``, newest first; never raises."""
    for kind, what in reversed(s.made):
        with contextlib.suppress(Exception):
            if kind == "pid":
                os.killpg(int(what), signal.SIGTERM)
            elif kind == "file":
                os.unlink(what)
            elif kind == "netns":
                _sh("ip", "netns", "pids", what, check=False)
                for pid in _sh("ip", "netns", "pids", what, check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                _sh("ip", "netns", "del", what, check=False)
            elif kind == "cgroup":
                procs = Path(what) / "cgroup.procs"
                for pid in procs.read_text().split() if procs.exists() else []:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):
                    try:
                        os.rmdir(what)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)
    s.made.clear()



# ----- persistent testbeds for the CLI (`tlcut testbed up / exec / down`) -------------------------
def save(s: State) -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    p = STATE_DIR / f"testbed-{s.name}.json"
    p.write_text(json.dumps({**asdict(s), "config": asdict(s.config)}))
    return p


def load(name: str | None) -> State:
    files = sorted(STATE_DIR.glob("testbed-*.json")) if STATE_DIR.exists() else []
    if name:
        files = [f for f in files if f.stem == f"testbed-{name}"]
    if not files:
        raise TlcutError("no testbed is up" + (f" named '{name}'" if name else "") + "; start one with `tlcut testbed up`")
    if len(files) > 1:
        raise TlcutError(f"{len(files)} testbeds are up ({', '.join(f.stem[8:] for f in files)}); pick one with --name")
    d = json.loads(files[0].read_text())
    d["config"] = Config(**d["config"])
    return State(**d)


def teardown_saved(s: State) -> None:
    """Tear down a testbed left up by `tlcut testbed up` and forget it."""
    teardown(s)
    (STATE_DIR / f"testbed-{s.name}.json").unlink(missing_ok=True)
