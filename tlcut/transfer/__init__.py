"""Transfer-layer kinds (docs/training.md): what the device does to the cut tensor before it
crosses, and the edge after. One class per family, one file each here, listed in ``FAMILIES``:

- ``pool``: the paper's 2x2 max-pool and 2x nearest upsampling (no weights; the default);
- ``bottleneck:C`` and ``bottleneck:C/s2``: a learned code of C channels (at stride 2 with /s2);
- ``pool+bottleneck:C``: the max-pool, then a learned code of C channels.

A bundle holds at most one kind at a cut: ``pool`` unless a learned kind was trained there
(`tlcut retrain --tl KIND`); the manifest's cut row says which (``Cut.tl_kind``). A learned kind
that a bundle does not hold trained is never deployed: ``held`` refuses it with one line.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.transfer.base import PAYLOAD, TransferLayer, load_weights, save_weights
from tlcut.transfer.bottleneck import Bottleneck, PoolBottleneck
from tlcut.transfer.pool import Pool

#: Every family, by the word before its ':'.
FAMILIES: tuple[type[TransferLayer], ...] = (Pool, Bottleneck, PoolBottleneck)
#: The kind at every cut a bundle holds no learned one for, and the CLI's default.
DEFAULT = "pool"
_BY_FAMILY = {f.family: f for f in FAMILIES}
SYNTAX = ", ".join(f.syntax for f in FAMILIES)


def parse(text) -> TransferLayer:
    """The kind ``text`` spells (``pool``, ``bottleneck:16``, ``bottleneck:16/s2``, ``pool+bottleneck:16``)."""
    if isinstance(text, TransferLayer):
        return text
    s = str(text).strip().lower()
    family, colon, arg = s.partition(":")
    cls = _BY_FAMILY.get(family)
    if cls is None:
        raise TlcutError(f"unknown transfer layer '{text}'; use one of {SYNTAX} (C a number of channels)")
    return cls.parse(arg if colon else None)


def held(cut, text) -> TransferLayer:
    """The kind ``text`` spells, if the bundle holds it at ``cut`` (a Cut); one line otherwise."""
    kind = parse(text)
    if not cut.tl:
        raise TlcutError(f"the TL cannot apply at cut {cut.index} ({cut.why_no_tl}); use --tl off")
    if kind.name != cut.tl_kind:
        at = f"cut {cut.index}" + (f" ({cut.layer})" if cut.layer else "")
        raise TlcutError(f"the bundle holds no trained {kind.name} transfer layer at {at}, its TL there is "
                         f"{cut.tl_kind}; train one with `tlcut retrain MODEL --cut {cut.layer or 'LAYER'} "
                         f"--tl {kind.name} -o BUNDLE`")
    return kind


__all__ = ["DEFAULT", "FAMILIES", "PAYLOAD", "SYNTAX", "Bottleneck", "Pool", "PoolBottleneck", "TransferLayer", "held",
           "load_weights", "parse", "save_weights"]
