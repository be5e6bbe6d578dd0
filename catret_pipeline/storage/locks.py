"""Cross-process file locks (``flock``) on one data dir.

Two uses (docs/operations.md, "Concurrency"):

- the *instance lock* serialises creating and opening the Dagster instance: Dagster's SQLite
  storages create their tables and stamp ``alembic_version`` on first open without any lock, so
  two first runs on a fresh data dir could leave two alembic heads and an instance that every
  later command refuses;
- the *build lock* is held by ``catret materialize`` for its whole run: a second build on the
  same data dir is refused at once (exit code 3) instead of racing the run-slot check.

``flock`` locks belong to the open file and vanish when the process dies (SIGKILL included), so
a killed build never leaves a stale lock behind; the pid written into the file is only for the
message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

INSTANCE_LOCK = ".catret-instance.lock"
BUILD_LOCK = ".catret-build.lock"


class LockBusy(Exception):
    """The lock is held by another process; ``holder`` is its recorded pid text ('' if none)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(
            f"{path} is held by {'process ' + holder if holder else 'another process'}"
        )
        self.path = path
        self.holder = holder


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return ""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing).

    ``wait_s=None`` waits as long as it takes; ``0`` fails at once; otherwise retry for that many
    seconds. Raises :class:`LockBusy` when it cannot be taken in time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise LockBusy(path, _holder(fd)) from None
                time.sleep(0.05)
        # Record the holder for the refusal message of whoever comes next.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
