"""Files Steward writes whole: secrets (0600 from the first byte) and exports, atomically.

A secret written with ``Path.write_text`` and then ``chmod(0o600)`` is readable by anyone for
the moment between the two calls, and a crash in between leaves it readable for good. Here the
file is created with its final mode (``os.open`` with ``O_EXCL`` and the mode), filled, flushed
to disk, and renamed over the destination: a reader sees the old file or the whole new one,
never a partial or world-readable one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic", "write_private"]


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; the file has ``mode`` from its creation.

    The umask still applies (it can only remove permissions), so a private mode stays private.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: str | bytes) -> None:
    """Write a secret (a password, a private key) readable by its owner only, atomically."""
    write_atomic(path, data, mode=0o600)
