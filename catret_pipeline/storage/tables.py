"""Where table assets live: ``<data_dir>/assets`` or a ``table_store`` URL (universal_pathlib).

Pure (no Dagster): the IO manager, the ``storage`` resource and the DuckDB catalogue are thin
around it. A local root (no URL, or a ``file://`` URL) is a plain :class:`pathlib.Path` and keeps
the atomic temp + rename writes and reads through one open handle; any other scheme
(``memory://``, ``s3://``, ``gs://``, ...) is a :class:`upath.UPath` on an fsspec filesystem.
Binary artefacts follow their own setting, ``artefact_store`` (``storage/artefacts.py``);
``catret.duckdb`` always stays under the local data directory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TypeAlias

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from catret_pipeline.storage.atomic import atomic_write_parquet, write_parquet_table

#: A table file or folder: a local ``Path`` or a remote ``UPath``.
TablePath: TypeAlias = Path | UPath

LOCAL_PROTOCOLS = ("", "file", "local")

#: Description of the ``table_store`` field of the IO manager and the storage resource.
TABLE_STORE_HELP = (
    "Where table assets (Parquet) live: '' = <data_dir>/assets on the local filesystem; else a "
    "URL (file:///abs/dir, s3://bucket/prefix, gs://bucket/prefix, memory://...) read and "
    "written through universal_pathlib / fsspec. Binary artefacts follow artefact_store."
)

MATERIALIZE_HINT = "materialise it first (e.g. `catret materialize`)."


class DamagedTable(Exception):
    """A table file that exists but is not readable Parquet (0 bytes, truncated, overwritten):
    the message names the file, so no raw polars / pyarrow error reaches the user."""

    def __init__(self, path: TablePath, exc: Exception):
        self.path = path
        super().__init__(
            f"table file {path} is damaged (empty, truncated or not Parquet: "
            f"{type(exc).__name__}: {exc}); delete it and re-materialise its asset "
            "(e.g. `catret materialize`)"
        )


def table_root(data_dir: str | os.PathLike, table_store: str = "") -> TablePath:
    """The folder of every table asset: ``<data_dir>/assets`` unless ``table_store`` is set."""
    if not table_store:
        return Path(data_dir) / "assets"
    root = UPath(table_store)
    if root.protocol in LOCAL_PROTOCOLS:
        local = Path(root.path)
        if not local.is_absolute():
            raise ValueError(f"table_store {table_store!r}: a file:// URL needs an absolute path")
        return local
    return root


def is_remote(path: TablePath) -> bool:
    return not isinstance(path, Path)


def table_file(
    root: TablePath, asset_key_path: Sequence[str], partition_key: str | None = None
) -> TablePath:
    base = root.joinpath(*asset_key_path)
    if partition_key is None:
        return base.with_suffix(".parquet")
    # Partition keys may hold '|' (multi-partitions) or '/', neither wanted in a file name.
    safe = partition_key.replace("/", "_").replace("|", "__")
    return base / f"{safe}.parquet"


def asset_file(
    data_dir: str | os.PathLike, asset_key_path: Sequence[str], partition_key: str | None = None
) -> Path:
    """The local ``<data_dir>/assets`` file of an asset (no table store)."""
    return table_file(Path(data_dir) / "assets", asset_key_path, partition_key)


def _as_arrow(df: pl.DataFrame | pa.Table) -> pa.Table:
    if isinstance(df, pl.DataFrame):
        return df.to_arrow()
    if isinstance(df, pa.Table):
        return df
    raise TypeError(f"expected a polars DataFrame or an Arrow table, got {type(df).__name__}")


def parquet_bytes(df: pl.DataFrame | pa.Table) -> bytes:
    """The whole Parquet file in memory, with the same zstd / dictionary rules as local writes."""
    buffer = io.BytesIO()
    write_parquet_table(_as_arrow(df), buffer)
    return buffer.getvalue()


def write_table(df: pl.DataFrame | pa.Table, path: TablePath) -> TablePath:
    """Write a table so that readers see the previous object or the whole new one, never part."""
    if not is_remote(path):
        return atomic_write_parquet(df, path)
    # Object stores have no rename. The file is serialised completely first (a failure here
    # uploads nothing), then sent in one call: on S3 / GCS a single PUT (or a multipart /
    # resumable upload, which the store commits as one object on completion) replaces the key
    # atomically, so the last good object stays until the new one is whole.
    data = parquet_bytes(df)
    try:
        path.fs.pipe_file(path.path, data)
    except FileNotFoundError:
        # Bucket stores have no folders; a hierarchical one (sftp, a mounted fs) needs the parent.
        path.fs.makedirs(path.parent.path, exist_ok=True)
        path.fs.pipe_file(path.path, data)
    return path


def missing_tables(paths: Sequence[TablePath]) -> list[TablePath]:
    return [p for p in paths if not p.exists()]


def missing_message(asset: str, path: TablePath) -> str:
    return f"Asset {asset} has no materialisation at {path}; {MATERIALIZE_HINT}"


def _parse(path: TablePath, data: bytes) -> pl.DataFrame:
    try:
        return pl.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise DamagedTable(path, exc) from exc


def _read_local(path: Path) -> pl.DataFrame:
    with open(path, "rb") as fh:
        data = fh.read()
    return _parse(path, data)


def _read_remote(path: TablePath) -> pl.DataFrame:
    with path.open("rb") as fh:
        data = fh.read()
    return _parse(path, data)


def read_tables(paths: Sequence[TablePath], lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
    """One frame over ``paths`` (the partitions of one asset, or a single file).

    Every file is read whole through one open handle (local ones too, so that a concurrent
    atomic rename cannot mix two versions); a LazyFrame over them is an in-memory one.
    """
    if not paths:
        raise ValueError("read_tables needs at least one path")
    # Each file is read whole through one open handle: polars' scan opens a file more than
    # once (footer, then pages), so a build's atomic rename in between mixed two versions
    # ("page header reported the wrong page size"). An open handle keeps its inode, so the
    # reader gets the old table or the new one, never both.
    frames = [_read_local(p) if not is_remote(p) else _read_remote(p) for p in paths]
    df = frames[0] if len(frames) == 1 else pl.concat(frames)
    return df.lazy() if lazy else df


def read_arrow(paths: Sequence[TablePath]) -> pa.Table:
    """An Arrow table over ``paths`` (for copying remote tables into DuckDB)."""
    tables = []
    for p in paths:
        with p.open("rb") as fh:
            tables.append(pq.read_table(fh))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def read_previous(root: TablePath, asset_key_path: Sequence[str]) -> pl.DataFrame | None:
    """The last good table of an unpartitioned asset, or None if it was never materialised."""
    path = table_file(root, asset_key_path)
    return read_tables([path]) if path.exists() else None


def remote_table_sources(root: UPath) -> dict[str, list[UPath]]:
    """Every ``<name>.parquet`` and partitioned ``<name>/*.parquet`` table under a remote root,
    listed with the filesystem's glob (the same layout rules as the local ``view_sources``)."""
    fs = root.fs
    base = PurePosixPath(root.path)

    def upaths(pattern: str) -> list[UPath]:
        hits = sorted(fs.glob(str(base / pattern)))
        return [root.joinpath(*PurePosixPath(h).relative_to(base).parts) for h in hits]

    sources = {PurePosixPath(p.path).stem: [p] for p in upaths("*.parquet")}
    partitioned: dict[str, list[UPath]] = {}
    for p in upaths("*/*.parquet"):
        partitioned.setdefault(PurePosixPath(p.path).parent.name, []).append(p)
    for name, files in partitioned.items():
        sources.setdefault(name, files)  # an unpartitioned file of the same name wins, as locally
    return sources
