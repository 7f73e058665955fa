"""Placements: where a request's work runs and what crosses the link, in one type with one label.

A placement is everything on the device (``device``), everything on the edge with the model input
crossing (``edge``), or the model cut at cut K, optionally through the Transfer Layer, with the
crossing tensor in a wire encoding. The plan ranks placements, ``tlcut run`` runs one, the CLI
parses one, and the demo and results tables print their labels; so a new option (a third tier)
extends this one type. Which encodings apply where, and how a label names them, is the encodings'
own (tlcut/encodings/).

Labels read ``device only``, ``edge only``, ``edge only, uint8``, ``edge only, JPEG q90``, ``cut 5``,
``cut 5 + TL``, ``cut 5 + TL, int8``, and with a learned transfer layer ``cut 5 + bottleneck:8, int8+zstd``.
A label is for people: what identifies a placement is ``identity`` (the fields, the TL's kind spelled out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from tlcut import encodings
from tlcut.errors import TlcutError

DEVICE, EDGE, SPLIT = "device", "edge", "split"
#: Wire encodings (docs/protocol.md, field `encoding`), in protocol order.
ENCODINGS = encodings.NAMES
#: What a cut's feature map can cross as: float32, or float16 / int8 over the tensor's own range.
CUT_ENCODINGS = encodings.names(encodings.CUT)
#: What the model input can cross as when the edge runs everything: float32, the camera's uint8
#: pixels (lossless for a camera image), or a JPEG of them at a quality.
INPUT_ENCODINGS = encodings.names(encodings.INPUT)
DEFAULT_JPEG_QUALITY = encodings.get("jpeg").default_quality
#: Choices for a --tl flag: halves with the TL, without, or both where the TL applies.
TL_CHOICES = ("on", "off", "both")
#: What the CLI takes for --cut besides a cut index, tensor or layer name.
SENTINELS = {"device": DEVICE, "input": EDGE, "edge": EDGE}


@dataclass(frozen=True)
class Placement:
    where: str  # DEVICE, EDGE or SPLIT
    cut: int | None = None  # the cut index, for SPLIT
    tl: bool = False
    encoding: str = encodings.DEFAULT
    quality: int | None = None  # for an encoding that takes one (jpeg) only
    #: The TL's kind where it is a learned one the bundle holds at the cut (tlcut/transfer); None: pool.
    tl_kind: str | None = None

    def __post_init__(self):
        if self.where not in (DEVICE, EDGE, SPLIT):
            raise ValueError(f"placement where={self.where!r}")
        if (self.where == SPLIT) != (self.cut is not None):
            raise ValueError("a split placement has a cut; the others have none")
        if self.tl and self.where != SPLIT:
            raise TlcutError("the TL applies only at a cut; device only and edge only take --tl off")
        if self.tl_kind is not None:  # spelled as tlcut.transfer spells it; held or not, the bundle says
            if not self.tl:
                raise TlcutError(f"a transfer layer's kind ({self.tl_kind}) applies only with the TL on")
            name = str(self.tl_kind).strip().lower()
            object.__setattr__(self, "tl_kind", None if name == "pool" else name)
        allowed = INPUT_ENCODINGS if self.where == EDGE else CUT_ENCODINGS if self.where == SPLIT else (encodings.DEFAULT,)
        if self.encoding not in allowed:
            what = {EDGE: "the model input (edge only)", SPLIT: "a cut's tensor", DEVICE: "device only (nothing crosses)"}
            raise TlcutError(f"encoding '{self.encoding}' does not apply to {what[self.where]}; use one of {', '.join(allowed)}")
        enc = encodings.get(self.encoding)
        if enc.default_quality is not None:
            if self.quality is None:
                object.__setattr__(self, "quality", enc.default_quality)
            try:
                enc.check_quality(self.quality)
            except ValueError as e:
                raise TlcutError(str(e)) from None
        elif self.quality is not None:
            takes = " or ".join(e.name for e in encodings.ALL if e.default_quality is not None)
            raise TlcutError(f"a quality applies only to --encoding {takes}")

    @property
    def label(self) -> str:
        if self.where == DEVICE:
            base = "device only"
        elif self.where == EDGE:
            base = "edge only"
        else:
            base = f"cut {self.cut}{(' + ' + (self.tl_kind or 'TL')) if self.tl else ''}"
        wire = encodings.get(self.encoding).label(self.quality)
        return f"{base}, {wire}" if wire else base

    @property
    def kind(self) -> str | None:
        """The TL's kind spelled out (``pool`` for the paper's); None without the TL."""
        return (self.tl_kind or "pool") if self.tl else None

    @property
    def identity(self) -> dict:
        """What identifies the placement in a record (the bundle's accuracy rows): its fields, the TL's kind spelled out."""
        return {"where": self.where, "cut": self.cut, "tl": self.tl, "tl_kind": self.kind, "encoding": self.encoding,
                "quality": self.quality}

    @property
    def slug(self) -> str:
        """The label as a file-name part: ``cut-5-TL-int8``."""
        return re.sub(r"[^A-Za-z0-9]+", "-", self.label).strip("-")

    @property
    def offloads(self) -> bool:
        return self.where != DEVICE

    @property
    def lossless(self) -> bool:
        """Computes exactly what the whole model computes on a camera's uint8 image: no TL, and a
        wire that loses nothing (float32, or the image's own uint8 pixels)."""
        return not self.tl and not encodings.get(self.encoding).lossy

    def with_(self, **kw) -> "Placement":
        return replace(self, **kw)

    def to_json(self) -> dict:
        d = {"where": self.where, "cut": self.cut, "tl": self.tl, "encoding": self.encoding, "label": self.label}
        if self.quality is not None:
            d["quality"] = self.quality
        if self.tl_kind is not None:  # absent: pool, so a pool placement's JSON reads as before
            d["tl_kind"] = self.tl_kind
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Placement":
        return cls(d["where"], d.get("cut"), bool(d.get("tl", False)), d.get("encoding", encodings.DEFAULT), d.get("quality"),
                   d.get("tl_kind"))

    @classmethod
    def from_label(cls, label: str, tl_kind: str | None = None) -> "Placement":
        """The placement a label names (records written before placements had an identity were keyed by
        label); ``tl_kind``: what ``+ TL`` stood for (the cut's kind then). ValueError for no label."""
        m = re.fullmatch(r"(device only|edge only|cut (\d+)(?: \+ (\S+))?)(?:, (.+))?", label.strip())
        if not m:
            raise ValueError(f"not a placement label: {label!r}")
        where = DEVICE if m[1] == "device only" else EDGE if m[1] == "edge only" else SPLIT
        tl = m[3] is not None
        kind = (tl_kind if m[3] == "TL" else m[3]) if tl else None
        wire, q = m[4] or "", re.search(r"\d+", m[4] or "")
        for name in (INPUT_ENCODINGS if where == EDGE else CUT_ENCODINGS if where == SPLIT else (encodings.DEFAULT,)):
            enc = encodings.get(name)
            quality = int(q[0]) if enc.default_quality is not None and q else None
            if enc.label(quality) == wire:
                return cls(where, int(m[2]) if m[2] else None, tl, name, quality, kind)
        raise ValueError(f"no wire encoding is labelled {m[4]!r}")

    @classmethod
    def resolve(cls, bundle, cut: str, tl: bool = False, encoding: str = encodings.DEFAULT,
                quality: int | None = None) -> "Placement":
        """From the CLI's words: ``--cut device|input|K`` (index, tensor or layer), ``--tl``, ``--encoding``.
        With the TL, the placement names the kind the bundle holds at the cut."""
        text = str(cut).strip()
        where = SENTINELS.get(text.lower())
        if where:
            return cls(where, None, tl, encoding, quality)
        c = bundle.cut(text)
        if tl and not c.tl:
            raise TlcutError(f"the TL cannot apply at cut {c.index} ({c.why_no_tl}); use --tl off")
        return cls(SPLIT, c.index, tl, encoding, quality, c.tl_kind if tl else None)


def tl_modes(cut, choice: str) -> list[bool]:
    """The TL settings ``choice`` (on, off, both) asks for at ``cut``; 'both' gives the TL only where it applies."""
    if choice not in TL_CHOICES:
        raise TlcutError(f"--tl must be one of {', '.join(TL_CHOICES)}, got '{choice}'")
    if choice == "on" and not cut.tl:
        raise TlcutError(f"the TL cannot apply at cut {cut.index} ({cut.why_no_tl}); use --tl off or --tl both")
    return [m for m in {"on": [True], "off": [False], "both": [False, True]}[choice] if not m or cut.tl]
