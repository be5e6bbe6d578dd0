"""File digests, read in fixed-size chunks.

Weight files and HNSW indexes run to gigabytes: reading them whole to hash them would hold the
whole file in memory once more. Standard library only, so every stage can import it.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO, Protocol

#: Bytes read per call; large enough that the hashing, not the syscalls, sets the speed.
CHUNK_BYTES = 1 << 20


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


def update_from_file(
    h: _Hash, path: str | os.PathLike, *, copy_to: IO[bytes] | None = None
) -> None:
    """Feed the file's bytes to ``h`` chunk by chunk.

    ``copy_to`` also receives every chunk, so a file can be copied and hashed in one read;
    several files fed to one ``h`` hash as their concatenation.
    """
    # A remote artefact (a UPath on an object store) opens through its own filesystem.
    with path.open("rb") if hasattr(path, "fs") else open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            h.update(chunk)
            if copy_to is not None:
                copy_to.write(chunk)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's contents; ``OSError`` when it cannot be read."""
    h = hashlib.sha256()
    update_from_file(h, path)
    return h.hexdigest()


def sha256_file_or_none(path: str | os.PathLike) -> str | None:
    """Like ``sha256_file``, but ``None`` when the file is missing or unreadable, for callers
    to whom such a file means "no valid artefact" rather than an error."""
    try:
        return sha256_file(path)
    except OSError:
        return None
