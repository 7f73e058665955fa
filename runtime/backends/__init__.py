"""Backends: one file each, behind the one interface in ``base.py``.

Callers ask for a backend by name with ``get(name)`` and use only ``Backend.compile`` and
``Backend.runner`` and the ``Runner`` they return; nothing outside this package imports a
backend's own library. A new backend (TensorRT for the Jetson and the edge GPU) is a new file here
and one line in ``_BACKENDS``.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.runtime.backends.base import Backend, Runner

_BACKENDS = {
    "onnxrt": "tlcut.runtime.backends.onnxrt:OnnxrtBackend",
}

DEFAULT = "onnxrt"


def names() -> list[str]:
    return list(_BACKENDS)


def get(name: str = DEFAULT) -> Backend:
    """The backend called ``name``; its library is imported only now."""
    spec = _BACKENDS.get(name)
    if spec is None:
        raise TlcutError(f"unknown backend '{name}'; available: {', '.join(_BACKENDS)}")
    import importlib

    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["Backend", "Runner", "get", "names", "DEFAULT"]
