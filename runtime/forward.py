"""Forwarding: the middle edge of three tiers. It serves middle parts (from what the device sends to
a later cut) instead of tails, and sends what they compute on to the next tier (a cloud serving that
cut), over the same protocol, as a device of it; the next tier's answer is the device's reply.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tlcut.bundle import Bundle
from tlcut.errors import TlcutError
from tlcut.placement import EDGE, Placement, tl_modes
from tlcut.runtime import protocol as P
from tlcut.runtime.client import EdgeError, EdgeUnavailable, Upstream


class Forward(NamedTuple):
    """Where an edge of three tiers sends what its middle part computes: the next tier (a cloud
    serving cut ``to``), over the same protocol, as a device of it."""

    endpoint: str
    to: int
    to_tl: bool = False
    encoding: str = "raw"
    timeout_s: float = 10.0
    curve: object = None
    insecure: bool = False


class Forwarder:
    """The middle parts of an edge that forwards, and its link to the next tier."""

    def __init__(self, forward: Forward):
        self.forward = forward
        self.next_tier = Upstream(forward.endpoint, forward.timeout_s, curve=forward.curve, insecure=forward.insecure)

    def load(self, bundle: Bundle, p: Placement, tl: str, be, threads) -> dict:
        """The parts from what the device sends (the input, or cut A with or without the TL) to the
        forward cut: the head of that cut for the input, else the middle part `compile --to` wrote."""
        fw = self.forward
        if p.where == EDGE:
            path = bundle.runnable("head", fw.to, fw.to_tl, be.name)
            return {(P.INPUT_CUT, 0): be.runner(path, threads=threads)}
        runners = {}
        cut = bundle.cuts[p.cut]
        for with_tl in tl_modes(cut, tl):
            a = bundle.find("middle", cut.index, with_tl, be.name, to=(fw.to, fw.to_tl))
            if a is None:
                if tl == "both" and with_tl:
                    continue
                raise TlcutError(f"bundle '{bundle.path}' has no middle part from cut {cut.index}"
                                 f"{' + TL' if with_tl else ''} to cut {fw.to}; run `tlcut compile {bundle.path} "
                                 f"--cuts {cut.index} --tl {'on' if with_tl else 'off'} --to {fw.to} "
                                 f"--to-tl {'on' if fw.to_tl else 'off'}` first")
            runners[(cut.index, P.FLAG_TL if with_tl else 0)] = be.runner(bundle.path / a.file, threads=threads)
        return runners

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """The next tier's answer for what the middle part computed; its errors come back with their cause."""
        fw = self.forward
        try:
            out, _ = self.next_tier.request(y, fw.to, P.FLAG_TL if fw.to_tl else 0, fw.encoding)
            return out
        except EdgeError as e:
            raise P.ProtocolError(e.code, f"the next tier ({fw.endpoint}) answered: {e.message}") from None
        except EdgeUnavailable:  # the link was dropped: the next request starts on a fresh socket
            raise P.ProtocolError(P.E_UPSTREAM, f"the next tier ({fw.endpoint}) did not answer within "
                                                f"{fw.timeout_s:g} s") from None

    def close(self) -> None:
        self.next_tier.close()
