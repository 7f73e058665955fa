"""Accuracy records: what `tlcut eval` measured on the test split, one row per placement and
precision, in the bundle's manifest (``accuracy``, docs/bundle.md). The placement's label is for
people; the row's key is its identity, so a label may change its words and a learned TL's kind
tells its rows apart from the pool TL's. Bundles written before rows keyed the table by label:
those read converted (``accuracy_rows``). The plan reads rows through ``toolchain/plan.accuracy_of``.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.placement import Placement

#: What identifies an accuracy row: the placement (its TL's kind spelled out, ``pool`` for the paper's;
#: null without the TL), then the precision both sides ran at. The engine is recorded, not part of the key.
ACCURACY_KEY = ("where", "cut", "tl", "tl_kind", "encoding", "quality", "precision")


def accuracy_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ACCURACY_KEY)


def accuracy_rows(table, kinds: dict[int, str] | None = None) -> list[dict]:
    """The rows of a manifest's ``accuracy``: rows as written, or a table from before rows,
    {placement label: {precision: result}}, converted; there ``+ TL`` meant the cut's TL, its kind in
    ``kinds`` (cut index -> kind; pool where absent). A label that names no placement is dropped."""
    if isinstance(table, list):
        return table
    rows = []
    for label, by_precision in (table or {}).items():
        if label.startswith("_") or not isinstance(by_precision, dict):
            continue  # not a label: a caller's note (``_source``)
        try:
            p = Placement.from_label(label)
            p = Placement.from_label(label, (kinds or {}).get(p.cut)) if p.tl else p
        except (ValueError, TlcutError):
            continue
        for precision, result in by_precision.items():
            rows.append({**p.identity, "precision": precision, "label": label, **result})
    return rows
