"""Paired significance tests: degenerate cases, exact enumeration, clear differences."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest

from catret_pipeline.evaluation.significance import (
    SIGNIFICANCE_COLUMNS,
    paired_t_pvalue,
    paired_tests,
    permutation_pvalues,
)


def per_query(scores: dict[str, list[float | None]], setting: str = "all") -> pl.DataFrame:
    rows = []
    for model, values in scores.items():
        for i, v in enumerate(values):
            rows.append(
                {
                    "model": model,
                    "setting": setting,
                    "query": f"q{i:03d}",
                    "R": 0 if v is None else 3,
                    **dict.fromkeys(
                        ("p_at_1", "p_at_5", "p_at_10", "map_at_5", "map_at_10", "r_precision"), v
                    ),
                }
            )
    return pl.DataFrame(rows)


def test_identical_models_give_p_one_without_nan():
    values = [0.1, 0.5, 0.0, 1.0, 0.3] * 4
    table = paired_tests(per_query({"clip-ita": values, "clip": values}))
    assert table.columns == list(SIGNIFICANCE_COLUMNS)
    assert table.height == 6  # one per paper metric
    assert (table["mean_diff"] == 0).all()
    assert (table["t_pvalue"] == 1.0).all()
    assert (table["perm_pvalue"] == 1.0).all()
    assert (table["n"] == 20).all()


def test_clearly_better_reference_gives_small_p():
    rng = np.random.default_rng(1)
    ref = np.clip(0.6 + 0.1 * rng.standard_normal(40), 0, 1).tolist()
    other = np.clip(0.2 + 0.1 * rng.standard_normal(40), 0, 1).tolist()
    table = paired_tests(per_query({"clip-ita": ref, "bm25": other}), metrics=["r_precision"])
    row = table.row(0, named=True)
    assert row["reference"] == "clip-ita" and row["model"] == "bm25"
    assert row["mean_diff"] == pytest.approx(np.mean(np.array(ref) - np.array(other)))
    assert row["mean_diff"] > 0.3
    assert row["t_pvalue"] < 1e-6
    # Monte Carlo: the smallest attainable p with 10,000 permutations is 1/10,001.
    assert row["perm_pvalue"] == pytest.approx(1 / 10_001)


def test_queries_without_relevant_items_are_not_paired():
    table = paired_tests(
        per_query({"clip-ita": [0.5, None, 0.7, 0.2], "clip": [0.1, None, 0.3, 0.2]}),
        metrics=["p_at_1"],
    )
    assert table["n"].to_list() == [3]


def test_exact_enumeration_for_small_n():
    # n = 3, all differences +1: 2 of the 8 sign vectors reach |sum| = 3.
    assert permutation_pvalues(np.ones(3), n_permutations=10_000)[0] == pytest.approx(0.25)
    d = np.array([0.5, -0.2, 0.1, 0.4, 0.0, 0.3])
    observed = abs(d.sum())
    expected = np.mean(
        [abs(np.dot(s, d)) >= observed - 1e-12 for s in itertools.product([-1, 1], repeat=d.size)]
    )
    assert permutation_pvalues(d)[0] == pytest.approx(expected)


def test_monte_carlo_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 0.3, 14)
    exact = permutation_pvalues(d, n_permutations=1 << 14)[0]
    mc1 = permutation_pvalues(d, n_permutations=4000, seed=7)[0]
    mc2 = permutation_pvalues(d, n_permutations=4000, seed=7)[0]
    assert mc1 == mc2
    assert abs(mc1 - exact) < 0.04


def test_several_columns_at_once_match_one_by_one():
    rng = np.random.default_rng(5)
    diffs = rng.normal(0.05, 0.2, (60, 3))
    together = permutation_pvalues(diffs, n_permutations=2000, seed=1)
    alone = [permutation_pvalues(diffs[:, j], n_permutations=2000, seed=1)[0] for j in range(3)]
    np.testing.assert_allclose(together, alone)


def test_t_test_degenerate_cases():
    assert math.isnan(paired_t_pvalue(np.array([0.3])))
    assert paired_t_pvalue(np.zeros(5)) == 1.0
    assert paired_t_pvalue(np.full(5, 0.2)) == 0.0
    from scipy import stats

    d = np.array([0.1, -0.2, 0.3, 0.05])
    assert paired_t_pvalue(d) == pytest.approx(stats.ttest_rel(d, np.zeros(4)).pvalue)


def test_missing_reference_gives_empty_table():
    table = paired_tests(per_query({"clip": [0.1, 0.2], "bm25": [0.0, 0.1]}))
    assert table.height == 0
    assert table.columns == list(SIGNIFICANCE_COLUMNS)


def test_every_setting_and_model_is_compared():
    a = per_query({"clip-ita": [0.5, 0.6, 0.7], "clip": [0.1, 0.2, 0.3], "bm25": [0.0] * 3}, "all")
    b = per_query({"clip-ita": [0.5, 0.6], "clip": [0.5, 0.6]}, "general")
    table = paired_tests(pl.concat([a, b]), metrics=["r_precision", "p_at_1"])
    assert table.select("setting", "model").unique().sort("setting", "model").rows() == [
        ("all", "bm25"),
        ("all", "clip"),
        ("general", "clip"),
    ]
    # metrics keep the order they were asked in
    assert table.filter(pl.col("setting") == "all")["metric"].to_list()[:2] == [
        "r_precision",
        "p_at_1",
    ]
    # clip trails by 0.4 on every query (up to float noise): zero variance, p = 0
    assert table.filter((pl.col("model") == "clip") & (pl.col("setting") == "all"))[
        "t_pvalue"
    ].to_list() == [0.0, 0.0]
