"""Remove the temporary files of atomic writers that died (killed, machine crash) mid-write.

A killed ``atomic_path`` leaves its ``.<name>.<host>-<pid>-<random>.tmp`` (a partial Parquet file,
a half-built ``catret.duckdb`` with its ``.wal``) next to the real file, and nothing else ever
removes it. ``catret materialize`` sweeps them from the data dir before it builds.

Deleting a live writer's temporary would make its rename fail, so a file is stale only when:

- it was written on this host and the process named in it is gone: a pid check is exact here,
  and a live pid (even one reused by an unrelated process) keeps the file, the safe direction;
- or it was written on another host sharing the data dir, or by a catret from before names
  carried a pid, and has not been modified for :data:`FOREIGN_STALE_AGE_S`: no pid can be
  checked there, and every writer touches its file continuously while it writes.

Only names this module's pattern matches are touched, symlinks are never followed, and nothing
outside the data dir is visited.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catret_pipeline.storage.atomic import host_tag, parse_temp_name

#: A day: far beyond any pause of a live writer, short enough that leftovers do not pile up.
FOREIGN_STALE_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class Removed:
    path: Path
    reason: str
    size: int


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a writer's, a build's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True


def stale_reason(name: str, mtime: float, now: float, host: str | None = None) -> str | None:
    """Why the temporary file ``name`` is a dead writer's leftover, or None to keep it."""
    info = parse_temp_name(name)
    if info is None:
        return None
    if info.pid is not None and info.host == (host or host_tag()):
        return None if pid_alive(info.pid) else f"writer process {info.pid} is gone"
    age = now - mtime
    if age > FOREIGN_STALE_AGE_S:
        who = "another host" if info.pid is not None else "an unnamed writer"
        return f"written by {who}, untouched for {age / 3600:.0f} h"
    return None


def _candidates(root: Path) -> Iterator[os.DirEntry]:
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # vanished or unreadable: nothing of ours to remove there
            continue
        for entry in entries:
            if parse_temp_name(entry.name) is not None:
                yield entry
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))


def remove_stale_temp_files(data_dir: str | os.PathLike, now: float | None = None) -> list[Removed]:
    """Delete every stale atomic-writer temporary under ``data_dir``; returns what went."""
    root = Path(data_dir)
    now = time.time() if now is None else now
    removed = []
    for entry in _candidates(root):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        reason = stale_reason(entry.name, st.st_mtime, now)
        if reason is None:
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):  # DuckDB's spill folder
                shutil.rmtree(path)
            elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                path.unlink()
            else:
                continue
        except FileNotFoundError:  # its writer (or another sweep) removed it first
            continue
        removed.append(Removed(path, reason, st.st_size))
    return removed
