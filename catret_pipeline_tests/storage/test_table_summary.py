"""A table's run summary in its own Parquet footer: written by the real IO manager in a real
``materialize``, read back by code and by DuckDB, absent from tables that do not ask for it."""

from __future__ import annotations

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq

from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.table_summary import (
    FOOTER_KEY,
    read_summary,
    summary_fields,
    wanted_summary,
)


@dg.asset(metadata=summary_fields("encoded", "prompt", "rate", "missing"))
def summarised() -> dg.Output:
    meta = {
        "encoded": 3,
        "prompt": dg.MetadataValue.text("a photo of a {name}."),
        "rate": 1.5,
        "preview_only": 7,  # not named: stays in the event log only
    }
    return dg.Output(pl.DataFrame({"a": [1, 2, 3]}), metadata=meta)


@dg.asset
def plain() -> dg.Output:
    return dg.Output(pl.DataFrame({"a": [1]}), metadata={"encoded": 1})


def test_named_fields_travel_in_the_file(tmp_path):
    io = ParquetIOManager(data_dir=str(tmp_path))
    assert dg.materialize(
        [summarised, plain], resources={"io_manager": io}, instance=dg.DagsterInstance.ephemeral()
    ).success
    path = tmp_path / "assets" / "summarised.parquet"
    assert read_summary(path) == {"encoded": 3, "prompt": "a photo of a {name}.", "rate": 1.5}
    assert pl.read_parquet(path)["a"].to_list() == [1, 2, 3]
    # DuckDB users can query it where the file is.
    rows = duckdb.sql(
        f"SELECT value FROM parquet_kv_metadata('{path}') WHERE key = '{FOOTER_KEY.decode()}'"
    ).fetchall()
    assert len(rows) == 1 and b'"encoded": 3' in rows[0][0]
    # A table that names no fields gets no footer entry: its bytes do not depend on run stats.
    plain_path = tmp_path / "assets" / "plain.parquet"
    assert FOOTER_KEY not in (pq.read_schema(plain_path).metadata or {})
    assert read_summary(plain_path) == {}


def test_wanted_summary_skips_unnamed_and_non_scalar_values():
    definition = summary_fields("n", "flag", "table", "text")
    output = {
        "n": dg.MetadataValue.int(2),
        "flag": True,
        "table": dg.MetadataValue.json({"x": 1}),
        "text": dg.MetadataValue.md("**x**"),
        "other": 5,
    }
    assert wanted_summary(definition, output) == {"n": 2, "text": "**x**"}
    assert wanted_summary({}, output) == {}
