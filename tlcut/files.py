"""Writing files so that readers never see half of one, with the permissions the user chose.

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders, whatever the umask; a
file or folder renamed into place keeps that mode, so results written aside and renamed would be
private to their writer while everything else tlcut writes follows the umask. Every atomic writer
goes through here and gets what ``open`` and ``mkdir`` would have given: 0666 or 0777 less the umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else set and reset."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def temp_dir(parent, prefix: str) -> Path:
    """``mkdtemp`` in ``parent``, with the mode ``mkdir`` would give (it is renamed into place)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def write_atomic(path, data: bytes | str) -> None:
    """Write ``data`` next to ``path`` and rename it over: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

