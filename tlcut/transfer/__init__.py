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


def records(bundle) -> list[dict]:
    """The manifest's ``transfer_layers``: what `tlcut retrain` trained, a row per cut ({cut, layer,
    kind, weights, ...}; docs/bundle.md). Absent in a bundle from before learned kinds: pool."""
    return bundle.manifest.get("transfer_layers", [])


def weights_of(bundle, cut) -> dict | None:
    """The trained weights of ``cut``'s TL in ``bundle`` as arrays; None for a kind without weights."""
    row = next((r for r in records(bundle) if r["cut"] == cut.index and r["kind"] == cut.tl_kind), {})
    return load_weights(bundle.path / row["weights"], f"the {cut.tl_kind} TL at cut {cut.index}") if row.get("weights") else None


def record(bundle, cut, kind, weights: dict | None, info: dict):
    """Make ``kind`` the TL of ``cut`` in ``bundle``: its weights beside the halves, its row in
    ``transfer_layers`` and its payload in the cut's row, in one manifest write; returns the new Cut."""
    from tlcut.bundle import Cut, tl_weights_file

    kind = parse(kind)
    row = {"cut": cut.index, "layer": cut.layer, "kind": kind.name, **info}
    if weights:
        row["weights"] = tl_weights_file(cut.index)
        save_weights(bundle.path / row["weights"], weights)
    tl_shape = kind.wire_shape(cut.shape, cut.layout)
    bundle.cuts[cut.index] = new = Cut.from_json({**cut.to_json(), "tl_shape": list(tl_shape), "tl_kind": kind.name})
    bundle.manifest["cuts"][cut.index] = new.to_json()
    bundle.manifest["transfer_layers"] = [r for r in records(bundle) if r["cut"] != cut.index] + [row]
    bundle.save_manifest()
    return new


__all__ = ["DEFAULT", "FAMILIES", "PAYLOAD", "SYNTAX", "Bottleneck", "Pool", "PoolBottleneck", "TransferLayer", "held",
           "load_weights", "parse", "record", "records", "save_weights", "weights_of"]
