"""Serving a tiled segment: one cut's tensor cut into bands of rows, each band run on its own node.

D3's edge tiles and EdgeDI's cluster at run time. The edge that takes the device's request (the
coordinator) slices the rows each band needs, halo included (``tlcut tiles`` wrote them into
tiles.json), sends every band to its node over the same protocol (flags bits 8-15 name the band,
docs/protocol.md), runs its own band meanwhile where a node is ``local``, stitches the band outputs
along the height (exactly the untiled output) and runs the tail after the segment. To the edge it
is one more half: ``TiledRunner`` implements the runner interface, so validation, errors, metrics
and replies are the edge's own core's; ``runners`` is what an edge serving tiles loads.

A node that answers with an error, or not within the timeout, fails that request with the node and
the cause (error 10, upstream unavailable, for silence), and its socket is replaced so a late reply
is never taken for a later request's band.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tlcut.errors import TlcutError
from tlcut.runtime import protocol as P
from tlcut.runtime.backends.base import Runner
from tlcut.runtime.client import EdgeError, EdgeUnavailable, Upstream

LOCAL = "local"


class Tiles(NamedTuple):
    """What a coordinating edge needs: the tiles folder and, per band in order, the endpoint of the
    node that runs it (``local``: the coordinator itself)."""

    folder: str
    workers: tuple
    timeout_s: float = 10.0
    curve: object = None
    insecure: bool = False


def start_id(tiles: dict) -> int:
    """The cut id requests for this tiled segment carry: its start cut (0xFFFFFFFF for the input)."""
    c = tiles["from"]["cut"]
    return P.INPUT_CUT if c == "input" else int(c)


def check_start(bundle, tiles: dict, spec: str) -> None:
    """A one-line error unless served cut ``spec`` is where the tiles start, of this bundle's model."""
    from tlcut.placement import EDGE, Placement

    if tiles["model_sha256"] != bundle.model_sha256:
        raise TlcutError(f"the tiles were written from another model than bundle '{bundle.path}' "
                         f"({tiles['model']}); re-run `tlcut tiles` on this bundle")
    p = Placement.resolve(bundle, spec)
    got = "input" if p.where == EDGE else p.cut
    if got != tiles["from"]["cut"]:
        raise TlcutError(f"the tiles start at cut {tiles['from']['cut']}, not at {spec}; serve --cut "
                         f"{tiles['from']['cut']} (the device sends that cut, without the TL)")


class TiledRunner(Runner):
    """The tiled segment and the tail after it, as one runner: input = the segment's input tensor,
    output = the model's output."""

    def __init__(self, bundle, tiles: Tiles, backend, threads: int | None = None):
        from tlcut.tiles_folder import band_file, read_tiles

        super().__init__(f"tiles {tiles.folder}")
        folder = Path(tiles.folder)
        self.manifest = m = read_tiles(folder)
        bands = m["bands"]
        if len(tiles.workers) != len(bands):
            raise TlcutError(f"the tiles have {len(bands)} bands but {len(tiles.workers)} workers were given; "
                             "name one node per band (tcp://HOST:PORT, or 'local' for this edge)")
        if tiles.timeout_s <= 0:
            raise TlcutError(f"--worker-timeout must be positive, got {tiles.timeout_s}")
        self.cfg = tiles
        self.cut_id = start_id(m)
        self.in_axis, self.out_axis = m["input"]["height_axis"], m["output"]["height_axis"]
        self.local = {k: backend.runner(folder / band_file(k), threads=threads)
                      for k, w in enumerate(tiles.workers) if w == LOCAL}
        self.nodes = {k: Upstream(w, tiles.timeout_s, curve=tiles.curve, insecure=tiles.insecure)
                      for k, w in enumerate(tiles.workers) if w != LOCAL}
        to = bundle.cuts[int(m["to"]["cut"])]
        self.tail = backend.runner(bundle.runnable("tail", to.index, False, backend.name), threads=threads)
        self.times: dict[str, float] = {}  # the last request's scatter, bands and stitch, for the log and tests

    def _activate_impl(self) -> None:
        for r in [*self.local.values(), self.tail]:
            r.activate()
        (self.tail_in,) = self.tail.input_metadata()

    def _deactivate_impl(self) -> None:
        for r in [*self.local.values(), self.tail]:
            r.deactivate()
        for node in self.nodes.values():
            node.drop()

    def warm(self) -> None:
        """One untimed run of the local bands and the tail, the nodes left alone."""
        for r in [*self.local.values(), self.tail]:
            r.infer({k: np.zeros(s, d) for k, (d, s) in r.input_metadata().items()}, check=False)

    def _input_metadata_impl(self):
        i = self.manifest["input"]
        dtype = self.manifest["bands"][0]["input"]["dtype"]
        return {i["name"]: (np.dtype(dtype), tuple(i["shape"]))}

    def _output_names_impl(self):
        return self.tail.output_names()

    def _infer_impl(self, feed):
        (x,) = feed.values()
        return self.tail.infer({self.tail_in: self.stitched(x)}, check=False)

    def _drop(self, ks) -> None:
        for k in ks:
            self.nodes[k].drop()

    def _rows(self, x: np.ndarray, k: int) -> np.ndarray:
        """The rows of ``x`` band ``k`` takes, halo included, contiguous for the wire."""
        lo, hi = self.manifest["bands"][k]["in_rows"]
        return np.ascontiguousarray(x[(slice(None),) * self.in_axis + (slice(lo, hi),)])

    def stitched(self, x: np.ndarray) -> np.ndarray:
        """The segment's output for input ``x``: every band sent first, the local ones run while the
        others compute, then gathered in order and joined along the height."""
        bands, w = self.manifest["bands"], self.cfg.workers
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.cfg.timeout_s
        sent: dict[int, int] = {}
        outs: list = [None] * len(bands)
        k = None
        try:
            for k, b in enumerate(bands):
                if w[k] != LOCAL:
                    sent[k] = self.nodes[k].client.send(self._rows(x, k), self.cut_id, P.band_flags(k))
            t1 = time.perf_counter()
            for k, r in self.local.items():
                (name,) = r.input_metadata()
                outs[k] = next(iter(r.infer({name: self._rows(x, k)}, check=False).values()))
            t2 = time.perf_counter()
            for k, rid in sent.items():
                y, _ = self.nodes[k].client.receive(rid, max(0.001, deadline - time.monotonic()))
                want = tuple(bands[k]["output"]["shape"])
                if tuple(y.shape) != want or y.dtype != np.dtype(bands[k]["output"]["dtype"]):
                    raise P.ProtocolError(P.E_UPSTREAM, f"band {k}'s node ({w[k]}) answered {y.dtype}{list(y.shape)}, "
                                                        f"not band {k}'s output {list(want)}; is it serving these tiles?")
                outs[k] = y
        except EdgeError as e:
            self._drop(sent)
            raise P.ProtocolError(e.code, f"band {k}'s node ({w[k]}) answered: {e.message}") from None
        except EdgeUnavailable:
            self._drop(sent)
            raise P.ProtocolError(P.E_UPSTREAM, f"band {k}'s node ({w[k]}) did not answer within "
                                                f"{self.cfg.timeout_s:g} s") from None
        except Exception:  # a local band or a bad reply: no node's late answer may meet a later request
            self._drop(sent)
            raise
        t3 = time.perf_counter()
        y = np.concatenate(outs, axis=self.out_axis)
        self.times = {"scatter_ms": (t1 - t0) * 1e3, "local_ms": (t2 - t1) * 1e3, "gather_ms": (t3 - t2) * 1e3,
                      "stitch_ms": (time.perf_counter() - t3) * 1e3}
        return y


def band_runner(m: dict, folder, band: int, backend, threads: int | None = None):
    """(cut id, flags, runner) a worker serves for band ``band`` of the tiles ``m`` in ``folder``
    (checked against the bundle by ``check_start``)."""
    from tlcut.tiles_folder import band_file

    if not 0 <= band < len(m["bands"]):
        raise TlcutError(f"--band {band}: the tiles in '{folder}' have bands 0..{len(m['bands']) - 1}")
    return start_id(m), P.band_flags(band), backend.runner(Path(folder) / band_file(band), threads=threads)


def runners(bundle, cuts: list[str], tl: str, backend, threads, tiles, band: int | None) -> dict:
    """What an edge serving a tiled segment runs, keyed as requests name it: as the coordinator
    (``tiles``, a Tiles) the segment's bands and the tail after it, or as a worker (``band``, with
    ``tiles`` its folder) one band."""
    from tlcut.tiles_folder import read_tiles

    if len(cuts) != 1:
        raise TlcutError("an edge serving tiles serves one cut, where the tiles start; give --cut once")
    folder = tiles if band is not None else tiles.folder
    m = read_tiles(Path(folder))
    check_start(bundle, m, cuts[0])
    if tl == "on":
        raise TlcutError("tiles take the cut's own tensor, not the TL's; serve with --tl off")
    if band is not None:
        cut_id, flags, runner = band_runner(m, folder, band, backend, threads)
        return {(cut_id, flags): runner}
    runner = TiledRunner(bundle, tiles, backend, threads)
    return {(runner.cut_id, 0): runner}
