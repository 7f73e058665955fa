"""Shared flag groups, after Polygraphy's argument groups.

Each group adds its flags in ``add`` and, in ``parse``, checks them together and builds what the
verb needs, so a rule such as "--key needs --edge-key" lives in exactly one place. Choices come
from the code that implements them (backends, encodings, TL modes). Heavy imports happen in
``parse``, never at ``add``, so `tlcut --help` stays light.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.bundle import PRECISIONS
from tlcut import encodings
from tlcut.placement import CUT_ENCODINGS, DEFAULT_JPEG_QUALITY, ENCODINGS, INPUT_ENCODINGS, TL_CHOICES


class Group:
    """A set of flags and the object built from them."""

    title: str | None = None

    def add_to(self, parser) -> None:
        self.add(parser.add_argument_group(self.title) if self.title else parser)

    def add(self, p) -> None:
        raise NotImplementedError

    def parse(self, a) -> None:
        """Validate the parsed flags ``a`` together; keep what the verb needs on ``self``."""


class BundleArgs(Group):
    def add(self, p):
        p.add_argument("bundle", help="bundle directory written by `tlcut export`")

    def parse(self, a):
        from tlcut.bundle import Bundle

        self.bundle = Bundle.open(a.bundle)


class BackendArgs(Group):
    """--backend, --threads, --precision, and each backend's own flags, which the backend adds and
    parses itself (``Backend.add_args``/``options_from_args``): this group only loops over the registry."""

    title = "engine"

    def add(self, p):
        from tlcut.runtime import backends

        p.add_argument("--backend", default=backends.DEFAULT, choices=backends.names(),
                       help=f"runtime backend (default {backends.DEFAULT})")
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="intra-op threads for the backend (default: the backend's own choice)")
        p.add_argument("--precision", default="float32", choices=PRECISIONS,
                       help="which compiled halves to run: float32, or int8 (QDQ, from `tlcut compile --precision int8`)")
        self._own = {name: backends.backend_class(name).add_args(p) for name in backends.names()}

    def parse(self, a):
        from tlcut.runtime import backends

        if a.threads is not None and a.threads < 1:
            raise TlcutError(f"--threads must be at least 1, got {a.threads}")
        options = {name: backends.backend_class(name).options_from_args(a, a.backend) for name in backends.names()}
        self.name, self.threads, self.precision = a.backend, a.threads, a.precision
        self.backend = backends.get(a.backend, **options[a.backend])
        default = self._own[backends.DEFAULT]
        #: The default backend with its own flags left alone: what a device folder's ONNX assumes.
        self.is_default = a.backend == backends.DEFAULT and all(getattr(a, x.dest) == x.default for x in default)
        #: Those flags, as a user drops them: "--backend/--providers".
        self.flags = "/".join(["--backend"] + [x.option_strings[0] for x in default])


class PlacementArgs(Group):
    """One placement (the device's side): --cut, --tl, --encoding."""

    title = "placement"

    def __init__(self, bundle: BundleArgs, tl_default: str = "on", required: bool = True):
        self.bundle_args, self.tl_default, self.required = bundle, tl_default, required

    def add(self, p):
        p.add_argument("--cut", required=self.required, metavar="K",
                       help="cut index, tensor or layer name; 'device' (all on the device) or 'input' (all on the edge)")
        p.add_argument("--tl", default=self.tl_default, metavar="on|off|KIND",
                       help=f"send through the cut's Transfer Layer; or name its kind (pool, bottleneck:C, ...), "
                            f"refused where the bundle holds no such kind trained (default {self.tl_default})")
        p.add_argument("--encoding", default=encodings.DEFAULT, choices=ENCODINGS,
                       help=f"wire format of what crosses (docs/protocol.md): at a cut {', '.join(CUT_ENCODINGS)}; "
                            f"with --cut input {', '.join(INPUT_ENCODINGS)} (default {encodings.DEFAULT})")
        p.add_argument("--jpeg-quality", type=int, default=None, metavar="Q",
                       help=f"JPEG quality 1..100 for --encoding jpeg (default {DEFAULT_JPEG_QUALITY})")

    def parse(self, a):
        from tlcut.placement import SENTINELS, Placement

        self.placement = None
        if a.cut is None:
            return
        sentinel = str(a.cut).strip().lower() in SENTINELS
        if a.tl not in ("on", "off"):  # a kind: the cut's TL if the bundle holds it trained there
            from tlcut import transfer

            if sentinel:
                transfer.parse(a.tl)
            else:
                transfer.held(self.bundle_args.bundle.cut(a.cut), a.tl)
            a.tl = "on"
        if str(a.cut).strip().lower() == "device" and a.encoding != encodings.DEFAULT:
            raise TlcutError(f"--encoding {a.encoding} is for what crosses the link; device only sends nothing")
        self.placement = Placement.resolve(self.bundle_args.bundle, a.cut, a.tl == "on" and not sentinel, a.encoding,
                                           a.jpeg_quality)
        if encodings.get(self.placement.encoding).pixels:
            self.bundle_args.bundle.pixels  # a one-line error now if the input is no image


class ServedCutsArgs(Group):
    """What an edge serves: --cut repeatable, --tl on|off|both|KIND."""

    title = "what to serve"

    def __init__(self, required: bool = True, bundle: BundleArgs | None = None):
        self.required, self.bundle_args = required, bundle

    def add(self, p):
        p.add_argument("--cut", action="append", required=self.required, metavar="K",
                       help="cut to serve (index, tensor or layer name; 'input' for the whole model); repeatable")
        p.add_argument("--tl", default="both", metavar="on|off|both|KIND",
                       help="serve the tail with EdgeTL, without, or both (default both, where compiled); or name "
                            "the TL's kind (pool, bottleneck:C, ...), refused at a cut where the bundle holds no "
                            "such kind trained")

    def parse(self, a):
        self.cuts, self.tl = a.cut, tl_words(a.tl, self.bundle_args.bundle if self.bundle_args else None, a.cut or [])


def tl_words(tl: str, bundle, cuts) -> str:
    """--tl on|off|both, or a transfer-layer kind: the bundle must hold that kind trained at each of
    ``cuts`` (specs; 'input' has no TL and is left alone), and it then means ``on``."""
    if tl in TL_CHOICES:
        return tl
    from tlcut import transfer
    from tlcut.placement import SENTINELS

    try:
        transfer.parse(tl)  # a misspelt word is one line, with or without cuts to check it against
    except TlcutError:
        raise TlcutError(f"--tl must be {', '.join(TL_CHOICES)} or a transfer layer's kind ({transfer.SYNTAX}), "
                         f"got '{tl}'") from None
    for spec in cuts:
        if bundle is not None and str(spec).strip().lower() not in SENTINELS:
            transfer.held(bundle.cut(spec), tl)
    return "on"


class SecurityArgs(Group):
    """CURVE keys for one side of the link, and the plain-TCP escape hatch; one rule set for every verb."""

    title = "security (CURVE; required outside loopback)"

    def __init__(self, role: str):
        assert role in ("edge", "device")
        self.role = role

    def add(self, p):
        if self.role == "edge":
            p.add_argument("--key", metavar="SECRET", help="the edge's key pair, NAME.key_secret from `tlcut keys`")
            p.add_argument("--allow", metavar="DIR", help="folder of admitted devices' public keys (NAME.key)")
        else:
            p.add_argument("--key", metavar="SECRET", help="this device's key pair, NAME.key_secret from `tlcut keys`")
            p.add_argument("--edge-key", metavar="PUBLIC", help="the edge's public key, NAME.key (pinned)")
        p.add_argument("--insecure", action="store_true", help="plain TCP outside loopback (lab links only)")

    def parse(self, a):
        from tlcut.runtime.security import ClientCurve, ServerCurve

        self.insecure = a.insecure
        if self.role == "edge":
            if bool(a.key) != bool(a.allow):
                raise TlcutError("CURVE on the edge needs both --key (the edge's NAME.key_secret) and --allow DIR "
                                 "(the admitted devices' public keys)")
            self.files = (a.key, a.allow) if a.key else None
            self.curve = ServerCurve.from_files(a.key, a.allow) if a.key else None
        else:
            if bool(a.key) != bool(a.edge_key):
                raise TlcutError("CURVE on a device needs both --key (this device's NAME.key_secret) and "
                                 "--edge-key (the edge's NAME.key)")
            self.files = (a.key, a.edge_key) if a.key else None
            self.curve = ClientCurve.from_files(a.key, a.edge_key) if a.key else None
        if self.curve and a.insecure:
            raise TlcutError("--insecure asks for plain TCP, but keys were given for CURVE; drop one of them")

    def check(self, endpoint: str) -> None:
        """Refuse plain TCP outside loopback unless --insecure (then warn); before anything loads."""
        from tlcut.runtime.security import require_policy

        require_policy(endpoint, self.curve, self.insecure, self.role)


class LinkArgs(Group):
    """The device's connection to an edge: endpoint, timeout, retries, fallback."""

    title = "link to the edge"

    def __init__(self, required: bool = False, timeout: float = 10.0, retries: int = 2, fallback: bool = True):
        self.required, self.defaults = required, (timeout, retries, fallback)

    def add(self, p):
        timeout, retries, fallback = self.defaults
        p.add_argument("--edge", required=self.required, metavar="ENDPOINT",
                       help="the edge's ZeroMQ endpoint, e.g. tcp://192.0.2.2:5555, or a Triton server: "
                            "triton+grpc://HOST:8001, triton+http://HOST:8000 (docs/triton.md); several, comma-"
                            "separated: where one stops answering the next is tried before the fallback")
        p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                       help=f"seconds to wait for each attempt (default {timeout:g})")
        p.add_argument("--retries", type=int, default=retries,
                       help=f"resend a request this often on a fresh socket (default {retries})")
        p.add_argument("--fallback", default="on" if fallback else "off", choices=["on", "off"],
                       help="run the whole model here while the edge is unreachable "
                            f"(default {'on' if fallback else 'off'})")

    def parse(self, a):
        if a.timeout <= 0:
            raise TlcutError(f"--timeout must be positive, got {a.timeout}")
        if a.retries < 0:
            raise TlcutError(f"--retries cannot be negative, got {a.retries}")
        self.edge, self.timeout, self.retries, self.fallback = a.edge, a.timeout, a.retries, a.fallback == "on"


class NetworkArgs(Group):
    title = "network (the device's uplink to the edge)"

    def add(self, g):
        g.add_argument("--bandwidth", type=float, metavar="MBPS", help="uplink bandwidth in Mbit/s (default 57, 5G uplink)")
        g.add_argument("--latency", type=float, metavar="MS", help="round-trip latency (ping) in ms (default 28)")
        g.add_argument("--down-bandwidth", type=float, metavar="MBPS", help="downlink bandwidth for the reply (default: 10x the uplink)")
        g.add_argument("--network", metavar="CSV", help="Scission-style CSV: source,destination,ping_ms,bandwidth_mbps")
        g.add_argument("--device-name", default="device", help="the device's name in --network (default: device)")
        g.add_argument("--edge-name", default="edge", help="the edge's name in --network (default: edge)")
        g.add_argument("--wire-overhead", type=float, metavar="X",
                       help="link bytes per payload byte (default 1514/1448: TCP/IPv4 over Ethernet)")

    def parse(self, a):
        self._a = a

    @property
    def network(self):
        """Built when asked for: a three-tier plan reads the CSV's hops itself."""
        from tlcut.toolchain.plan import network_from_args

        a = self._a
        return network_from_args(a.bandwidth, a.latency, a.down_bandwidth, a.network, a.device_name, a.edge_name,
                                 a.wire_overhead)


class DataArgs(Group):
    title = "data"

    def add(self, p):
        p.add_argument("--data", help="'elpv' (the embedded solar-cell set) or a folder with one subfolder per class")
        p.add_argument("--limit", type=int, help="use only this many images (stratified), for quick runs")

    def parse(self, a):
        if a.limit is not None and a.limit < 1:
            raise TlcutError(f"--limit must be at least 1, got {a.limit}")
