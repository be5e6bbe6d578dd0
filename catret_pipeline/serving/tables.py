"""Reading the pipeline's tables for serving: each file opened once, whole, into memory.

A build replaces a table by an atomic rename. Opening a file and reading it completely through
that one descriptor means a reader gets the old file or the new one, never a mix of the two,
even if the rename happens while it reads. A lazy scan that reopens the path could straddle it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catret_pipeline.storage.tables import TablePath, table_file, table_root

#: The tables a snapshot reads; the ones marked False may be absent (a smaller build).
TABLES = {
    "products": True,
    "product_images": False,
    "category_tree": True,
    "evaluation_pairs": False,
    "fusion_models": False,
    "fused_representations": False,
    "image_embeddings": False,
    "title_embeddings": False,
    "attribute_embeddings": False,
    "category_embeddings": False,
    "category_clip_embeddings": False,
    "serving_models": False,
    "category_rankings": False,
    "serving_indexes": False,
}


class StoreError(Exception):
    """The data dir cannot be served as it is; the message says why and what to do."""


def tables_dir(data_dir: Path, table_store: str = "") -> TablePath:
    # Tables follow the table store like the pipeline's; binaries stay under the data dir.
    return table_root(data_dir, table_store)


def table_path(data_dir: Path, name: str, table_store: str = "") -> TablePath:
    return table_file(tables_dir(data_dir, table_store), [name])


def read_once(path: TablePath, columns: list[str] | None = None) -> pl.DataFrame:
    """The whole table through one open file handle (see the module docstring)."""
    with path.open("rb") as fh:
        data = fh.read()
    return pl.read_parquet(io.BytesIO(data), columns=columns)


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file: a rename gives a new inode and mtime."""

    name: str
    mtime_ns: int
    size: int
    inode: int


def stamp(path: TablePath, name: str) -> FileStamp | None:
    try:
        st = path.stat()
    except (FileNotFoundError, OSError):
        return None
    mtime = getattr(st, "st_mtime_ns", None) or int(float(getattr(st, "st_mtime", 0)) * 1e9)
    return FileStamp(name, int(mtime), int(st.st_size), int(getattr(st, "st_ino", 0) or 0))


def signature(
    data_dir: Path, extra: list[Path] = (), table_store: str = ""
) -> tuple[FileStamp | None, ...]:
    """Stamps of every table a snapshot reads plus ``extra`` files (model artefacts).

    Two equal signatures mean the same files; a build that rewrote any of them changes it.
    """
    stamps = [stamp(table_path(data_dir, name, table_store), name) for name in TABLES]
    stamps += [stamp(p, os.fspath(p)) for p in extra]
    return tuple(stamps)


def read_tables_once(data_dir: Path, table_store: str = "") -> dict[str, pl.DataFrame]:
    """Every table of :data:`TABLES` that exists, read once each; a missing required one raises."""
    root = tables_dir(data_dir, table_store)
    if not root.is_dir():
        raise StoreError(f"no materialised tables under {root}: run `catret materialize` first")
    out: dict[str, pl.DataFrame] = {}
    for name, required in TABLES.items():
        path = table_path(data_dir, name, table_store)
        try:
            out[name] = read_once(path)
        except FileNotFoundError as exc:
            if required:
                raise StoreError(
                    f"the {name} table is missing at {path}: run `catret materialize` first"
                ) from exc
        except Exception as exc:  # a damaged file is the build's problem; say which one
            raise StoreError(f"cannot read {path}: {exc}; re-run `catret materialize`") from exc
    return out
