"""Element types, written down once: numpy name, wire code (docs/protocol.md), size, ONNX Runtime name.

The bundle, the wire protocol and the backends all name dtypes; they read them from here. The C
side has the same table as the TLC_F32.. enum in runtime/c/include/tlcut.h.
"""

from __future__ import annotations

import numpy as np

#: numpy name -> (wire code, bytes per element, ONNX Runtime type string)
TABLE = {
    "float32": (1, 4, "tensor(float)"),
    "float16": (2, 2, "tensor(float16)"),
    "int8": (3, 1, "tensor(int8)"),
    "uint8": (4, 1, "tensor(uint8)"),
    "int32": (5, 4, "tensor(int32)"),
    "int64": (6, 8, "tensor(int64)"),
    "float64": (7, 8, "tensor(double)"),
}

CODES = {name: code for name, (code, _, _) in TABLE.items()}
NAMES = {code: name for name, code in CODES.items()}
SIZES = {name: size for name, (_, size, _) in TABLE.items()}
_ORT = {ort: np.dtype(name) for name, (_, _, ort) in TABLE.items()} | {"tensor(bool)": np.dtype(np.bool_)}


def from_ort(type_str: str) -> np.dtype:
    """numpy dtype of an ONNX Runtime type string such as 'tensor(float)'."""
    return _ORT[type_str]


def nbytes(shape, dtype: str) -> int:
    n = SIZES[dtype]
    for d in shape:
        n *= int(d)
    return n
