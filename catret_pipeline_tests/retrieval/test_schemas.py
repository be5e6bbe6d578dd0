"""Retrieval table schemas declared once: rows and frames are built from them."""

import numpy as np
import polars as pl
import pytest

from catret_pipeline.retrieval.schemas import (
    ACCEPTANCE_COLUMNS,
    INDEX_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    RunRows,
    frame,
    new_index_row,
    new_summary_row,
)


def test_index_rows_hold_every_column():
    row = new_index_row("mpnet", "all", n_items=3, reason="no product vectors")
    assert list(row) == list(INDEX_COLUMNS)
    assert row["model"] == "mpnet" and row["n_items"] == 3 and row["index_path"] is None
    assert set(ACCEPTANCE_COLUMNS) <= set(INDEX_COLUMNS)
    assert frame([row], INDEX_COLUMNS).schema == pl.Schema(INDEX_COLUMNS)
    with pytest.raises(KeyError, match="n_itmes"):
        new_index_row("mpnet", "all", n_itmes=3)


def test_summary_rows_count_answered_from_the_searches():
    row = new_summary_row("clip", "all", 5, hnsw=3, exact=1, no_vector=1, rows=40, note="x")
    assert list(row) == list(SUMMARY_COLUMNS)
    assert row["answered"] == 4
    bm25 = new_summary_row("bm25", "all", 5, answered=2, rows=20)
    assert (bm25["answered"], bm25["hnsw"], bm25["exact"], bm25["no_vector"]) == (2, 0, 0, 0)


def test_run_rows_rank_each_list_from_one():
    out = RunRows()
    assert (
        out.add("m", "all", "q1", np.array(["b", "a"]), np.array([0.9, 0.5], np.float32), "hnsw")
        == 2
    )
    assert out.add("m", "all", "q2", [], [], "exact") == 0
    out.add("m", "all", "q3", ["c"], [0.1], "exact")
    df = out.frame()
    assert len(out) == 3 and df.schema == pl.Schema(RUN_COLUMNS)
    assert df.select("query", "rank", "asin").rows() == [
        ("q1", 1, "b"),
        ("q1", 2, "a"),
        ("q3", 1, "c"),
    ]
    assert RunRows().frame().schema == pl.Schema(RUN_COLUMNS)
    with pytest.raises(ValueError, match="2 asins but 1 scores"):
        out.add("m", "all", "q", ["a", "b"], [1.0], "hnsw")
