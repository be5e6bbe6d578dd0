"""Property-based tests of the ranking metrics (hypothesis): bounds, perfect rankings, invariances."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catret_pipeline.evaluation.metrics import (
    MAP_KS,
    METRIC_COLUMNS,
    PRECISION_KS,
    evaluate_matrix,
    per_query_metrics,
)
from catret_pipeline_tests.evaluation.test_metrics import naive_metrics

FAST = settings(max_examples=150, deadline=None)


@st.composite
def consistent_rankings(draw):
    """A relevance matrix whose R per query is at least the relevant items it ranks."""
    n = draw(st.integers(1, 6))
    depth = draw(st.integers(0, 15))
    rel = np.array(
        draw(
            st.lists(
                st.lists(st.booleans(), min_size=depth, max_size=depth), min_size=n, max_size=n
            )
        ),
        dtype=bool,
    ).reshape(n, depth)
    extra = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    r = rel.sum(axis=1) + np.asarray(extra)
    return rel, r


@FAST
@given(consistent_rankings())
def test_bounds(case):
    rel, r = case
    out = evaluate_matrix(rel, r)
    for name in METRIC_COLUMNS:
        values = out[name]
        assert np.all(np.isnan(values) == (r == 0)), name
        ok = values[r > 0]
        assert np.all((ok >= 0) & (ok <= 1 + 1e-12)), name
    has = r > 0
    for k in PRECISION_KS:
        assert np.all(out[f"p_at_{k}"][has] <= np.minimum(1.0, r[has] / k) + 1e-12)
    for k in MAP_KS:
        main, div_k = out[f"map_at_{k}"][has], out[f"map_at_{k}_div_k"][has]
        assert np.all(main >= div_k - 1e-12)
        # The two normalisers differ by exactly min(K, R) / K.
        np.testing.assert_allclose(div_k * k, main * np.minimum(k, r[has]), atol=1e-9)
        # AP@K is at least P@K's share of hits ranked first, never above 1, zero iff no hit.
        hits = rel[has, :k].sum(axis=1)
        assert np.all((main == 0) == (hits == 0))


@FAST
@given(st.integers(1, 30), st.integers(0, 20))
def test_perfect_ranking(r, tail):
    depth = r + tail
    rel = np.zeros((1, depth), dtype=bool)
    rel[0, :r] = True
    out = evaluate_matrix(rel, [r])
    assert out["r_precision"][0] == 1.0
    for k in MAP_KS:
        assert out[f"map_at_{k}"][0] == pytest.approx(1.0)
    for k in PRECISION_KS:
        assert out[f"p_at_{k}"][0] == pytest.approx(min(1.0, r / k))


@FAST
@given(st.integers(1, 20), st.integers(0, 20))
def test_worst_ranking_scores_zero(r, depth):
    out = evaluate_matrix(np.zeros((1, depth), dtype=bool), [r])
    assert all(out[name][0] == 0.0 for name in METRIC_COLUMNS)


@st.composite
def table_case(draw):
    """One query: a ranking of distinct asins, some relevant, plus relevant asins never ranked."""
    n_ranked = draw(st.integers(1, 14))
    ranked = [f"a{i}" for i in range(n_ranked)]
    relevant_ranked = draw(st.lists(st.sampled_from(ranked), unique=True, max_size=n_ranked))
    unranked = [f"u{i}" for i in range(draw(st.integers(0, 5)))]
    order = draw(st.permutations(ranked))
    return (
        list(order),
        set(relevant_ranked) | set(unranked),
        draw(st.randoms(use_true_random=False)),
    )


def _table_metrics(order: list[str], relevant: set[str]) -> dict:
    runs = pl.DataFrame(
        {
            "model": "m",
            "setting": "all",
            "query": "q",
            "rank": list(range(1, len(order) + 1)),
            "asin": order,
            "score": [1.0 / (i + 1) for i in range(len(order))],
        }
    )
    qrels = pl.DataFrame(
        {"setting": "all", "query": "q", "asin": sorted(relevant)},
        schema={"setting": pl.String, "query": pl.String, "asin": pl.String},
    )
    return per_query_metrics(runs, qrels).row(0, named=True)


@FAST
@given(table_case())
def test_permuting_non_relevant_items_changes_nothing(case):
    order, relevant, rnd = case
    base = _table_metrics(order, relevant)
    slots = [i for i, a in enumerate(order) if a not in relevant]
    moved = [order[i] for i in slots]
    rnd.shuffle(moved)
    shuffled = list(order)
    for i, a in zip(slots, moved, strict=True):
        shuffled[i] = a
    again = _table_metrics(shuffled, relevant)
    for name in METRIC_COLUMNS:
        assert again[name] == base[name], name


@FAST
@given(table_case())
def test_table_path_matches_the_naive_definition(case):
    order, relevant, _ = case
    got = _table_metrics(order, relevant)
    want = naive_metrics(dict(enumerate(order, start=1)), relevant)
    for name in METRIC_COLUMNS:
        if math.isnan(want[name]):
            assert got[name] is None
        else:
            assert got[name] == pytest.approx(want[name]), name


@FAST
@given(table_case())
def test_moving_a_relevant_item_up_never_lowers_a_metric(case):
    order, relevant, _ = case
    hits = [i for i, a in enumerate(order) if a in relevant]
    if not hits or hits[-1] == 0:
        return
    i = hits[-1]
    better = list(order)
    better[i - 1], better[i] = better[i], better[i - 1]
    before, after = _table_metrics(order, relevant), _table_metrics(better, relevant)
    for name in METRIC_COLUMNS:
        if before[name] is not None:
            assert after[name] >= before[name] - 1e-12, name
