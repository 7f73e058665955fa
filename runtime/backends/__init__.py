"""Backends: one file each, behind the one interface in ``base.py``.

Callers ask for a backend by name with ``get(name)`` and use only ``Backend.compile`` and
``Backend.runner`` and the ``Runner`` they return; nothing outside this package imports a
backend's own library. A new backend is a new file here
and one line in ``_BACKENDS``. Backend options (OpenVINO's performance hint) are keyword arguments of
``get``; a backend takes the ones it knows and ignores the rest.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.runtime.backends.base import Backend, Runner

_BACKENDS = {
    "onnxrt": "tlcut.runtime.backends.onnxrt:OnnxrtBackend",
    "openvino": "tlcut.runtime.backends.openvino:OpenvinoBackend",
    "tensorrt": "tlcut.runtime.backends.tensorrt:TensorrtBackend",
}

DEFAULT = "onnxrt"


def names() -> list[str]:
    return list(_BACKENDS)


def get(name: "str | Backend" = DEFAULT, **options) -> Backend:
    """The backend called ``name`` (a Backend passes through), built with ``options`` (e.g. hint);
    its library is imported only now."""
    if isinstance(name, Backend):
        return name
    spec = _BACKENDS.get(name)
    if spec is None:
        raise TlcutError(f"unknown backend '{name}'; available: {', '.join(_BACKENDS)}")
    import importlib

    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["Backend", "Runner", "get", "names", "DEFAULT"]
