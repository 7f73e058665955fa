"""Backends: one file each, behind the one interface in ``base.py``.

Callers ask for a backend by name with ``get(name)`` and use only ``Backend.compile`` and
``Backend.runner`` and the ``Runner`` they return; nothing outside this package imports a
backend's own library. A new backend is a new file here and one line in ``_BACKENDS``: its flags
come with it (``Backend.add_args``/``options_from_args``, after Polygraphy's argument groups), and
the CLI's choices and every other reader of a backend's name take it from here. Backend options
(OpenVINO's performance hint) are keyword arguments of ``get``; a backend takes the ones it knows
and ignores the rest.
"""

from __future__ import annotations

from tlcut.errors import TlcutError
from tlcut.runtime.backends.base import Backend, Runner

#: The backends' names: the only place they are spelled. A backend that builds files of its own
#: files them under its name (the manifest's ``engine`` column, its folder in a half).
ONNXRT, OPENVINO, TENSORRT = "onnxrt", "openvino", "tensorrt"

_BACKENDS = {
    ONNXRT: "tlcut.runtime.backends.onnxrt:OnnxrtBackend",
    OPENVINO: "tlcut.runtime.backends.openvino:OpenvinoBackend",
    TENSORRT: "tlcut.runtime.backends.tensorrt:TensorrtBackend",
}

DEFAULT = ONNXRT


def names() -> list[str]:
    return list(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``; importing it imports none of its engine's library."""
    spec = _BACKENDS.get(name)
    if spec is None:
        raise TlcutError(f"unknown backend '{name}'; available: {', '.join(_BACKENDS)}")
    import importlib

    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def get(name: "str | Backend" = DEFAULT, **options) -> Backend:
    """The backend called ``name`` (a Backend passes through), built with ``options`` (e.g. hint);
    its library is imported only now."""
    if isinstance(name, Backend):
        return name
    return backend_class(name)(**options)


__all__ = ["Backend", "Runner", "backend_class", "get", "names", "DEFAULT", "ONNXRT", "OPENVINO", "TENSORRT"]
