"""The DuckDB catalogue: a small ``.duckdb`` file holding one view per Parquet asset.

Views point at Parquet paths *relative to the table root* (``products.parquet``,
``parted/*.parquet``), so the file stays tiny, always shows the last good materialisation, and a
copied or restored data dir never reads the original's tables: absolute paths would silently
answer from wherever the catalogue was built. DuckDB resolves relative paths against
``file_search_path`` (or the working directory): :func:`open_catalog` (``catret sql``) rebinds
every view to the table root of the data dir it is opened in, and a plain ``duckdb`` shell needs
``SET file_search_path='<data dir>/assets'`` (docs/operations.md). The file is rebuilt in a temp
file and renamed into place: a user's open read-only session keeps its old inode and never
blocks the pipeline (DuckDB allows one writer or many readers per file).

With a remote table store (any scheme but ``file://``) DuckDB could only read the URLs through
its httpfs extension, which it downloads at run time (impossible offline, and it knows no
``memory://``). Those tables are therefore copied into the file (read through fsspec into Arrow,
``create table ... as select``): the file then holds data, not views, and grows with the tables.
"""

from __future__ import annotations

import os
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


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_root(views: Mapping[str, Path]) -> Path | None:
    """The table root the ``view_sources`` paths share (``<root>/<name>.parquet`` or
    ``<root>/<name>/*.parquet``)."""
    roots = {(p.parent.parent if p.name == "*.parquet" else p.parent) for p in views.values()}
    if len(roots) > 1:
        raise ValueError(f"catalogue views span several roots: {sorted(map(str, roots))}")
    return next(iter(roots), None)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


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
    root = _view_root(views)
    config = {"storage_compatibility_version": "v1.0.0"}
    if root is not None:
        # Views are created (and bound) with relative paths resolved against the table root.
        config["file_search_path"] = str(Path(root).resolve())
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # duckdb refuses to open an empty non-database file
        # v1.0.0 storage so the duckdb-cli shell (1.x) can open files written by duckdb 2.x
        con = duckdb.connect(str(tmp), config=config)
        try:
            for name, path in views.items():
                _check_identifier(name)
                rel = _relative(path, root)
                con.execute(
                    f"create or replace view {name} as select * from read_parquet({_quote(rel)})"
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


# ---- the read-only query surface (``catret sql``) ------------------------------------------------


class CatalogQueryRefused(Exception):
    """A ``catret sql`` statement that is not a plain read; the message says why."""


#: Statement types ``catret sql`` runs. Everything else (COPY, EXPORT, ATTACH, INSTALL, LOAD,
#: SET, PRAGMA, CALL, CREATE, ...) is refused before it reaches DuckDB: the file is opened
#: read-only, but COPY / EXPORT write *other* files, and the allowed table directory is writable.
_ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)


def check_read_only_query(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise :class:`CatalogQueryRefused` unless every statement of ``query`` only reads.

    SELECT (also ``FROM x``, ``SHOW``, ``DESCRIBE``, ``SUMMARIZE``, ``VALUES``, which DuckDB
    parses as SELECT) and a plain EXPLAIN pass. EXPLAIN ANALYZE runs its statement, so it is
    refused (``explain analyze copy ... to`` would write).
    """
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise CatalogQueryRefused(f"cannot parse the query: {exc}") from None
    if not statements:
        raise CatalogQueryRefused("the query is empty")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        text = " ".join(st.query.split())[:80]
        if kind not in _ALLOWED_STATEMENTS:
            raise CatalogQueryRefused(
                f"{kind} statements are refused: catret sql only reads (SELECT); got {text!r}"
            )
        if kind == "EXPLAIN" and _ANALYZE.search(st.query):
            raise CatalogQueryRefused(
                f"EXPLAIN ANALYZE runs its statement and is refused; use EXPLAIN: {text!r}"
            )


def catalog_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "select view_name from duckdb_views() where not internal and not temporary "
        "and database_name = current_database() and schema_name = 'main' order by view_name"
    ).fetchall()
    return [r[0] for r in rows]


def open_catalog(db_path: Path, tables_root: TablePath) -> duckdb.DuckDBPyConnection:
    """The catalogue opened read-only, rebound to ``tables_root`` and locked down.

    Every view of the file gets a temporary view of the same name (temporary objects shadow the
    file's) over the table files of *this* data dir, by absolute path: so a copied or restored
    data dir answers from its own tables, and catalogues built by older versions (absolute
    paths) do too. Then DuckDB is locked: no file access outside the table root
    (``enable_external_access=false`` + ``allowed_directories``), no spilling to disk, no
    extension install/autoload, and ``lock_configuration`` so no ``SET`` can undo any of it.
    """
    con = duckdb.connect(
        str(db_path),
        read_only=True,
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        allowed: list[str] = []
        if not is_remote(tables_root):
            root = Path(tables_root).resolve()
            sources = view_sources(root)
            for name in catalog_views(con):
                if name in sources and _IDENT.match(name):
                    path = sources[name]
                    target = str(path if "*" in str(path) else path.resolve())
                    con.execute(
                        f"create temp view {name} as select * from read_parquet({_quote(target)})"
                    )
            allowed = [str(root) + os.sep]
            con.execute(f"set file_search_path = {_quote(str(root))}")
        con.execute("set allowed_directories = [" + ", ".join(_quote(a) for a in allowed) + "]")
        con.execute("set temp_directory = ''")
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con
