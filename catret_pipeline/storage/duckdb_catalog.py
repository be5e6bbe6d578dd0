"""The DuckDB catalogue: a small ``.duckdb`` file holding one view per Parquet asset.

Views point at absolute Parquet paths (as dagster's ``project_fully_featured`` does), so the
file stays tiny and always shows the last good materialisation. The file is rebuilt in a temp
file and renamed into place: a user's open read-only session keeps its old inode and never
blocks the pipeline (DuckDB allows one writer or many readers per file).

With a remote table store (any scheme but ``file://``) DuckDB could only read the URLs through
its httpfs extension, which it downloads at run time (impossible offline, and it knows no
``memory://``). Those tables are therefore copied into the file (read through fsspec into Arrow,
``create table ... as select``): the file then holds data, not views, and grows with the tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from catret_pipeline.storage.atomic import atomic_path
from catret_pipeline.storage.tables import (
    TablePath,
    is_remote,
    read_arrow,
    remote_table_sources,
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def view_sources(assets_dir: Path) -> dict[str, Path]:
    """Every unpartitioned ``<name>.parquet`` and partitioned ``<name>/*.parquet`` asset."""
    views: dict[str, Path] = {}
    if not assets_dir.exists():
        return views
    for p in sorted(assets_dir.glob("*.parquet")):
        views[p.stem] = p
    for d in sorted(x for x in assets_dir.iterdir() if x.is_dir()):
        if d.name not in views and any(d.glob("*.parquet")):
            views[d.name] = d / "*.parquet"
    return views


def catalog_sources(root: TablePath) -> tuple[dict[str, Path], dict[str, list[TablePath]]]:
    """``(views, copies)``: a local root gives views over its files, a remote one tables to copy."""
    if is_remote(root):
        return {}, dict(remote_table_sources(root))
    return view_sources(root), {}


def _quote_path(path: Path) -> str:
    return "'" + str(path.resolve() if "*" not in str(path) else path).replace("'", "''") + "'"


def _check_identifier(name: str) -> None:
    if not _IDENT.match(name):
        raise ValueError(f"asset name {name!r} is not a valid SQL identifier")


def _count(con: duckdb.DuckDBPyConnection, name: str) -> int:
    # fetchall drains the result: duckdb 2 refuses register() while a result is still open.
    return con.execute(f"select count(*) from {name}").fetchall()[0][0]


def build_catalog(
    db_path: Path,
    views: Mapping[str, Path],
    copies: Mapping[str, Sequence[TablePath]] | None = None,
) -> dict[str, int]:
    """Write a fresh catalogue with ``views`` (over local Parquet) and ``copies`` (tables filled
    from remote Parquet objects) and return each one's row count."""
    counts: dict[str, int] = {}
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # duckdb refuses to open an empty non-database file
        # v1.0.0 storage so the duckdb-cli shell (1.x) can open files written by duckdb 2.x
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": "v1.0.0"})
        try:
            for name, path in views.items():
                _check_identifier(name)
                con.execute(
                    f"create or replace view {name} as select * from read_parquet({_quote_path(path)})"
                )
                counts[name] = _count(con, name)
            for name, paths in (copies or {}).items():
                _check_identifier(name)
                # One table in memory at a time; released before the next is read.
                con.register("arrow_obj", read_arrow(paths))
                try:
                    con.execute(f"create or replace table {name} as select * from arrow_obj")
                finally:
                    con.unregister("arrow_obj")
                counts[name] = _count(con, name)
            con.execute("checkpoint")
        finally:
            con.close()
    return counts
