"""`tlcut serve`: the edge. Answers device requests with the tail of the model.

One ROUTER socket takes requests from any number of devices. Each request names a cut and says
whether the payload went through the DeviceTL; the edge runs the matching tail (EdgeTL first where
flagged) and replies with the result and the time it spent. ``Edge`` loads what a bundle's edge
serves in the mode asked, over the one core that answers requests (runtime/edge.py): the tails,
one request at a time; with ``max_batch`` above 1 their batched builds too (runtime/batching.py);
with ``forward`` middle parts whose output goes on to a next tier (runtime/forward.py); with
``tiles`` or ``band`` a tiled segment or one band of it (runtime/tiles.py).
"""

from __future__ import annotations

import contextlib

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.placement import DEVICE, EDGE, Placement, tl_modes
from tlcut.runtime import backends
from tlcut.runtime import protocol as P
from tlcut.runtime import tiles as T
from tlcut.runtime.batching import Batcher
from tlcut.runtime.edge import DEFAULT_MAX_MESSAGE, EdgeCore, serving
from tlcut.runtime.forward import Forward, Forwarder


class Edge(EdgeCore):
    """The edge's core serving ``cuts`` of ``bundle``: their tails, keyed by (cut_id, flags). With
    ``forward`` it serves middle parts instead and forwards their output to the next tier."""

    def __init__(self, bundle: Bundle, cuts: list[str], *, tl: str = "both", backend: str = backends.DEFAULT,
                 threads: int | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE, precision: str = "float32",
                 max_batch: int = 1, forward: Forward | None = None, tiles=None, band: int | None = None):
        if not cuts:
            raise TlcutError("name the cut(s) to serve with --cut K (or --cut input for the whole model)")
        if max_batch < 1:
            raise TlcutError(f"--max-batch must be at least 1, got {max_batch}")
        be = backends.get(backend)
        super().__init__(max_message_bytes)
        self.bundle = bundle
        if forward is not None and (max_batch > 1 or precision != "float32"):
            raise TlcutError("an edge that forwards runs float32 middle parts one request at a time; "
                             "drop --max-batch/--precision")
        if forward is not None:
            self.forwarder = Forwarder(forward)
        if max_batch > 1:
            self.batcher = Batcher(bundle, max_batch)
        if tiles is not None or band is not None:
            if forward is not None or max_batch > 1 or precision != "float32":
                raise TlcutError("a tiled segment runs float32 bands one request at a time; "
                                 "drop --forward/--max-batch/--precision")
            self.runners.update(T.runners(bundle, cuts, tl, be, threads, tiles, band))
            cuts = []
        for spec in cuts:
            p = Placement.resolve(bundle, spec)
            if p.where == DEVICE:
                raise TlcutError("an edge serves a cut or the whole model ('input'), not 'device'")
            if self.forwarder is not None:
                self.runners.update(self.forwarder.load(bundle, p, tl, be, threads))
                continue
            if p.where == EDGE:
                path = bundle.runnable("model", engine=be.name, precision=precision)
                self.runners[(P.INPUT_CUT, 0)] = be.runner(path, threads=threads)
                continue
            cut = bundle.cuts[p.cut]
            for with_tl in tl_modes(cut, tl):
                if tl == "both" and with_tl and not bundle.find("tail", cut.index, True, precision=precision):
                    continue  # "both" serves the TL tail where it was compiled
                path = bundle.runnable("tail", cut.index, with_tl, be.name, precision)
                key = (cut.index, P.FLAG_TL if with_tl else 0)
                self.runners[key] = be.runner(path, threads=threads)
                if self.batcher is not None:
                    self.batcher.load(key, cut.index, with_tl, be, threads, precision)
        self.warm()


@contextlib.contextmanager
def local_edge(bundle: Bundle, cuts: list[str], **kw):
    """An edge serving ``cuts`` of ``bundle`` on a free loopback port (``serving``); yields its endpoint."""
    edge = Edge(bundle, cuts, **kw)
    try:
        with serving(edge) as ep:
            yield ep
    finally:
        edge.close()
