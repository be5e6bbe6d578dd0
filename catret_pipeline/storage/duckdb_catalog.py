"""The DuckDB catalogue: a small ``.duckdb`` file holding one view per Parquet asset.

Views point at absolute Parquet paths (as dagster's ``project_fully_featured`` does), so the
file stays tiny and always shows the last good materialisation. The file is rebuilt in a temp
file and renamed into place: a user's open read-only session keeps its old inode and never
blocks the pipeline (DuckDB allows one writer or many readers per file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import duckdb

from catret_pipeline.storage.atomic import atomic_path

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


def _quote_path(path: Path) -> str:
    return "'" + str(path.resolve() if "*" not in str(path) else path).replace("'", "''") + "'"


def build_catalog(db_path: Path, views: Mapping[str, Path]) -> dict[str, int]:
    """Write a fresh catalogue with ``views`` and return each view's row count."""
    counts: dict[str, int] = {}
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # duckdb refuses to open an empty non-database file
        # v1.0.0 storage so the duckdb-cli shell (1.x) can open files written by duckdb 2.x
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": "v1.0.0"})
        try:
            for name, path in views.items():
                if not _IDENT.match(name):
                    raise ValueError(f"asset name {name!r} is not a valid SQL identifier")
                con.execute(
                    f"create or replace view {name} as select * from read_parquet({_quote_path(path)})"
                )
                counts[name] = con.execute(f"select count(*) from {name}").fetchone()[0]
            con.execute("checkpoint")
        finally:
            con.close()
    return counts
