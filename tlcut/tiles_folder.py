"""The tiles folder `tlcut tiles` writes: bands of one segment for several nodes.

It sits outside the bundle, like a profile or a plan, and names the model by its sha256; this
module is the one place that spells its files and checks its manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlcut.errors import TlcutError

TILES_FORMAT = "tlcut-tiles"
TILES_VERSION = 1
TILES_MANIFEST = "tiles.json"


def band_file(index: int) -> str:
    """Where band ``index`` lives, relative to its tiles folder: the one place that spells it."""
    return f"band{int(index)}.onnx"


def read_tiles(folder) -> dict:
    """A tiles folder's manifest, checked: format, version, and every band's file present."""
    folder = Path(folder)
    mf = folder / TILES_MANIFEST
    if not mf.is_file():
        raise TlcutError(f"'{folder}' is not a tiles folder (no {TILES_MANIFEST}); write one with `tlcut tiles BUNDLE ... -o {folder}`")
    try:
        tiles = json.loads(mf.read_text())
        fmt, version, bands = tiles.get("format"), tiles.get("version"), tiles["bands"]
        files = [b["file"] for b in bands]
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        raise TlcutError(f"'{mf}' is damaged ({type(e).__name__}: {e}); re-run `tlcut tiles`") from None
    if fmt != TILES_FORMAT or version != TILES_VERSION:
        raise TlcutError(f"'{mf}' is {fmt!r} version {version}, this tlcut reads {TILES_FORMAT} version {TILES_VERSION}; re-run `tlcut tiles`")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise TlcutError(f"tiles folder '{folder}' lacks {', '.join(missing)}; re-run `tlcut tiles` with --force")
    return tiles
