"""Incremental reuse logic, without Dagster or models."""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import pytest

from catret_pipeline.embeddings.encoding import pool_attributes
from catret_pipeline.embeddings.incremental import (
    combine,
    encoded_frame,
    plan_incremental,
)
from catret_pipeline.vectors_math import embedding_matrix

KEYS = ["asin"]
DIM = 4


def fake_encode(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in for an encoder: a vector from the text's hash."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        rng = np.random.default_rng(zlib.crc32(t.encode()))
        v = rng.standard_normal(DIM)
        out[i] = v / np.linalg.norm(v)
    return out


def products(titles: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "asin": list(titles),
            "title": list(titles.values()),
            "content_hash": [f"h:{t}" for t in titles.values()],
        }
    )


def run(current: pl.DataFrame, previous: pl.DataFrame | None, model_id: str, checkpoints=()):
    plan = plan_incremental(current, previous, KEYS, model_id, checkpoints=checkpoints)
    vecs = fake_encode(plan.to_encode["title"].to_list())
    encoded = encoded_frame(plan.to_encode, vecs, KEYS, model_id)
    return combine(plan, encoded, DIM)


def test_first_run_encodes_all_second_run_nothing():
    cur = products({"a": "red shoe", "b": "blue hat", "c": "green scarf"})
    table, stats = run(cur, None, "m1")
    assert (stats.encoded, stats.reused, stats.dropped, stats.total) == (3, 0, 0, 3)
    assert table.columns == ["asin", "model_id", "content_hash", "embedding"]
    assert table.schema["embedding"] == pl.Array(pl.Float32, DIM)
    again, stats2 = run(cur, table, "m1")
    assert (stats2.encoded, stats2.reused, stats2.dropped) == (0, 3, 0)
    assert again.equals(table)


def test_changed_title_reencodes_exactly_that_row():
    cur = products({"a": "red shoe", "b": "blue hat", "c": "green scarf"})
    table, _ = run(cur, None, "m1")
    changed = products({"a": "red shoe", "b": "blue cap", "c": "green scarf"})
    plan = plan_incremental(changed, table, KEYS, "m1")
    assert plan.to_encode["asin"].to_list() == ["b"]
    new, stats = run(changed, table, "m1")
    assert (stats.encoded, stats.reused) == (1, 2)
    assert new["asin"].to_list() == ["a", "b", "c"]
    old_m, new_m = embedding_matrix(table["embedding"]), embedding_matrix(new["embedding"])
    np.testing.assert_array_equal(old_m[[0, 2]], new_m[[0, 2]])
    np.testing.assert_allclose(new_m[1], fake_encode(["blue cap"])[0])


def test_model_change_reencodes_everything():
    cur = products({"a": "red shoe", "b": "blue hat"})
    table, _ = run(cur, None, "m1")
    new, stats = run(cur, table, "m2")
    assert (stats.encoded, stats.reused) == (2, 0)
    assert set(new["model_id"]) == {"m2"}


def test_removed_and_added_products():
    table, _ = run(products({"a": "x", "b": "y", "c": "z"}), None, "m1")
    new, stats = run(products({"d": "w", "a": "x"}), table, "m1")
    assert (stats.encoded, stats.reused, stats.dropped) == (1, 1, 2)
    assert new["asin"].to_list() == ["d", "a"]  # current input order


def test_wider_previous_is_not_reused():
    table, _ = run(products({"a": "x"}), None, "m1")
    wide = table.with_columns(pl.Series("embedding", np.ones((1, 8), dtype=np.float32)))
    plan = plan_incremental(products({"a": "x"}), wide, KEYS, "m1", dim=DIM)
    assert plan.to_encode.height == 1 and not plan.previous_usable


def test_checkpoint_rows_are_reused_and_win():
    cur = products({"a": "x", "b": "y"})
    part = encoded_frame(cur.head(1), np.full((1, DIM), 0.5, dtype=np.float32), KEYS, "m1")
    plan = plan_incremental(cur, None, KEYS, "m1", checkpoints=[part])
    assert plan.to_encode["asin"].to_list() == ["b"]
    stale = encoded_frame(cur.head(1), np.zeros((1, DIM), dtype=np.float32), KEYS, "m0")
    plan = plan_incremental(cur, stale, KEYS, "m1", checkpoints=[part])
    assert plan.reused["embedding"].to_list()[0] == [0.5] * DIM


def test_duplicate_keys_rejected():
    cur = pl.DataFrame({"asin": ["a", "a"], "title": ["x", "y"], "content_hash": ["1", "2"]})
    with pytest.raises(ValueError, match="duplicate key"):
        plan_incremental(cur, None, KEYS, "m1")


def test_empty_everything():
    cur = products({})
    plan = plan_incremental(cur, None, KEYS, "m1")
    enc = encoded_frame(plan.to_encode, np.zeros((0, DIM), dtype=np.float32), KEYS, "m1")
    table, stats = combine(plan, enc, DIM)
    assert table.height == 0 and table.schema["embedding"] == pl.Array(pl.Float32, DIM)


def test_attribute_mean_pooling():
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return fake_encode(texts)

    vecs, has, counts = pool_attributes([["a", "b"], [], None, ["b", " ", "a", "a"]], encode, DIM)
    assert calls == [["a", "b"]]  # each distinct string encoded once
    assert has.tolist() == [True, False, False, True] and counts.tolist() == [2, 0, 0, 3]
    a, b = fake_encode(["a", "b"])
    expect0 = (a + b) / np.linalg.norm(a + b)
    np.testing.assert_allclose(vecs[0], expect0, atol=1e-6)
    expect3 = (2 * a + b) / np.linalg.norm(2 * a + b)
    np.testing.assert_allclose(vecs[3], expect3, atol=1e-6)
    assert not vecs[1].any() and not vecs[2].any()
