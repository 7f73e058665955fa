"""Wire encodings (docs/protocol.md, the header's ``encoding`` byte): one class per encoding, one
file each here, listed in ``ALL``.

Everything that names or uses an encoding reads this registry: a placement's checks and label, the
CLI's ``--encoding`` choices, ``tlcut bench`` (which times each one), the plan, the payload contract,
and runtime/protocol.py's ``encode`` and ``restore``, which dispatch here. A new encoding is a file
here and one entry in ``ALL``, plus its C decode function (runtime/c/src/decode/), a row of the
behaviour table (scripts/make_behaviour_vectors.py) and a section of the spec.
"""

from __future__ import annotations

from tlcut.encodings.base import CUT, INPUT, Encoding, WireError, image_layout
from tlcut.encodings.float16 import Float16
from tlcut.encodings.int4_zstd import Int4Zstd
from tlcut.encodings.int8 import Int8
from tlcut.encodings.int8_zstd import Int8Zstd
from tlcut.encodings.jpeg import Jpeg
from tlcut.encodings.raw import Raw
from tlcut.encodings.uint8 import Uint8

#: Every encoding, in protocol order.
ALL: tuple[Encoding, ...] = (Raw(), Float16(), Int8(), Uint8(), Jpeg(), Int8Zstd(), Int4Zstd())
#: The one every placement starts from and bench's baseline: the tensor as it is.
DEFAULT = "raw"
NAMES = tuple(e.name for e in ALL)
_BY_NAME = {e.name: e for e in ALL}
_BY_CODE = {e.code: e for e in ALL}
assert len(_BY_NAME) == len(_BY_CODE) == len(ALL), "two encodings share a name or a protocol code"


def get(name: str) -> Encoding:
    e = _BY_NAME.get(name)
    if e is None:
        raise ValueError(f"unknown encoding '{name}'; use one of {', '.join(NAMES)}")
    return e


def by_code(code: int) -> Encoding | None:
    return _BY_CODE.get(code)


def names(applies_to: str | None = None) -> tuple[str, ...]:
    """The encodings that may carry ``applies_to`` (INPUT or CUT; None: all), in protocol order."""
    return tuple(e.name for e in ALL if applies_to is None or applies_to in e.applies_to)


__all__ = ["ALL", "CUT", "DEFAULT", "INPUT", "NAMES", "Encoding", "WireError", "by_code", "get", "image_layout", "names"]
