"""Atomic writes, the Parquet IO manager and the DuckDB catalogue."""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from catret_pipeline.storage.atomic import atomic_path, atomic_write_parquet
from catret_pipeline.storage.duckdb_catalog import build_catalog, view_sources
from catret_pipeline.storage.resources import CatretStorage


def test_atomic_write_parquet_roundtrip(tmp_path):
    df = pl.DataFrame({"a": [1, 2], "v": [[0.1, 0.2], [0.3, 0.4]]}).with_columns(
        pl.col("v").cast(pl.Array(pl.Float32, 2))
    )
    target = tmp_path / "x" / "t.parquet"
    atomic_write_parquet(df, target)
    back = pl.read_parquet(target)
    assert back.equals(df)
    assert back.schema["v"] == pl.Array(pl.Float32, 2)


def test_failure_mid_write_leaves_previous_file(tmp_path):
    target = tmp_path / "t.parquet"
    atomic_write_parquet(pl.DataFrame({"a": [1, 2, 3]}), target)
    before = target.read_bytes()

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"PAR1 half a file")
        raise RuntimeError("killed mid-write")

    assert target.read_bytes() == before
    assert pl.read_parquet(target)["a"].to_list() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"], "temp file left behind"


def test_unwritable_frame_keeps_previous_file(tmp_path):
    target = tmp_path / "t.parquet"
    atomic_write_parquet(pl.DataFrame({"a": [1]}), target)
    # Parquet has no month-day-nano interval type: the writer fails after the temp file exists.
    unwritable = pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})
    with pytest.raises(pa.ArrowException):
        atomic_write_parquet(unwritable, target)
    assert pl.read_parquet(target)["a"].to_list() == [1]


def test_storage_path_refuses_escape(tmp_path):
    storage = CatretStorage(data_dir=str(tmp_path))
    assert storage.path("indexes", "m", "s.bin").is_relative_to(tmp_path.resolve())
    with pytest.raises(ValueError):
        storage.path("..", "outside")
    with pytest.raises(ValueError):
        storage.path("/etc/passwd")


def test_duckdb_catalog_views_answer(tmp_path):
    assets = tmp_path / "assets"
    atomic_write_parquet(
        pl.DataFrame({"asin": ["a", "b"], "title": ["x", "y"]}), assets / "products.parquet"
    )
    atomic_write_parquet(
        pl.DataFrame({"model": ["m"], "r_precision": [0.5]}), assets / "metrics.parquet"
    )
    (assets / "parted").mkdir()
    atomic_write_parquet(pl.DataFrame({"k": [1]}), assets / "parted" / "p1.parquet")
    atomic_write_parquet(pl.DataFrame({"k": [2]}), assets / "parted" / "p2.parquet")
    db = tmp_path / "catret.duckdb"
    counts = build_catalog(db, view_sources(assets))
    assert counts == {"metrics": 1, "products": 2, "parted": 2}

    # A reader holding the file open read-only does not block a rebuild.
    # Views hold paths relative to the table root: a reader resolves them there.
    search = {"file_search_path": str(assets)}
    reader = duckdb.connect(str(db), read_only=True, config=search)
    assert reader.execute("select count(*) from products").fetchone()[0] == 2
    atomic_write_parquet(
        pl.DataFrame({"asin": ["a", "b", "c"], "title": ["x", "y", "z"]}),
        assets / "products.parquet",
    )
    build_catalog(db, view_sources(assets))
    reader.close()

    con = duckdb.connect(str(db), read_only=True, config=search)
    assert con.execute("select count(*) from products").fetchone()[0] == 3
    assert con.execute("select r_precision from metrics").fetchone()[0] == 0.5
    con.close()


def test_sql_identifier_guard(tmp_path):
    atomic_write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "assets" / "bad-name.parquet")
    with pytest.raises(ValueError, match="identifier"):
        build_catalog(tmp_path / "c.duckdb", view_sources(tmp_path / "assets"))


def test_markdown_preview_escapes_and_clips_cells():
    from catret_pipeline.markdown import frame_markdown, markdown_table

    assert markdown_table(["a"], [["x|y\nz"]]).splitlines()[2] == "| x\\|y z |"
    md = frame_markdown(pl.DataFrame({"t": ["a" * 100]}), max_chars=10)
    assert md.splitlines()[2] == "| " + "a" * 9 + "… |"
