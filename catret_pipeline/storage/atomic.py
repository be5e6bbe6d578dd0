"""Atomic file writes: a killed run must leave the last good file, never a partial one.

Every writer goes through a temporary sibling in the same directory (so the final
``os.replace`` is a same-filesystem rename, atomic on POSIX) and fsyncs before the rename.
The temporary's name, ``.<name>.<host>-<pid>-<random>.tmp``, says who writes it, so that a
later run can tell a killed writer's leftover from a live one (:mod:`.temp_files`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"


def current_umask() -> int:
    """The process umask, read without changing it.

    ``os.umask`` can only be read by setting it, and it is process-global: a thread creating a
    file between the two calls would get the temporary value. ``/proc/self/status`` (Linux >= 4.7)
    shows it read-only; elsewhere the two-call read is done once and remembered.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _umask_read_once()


@functools.cache
def _umask_read_once() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def host_tag() -> str:
    """8 hex digits naming this host in temporary file names (hostnames may hold dots)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


#: ``.<target>.<host>-<pid>-<mkstemp random>.tmp``; the host-pid part is absent in names
#: written before it existed. DuckDB adds ``.wal`` (its log) or ``.tmp`` (its spill folder).
_TEMP_RE = re.compile(
    r"^\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?:\.wal|\.tmp)?$"
)


@dataclass(frozen=True)
class TempName:
    target: str
    host: str | None
    pid: int | None


def parse_temp_name(name: str) -> TempName | None:
    """Who wrote a temporary file of :func:`atomic_path`, or None if the name is not one."""
    m = _TEMP_RE.match(name)
    if m is None:
        return None
    pid = m["pid"]
    return TempName(m["target"], m["host"], int(pid) if pid is not None else None)


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0644 under the usual umask 022."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` only on success.

    A remote ``target`` (a ``UPath`` on an object store, see ``storage/artefacts.py``) gets a
    local temporary file instead, uploaded in one call on success.
    """
    if _is_remote(target):
        with _staged_upload(target) as tmp:
            yield tmp
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{host_tag()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes 0600 whatever the umask: a UI or daemon running as another user (or a
        # group-shared data dir) could not read the renamed file. Give it the umask's mode.
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _is_remote(target) -> bool:
    return hasattr(target, "fs") and not isinstance(target, Path)


@contextlib.contextmanager
def _staged_upload(target) -> Iterator[Path]:
    # Object stores have no rename: the file is written completely first (a failure here
    # uploads nothing), then sent in one call. On S3 / GCS a single PUT (or a multipart upload,
    # committed as one object on completion) replaces the key atomically, so readers see the
    # previous object until the new one is whole.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{host_tag()}-{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            target.fs.put_file(tmp, target.path)
        except FileNotFoundError:
            # Bucket stores have no folders; a hierarchical one (sftp, memory://) needs parents.
            target.fs.makedirs(target.parent.path, exist_ok=True)
            target.fs.put_file(tmp, target.path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(target, data: bytes):
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target if _is_remote(target) else Path(target)


def atomic_write_text(target, text: str):
    return atomic_write_bytes(target, text.encode("utf-8"))


def _is_float_list(dtype: pa.DataType) -> bool:
    if (
        pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
    ):
        return pa.types.is_floating(dtype.value_type)
    return False


def write_parquet_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write an Arrow table as zstd Parquet, non-atomically (callers wrap it in ``atomic_path``).

    Float vector columns skip dictionary encoding: on embeddings it only adds size.
    """
    dictionary_cols = [f.name for f in table.schema if not _is_float_list(f.type)]
    pq.write_table(
        table,
        path,
        compression=PARQUET_COMPRESSION,
        use_dictionary=dictionary_cols or False,
    )


def atomic_write_parquet(df: pl.DataFrame | pa.Table, target):
    table = df.to_arrow() if isinstance(df, pl.DataFrame) else df
    with atomic_path(target) as tmp:
        write_parquet_table(table, tmp)
    return target if _is_remote(target) else Path(target)
