"""Libraries' own log lines stay off the user's terminal unless they ask (`tlcut -v`).

TensorFlow prints its start-up lines (oneDNN, "All log messages before absl::InitializeLog()")
from C++ straight to file descriptor 2 before any setting of its own applies, once per native
library it loads; tf2onnx and absl log through Python. tlcut's own lines and errors are the output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

#: Set by `tlcut -v` (and inherited by the commands tlcut starts): show what libraries print.
VERBOSE_ENV = "TLCUT_VERBOSE"
_LOGGERS = ("tensorflow", "absl", "tf2onnx", "keras", "h5py", "onnxruntime")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def silence_libraries(warn: bool = False) -> None:
    """C++ logs below errors off and library loggers quiet; with ``warn`` (the command line, not a
    library caller) their Python warnings too."""
    if verbose():
        return
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if warn:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", module=r"(tensorflow|keras|tf2onnx|absl|google\.protobuf)(\.|$)")


@contextlib.contextmanager
def native_stderr_off():
    """Send file descriptor 2 to /dev/null for the block (what C++ libraries print at load time);
    Python's own sys.stderr is flushed first and an exception still reaches the caller."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_keras():
    """Keras (and TensorFlow under it), imported without their start-up lines; ImportError as is."""
    silence_libraries()
    with native_stderr_off():
        import keras
        import tensorflow  # noqa: F401
    silence_libraries()  # absl's handler is set up by the import
    return keras
