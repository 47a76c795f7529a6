"""Report files are replaced whole: written to a temporary file next to the target, fsynced, renamed.

A write that fails (a full disk, text no encoder accepts) leaves the previous report as it was and
no temporary file behind; a reader never sees half a report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: mode of a new report file (reports hold no secrets; the directory's permissions still apply)
REPORT_MODE = 0o644


def utf8(text: str) -> bytes:
    """UTF-8 of ``text``; a lone surrogate that got past the facts boundary becomes U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, REPORT_MODE & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
