"""Two error types: one for the user's mistakes, one for ours.

A ``TlcutError`` reaches the user as a single line ("tlcut: error: ...") and a non-zero exit; its
message says what was asked, what exists, and what to do. Anything else is a bug and keeps its
traceback.
"""


class TlcutError(Exception):
    """Bad input or a bad environment: the message is the whole story for the user."""

    exit_code = 2


class InternalError(Exception):
    """An invariant of tlcut itself broke; report it with the traceback."""
