"""Open a file only if it really lies inside the raw root, symbolic links resolved.

A metadata file (or a market / category directory above it) may be a symbolic link. One that
resolves inside the raw root is read like any file; one that resolves outside is refused
before a byte is read, because whatever it points at (``/etc/shadow``, another user's files)
would otherwise surface in ``raw_products`` or in the first 500 characters of
``quarantine.raw_text``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


class OutsideRoot(Exception):
    """The path resolves outside the root; nothing was read."""


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` itself or below it (both already resolved)."""
    return path == root or root in path.parents


def open_confined(path: str | Path, root: str | Path) -> BinaryIO:
    """``path`` opened for binary reading, or :class:`OutsideRoot` / ``OSError``.

    Resolve, check, then open the resolved name with ``O_NOFOLLOW`` so a link swapped in for
    the last component after the check is not followed; where ``/proc/self/fd`` exists the
    opened descriptor's real path is checked again, which also catches a directory above it
    swapped for a link in between.
    """
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if not is_inside(real, real_root):
        raise OutsideRoot(
            f"{Path(path).name} resolves outside the raw root (a symbolic link, or under one); "
            "links out of the raw root are not followed"
        )
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.is_symlink() and not is_inside(Path(os.readlink(proc)), real_root):
            raise OutsideRoot(
                f"{Path(path).name} moved outside the raw root while being opened; not read"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
