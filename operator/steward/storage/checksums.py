"""Size and checksums of a local file, as Rucio records them.

Rucio identifies a file's content by its size and its Adler-32 checksum (eight lower-case hex
digits; the transfer tools and the storage systems verify it after every copy) and, where
known, its MD5. `steward ingest` computes them for files that were written outside Rucio, and
the disaster-recovery drill computes them again for the bytes it reads back, so both sides of
a comparison come from this one function.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CHUNK_SIZE", "Checksums", "adler32_hex", "file_checksums"]

CHUNK_SIZE: Final = 1 << 20
"""Bytes read at a time: files of any size are checksummed in constant memory."""


@dataclass(frozen=True, slots=True)
class Checksums:
    """What Rucio keeps about a file's content."""

    bytes: int
    """Size in bytes."""
    adler32: str
    """Adler-32, eight lower-case hex digits (Rucio's format: zero-padded)."""
    md5: str
    """MD5, 32 lower-case hex digits."""


def adler32_hex(value: int) -> str:
    """Format an Adler-32 value as Rucio stores it: eight lower-case hex digits."""
    return f"{value & 0xFFFFFFFF:08x}"


def file_checksums(path: Path) -> Checksums:
    """Read ``path`` once and return its size, Adler-32 and MD5.

    Raises
    ------
    OSError
        The file cannot be read (the caller names it in its error).
    """
    adler = 1  # Adler-32 of nothing
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            adler = zlib.adler32(chunk, adler)
            md5.update(chunk)
            size += len(chunk)
    return Checksums(size, adler32_hex(adler), md5.hexdigest())
