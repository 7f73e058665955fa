"""The runner interface every backend implements, after Polygraphy's.

The base does what all backends share: the active/inactive life cycle, context-manager use, and
the check that a feed matches the declared input names, shapes and dtypes (so a wrong request
fails with a message, not deep inside an engine). A backend overrides the small ``*_impl``
methods only.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from tlcut.errors import TlcutError


class Runner:
    """Runs one ONNX half (or what a backend built from it)."""

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self.last_inference_time: float | None = None
        #: Lab emulation of a slower device without root: each run is stretched to this many times
        #: its own duration by sleeping after it (the testbed uses a cgroup CPU quota instead).
        self.slowdown = 1.0
        self._stop = threading.Event()  # the run in progress's: cancel() sets it

    # -- to implement -------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        raise NotImplementedError

    def _input_metadata_impl(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        raise NotImplementedError

    def _output_names_impl(self) -> list[str]:
        raise NotImplementedError

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def input_metadata(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        self._require_active()
        return self._input_metadata_impl()

    def output_names(self) -> list[str]:
        self._require_active()
        return self._output_names_impl()

    def infer(self, feed: dict[str, np.ndarray], check: bool = True,
              stop: threading.Event | None = None) -> dict[str, np.ndarray]:
        """``stop``: the caller's event; set, with ``cancel()``, it stops this run even if it is set
        before the run begins (a thread that has not started it yet)."""
        self._require_active()
        if check:
            self.check_feed(feed)
        t0 = time.perf_counter()
        self._stop = stop = stop if stop is not None else threading.Event()
        if stop.is_set():
            raise TlcutError(f"{self.name}: run cancelled")
        out = self._infer_impl(feed)
        if self.slowdown > 1.0 and stop.wait((time.perf_counter() - t0) * (self.slowdown - 1.0)):
            raise TlcutError(f"{self.name}: run cancelled")
        self.last_inference_time = time.perf_counter() - t0
        return out

    def cancel(self) -> None:
        """Stop the run in progress, from another thread: its ``infer`` raises. A hedged request
        (runtime/run.py) cancels the local run the edge's answer beat, so it stops taking the
        device's CPU; an engine that cannot stop a run lets it finish."""
        self._stop.set()  # ends a lab slowdown's wait too
        if self.is_active:  # an engine checks _stop once its run is started (a cancel just before it)
            self._cancel_impl()

    def _cancel_impl(self) -> None:
        pass

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        meta = self._input_metadata_impl()
        if set(feed) != set(meta):
            raise TlcutError(f"{self.name}: inputs {sorted(feed)} given, expected {sorted(meta)}")
        for k, (dtype, shape) in meta.items():
            a = feed[k]
            if a.dtype != dtype or tuple(a.shape) != tuple(shape):
                raise TlcutError(
                    f"{self.name}: input '{k}' is {a.dtype}{list(a.shape)}, expected {np.dtype(dtype)}{list(shape)}"
                )

    def _require_active(self) -> None:
        if not self.is_active:
            raise TlcutError(f"runner {self.name} is not active; use it as a context manager or call activate()")


class Backend:
    """Turns an ONNX half into something runnable, and runs it."""

    name = "?"
    #: Whether ``compile`` builds an artifact of its own (stored in the bundle under the backend's
    #: name), and the file suffix of that artifact. A backend that runs plain ONNX builds nothing.
    builds = False
    suffix = ".onnx"

    def __init__(self, **options):
        self.options = options

    # -- its own flags (Polygraphy's argument-group halves): the CLI loops over the registry ------
    @classmethod
    def add_args(cls, group) -> list:
        """Add this backend's own flags to the CLI's engine group; return their argparse actions.
        Called at parser build time: no engine library may be imported here."""
        return []

    @classmethod
    def options_from_args(cls, args, chosen: str) -> dict:
        """This backend's keyword options (for ``get``) from the parsed flags. ``chosen`` is the
        --backend asked for: a backend may refuse its own flags given for another one."""
        return {}

    def compile(self, onnx_path: Path, out_path: Path, *, threads: int | None = None) -> None:
        """Build this backend's artifact for ``onnx_path`` at ``out_path``."""
        raise NotImplementedError

    def runner(self, artifact, *, threads: int | None = None, profile: bool = False) -> Runner:
        """An inactive runner for an artifact of ``compile`` (or a plain ONNX file)."""
        raise NotImplementedError

    #: Backends whose engine has a per-node profiler set this and implement ``node_times``.
    has_node_profiler = False

    def node_times(self, runner, onnx_path, *, skip: int):
        """Seconds per ONNX node for each run of a ``profile=True`` runner after the first ``skip``."""
        raise NotImplementedError
