"""Ranking metrics: hand-computed edge cases, vectorised vs naive, aggregation by subset."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from catret_pipeline.evaluation import metrics as M
from catret_pipeline.evaluation.metrics import (
    METRIC_COLUMNS,
    aggregate_metrics,
    average_precision_at_k,
    per_query_metrics,
    precision_at_k,
    qrels_from_pairs,
    query_info,
    r_precision,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def run_rows(
    model: str, setting: str, query: str, asins: list[str | None], ranks=None
) -> list[dict]:
    ranks = ranks or list(range(1, len(asins) + 1))
    return [
        {
            "model": model,
            "setting": setting,
            "query": query,
            "rank": r,
            "asin": a,
            "score": 1.0 / (1 + r),
        }
        for r, a in zip(ranks, asins, strict=True)
    ]


def qrels(setting: str, query: str, asins: list[str]) -> list[dict]:
    return [{"setting": setting, "query": query, "asin": a} for a in asins]


def one_query(asins: list[str | None], relevant: list[str], ranks=None) -> dict:
    runs = pl.DataFrame(run_rows("m", "all", "q", asins, ranks))
    judged = pl.DataFrame(
        qrels("all", "q", relevant),
        schema={"setting": pl.String, "query": pl.String, "asin": pl.String},
    )
    out = per_query_metrics(runs, judged)
    assert out.height == 1
    return out.row(0, named=True)


def naive_metrics(ranking: dict[int, str | None], relevant: set[str]) -> dict[str, float]:
    """Per-query reference implementation, one position at a time."""
    R = len(relevant)
    if R == 0:
        return dict.fromkeys(METRIC_COLUMNS, math.nan)
    depth = max([R, 10, *ranking.keys()])
    seen: set[str] = set()
    rel = []
    for pos in range(1, depth + 1):
        asin = ranking.get(pos)
        hit = asin is not None and asin in relevant and asin not in seen
        if asin is not None:
            seen.add(asin)
        rel.append(hit)

    def ap(k: int, denominator: int) -> float:
        hits, total = 0, 0.0
        for i in range(k):
            if rel[i]:
                hits += 1
                total += hits / (i + 1)
        return total / denominator

    return {
        "p_at_1": sum(rel[:1]) / 1,
        "p_at_5": sum(rel[:5]) / 5,
        "p_at_10": sum(rel[:10]) / 10,
        "map_at_5": ap(5, min(5, R)),
        "map_at_10": ap(10, min(10, R)),
        "map_at_5_div_k": ap(5, 5),
        "map_at_10_div_k": ap(10, 10),
        "r_precision": sum(rel[:R]) / R,
    }


# ---------------------------------------------------------------------------------------------
# hand-computed edge cases
# ---------------------------------------------------------------------------------------------


def test_r_smaller_than_k():
    # R = 2, relevant at ranks 1 and 3.
    row = one_query(["a", "x", "b", "y", "z"], ["a", "b"])
    assert row["R"] == 2
    assert row["p_at_1"] == 1.0
    assert row["p_at_5"] == pytest.approx(2 / 5)
    assert row["p_at_10"] == pytest.approx(2 / 10)
    # AP@5 = (1/1 + 2/3) / min(5, 2)
    assert row["map_at_5"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["map_at_5_div_k"] == pytest.approx((1 + 2 / 3) / 5)
    assert row["map_at_10"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["map_at_10_div_k"] == pytest.approx((1 + 2 / 3) / 10)
    # top R = 2 holds one relevant
    assert row["r_precision"] == pytest.approx(1 / 2)


def test_r_larger_than_k():
    relevant = [f"r{i}" for i in range(20)]
    ranking = (
        ["r0", "r1"] + [f"x{i}" for i in range(8)] + ["r2"] * 1 + [f"x{i}" for i in range(10, 25)]
    )
    row = one_query(ranking, relevant)
    assert row["R"] == 20
    assert row["p_at_10"] == pytest.approx(0.2)
    assert row["map_at_5"] == pytest.approx(2 / 5)  # min(5, 20) = 5
    assert row["map_at_10"] == pytest.approx(2 / 10)
    assert row["map_at_10_div_k"] == pytest.approx(2 / 10)
    # top 20 holds r0, r1, r2
    assert row["r_precision"] == pytest.approx(3 / 20)


def test_no_relevant_item_gives_null_and_is_left_out_of_means():
    runs = pl.DataFrame(run_rows("m", "all", "q0", ["a"]) + run_rows("m", "all", "q1", ["b"]))
    judged = pl.DataFrame(qrels("all", "q1", ["b"]))
    pq = per_query_metrics(runs, judged).with_columns(pl.lit("seen").alias("subset"))
    q0 = pq.filter(pl.col("query") == "q0").row(0, named=True)
    assert q0["R"] == 0
    assert all(q0[m] is None for m in METRIC_COLUMNS)
    agg = aggregate_metrics(pq).filter(pl.col("subset") == "all").row(0, named=True)
    assert agg["n_queries"] == 1
    assert agg["p_at_1"] == 1.0


def test_ties_follow_the_given_ranks_not_the_scores():
    rows = run_rows("m", "all", "q", ["x", "a"])
    for r in rows:
        r["score"] = 0.5  # a tie the retrieval stage broke by rank
    judged = pl.DataFrame(qrels("all", "q", ["a"]))
    assert per_query_metrics(pl.DataFrame(rows), judged)["p_at_1"][0] == 0.0
    rows[0]["rank"], rows[1]["rank"] = 2, 1
    assert per_query_metrics(pl.DataFrame(rows), judged)["p_at_1"][0] == 1.0


def test_duplicate_asin_counts_once():
    row = one_query(["a", "a", "b"], ["a", "b"])
    assert row["n_retrieved"] == 2
    assert row["p_at_5"] == pytest.approx(2 / 5)
    # relevance vector 1, 0, 1
    assert row["map_at_5"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["r_precision"] == pytest.approx(1 / 2)


def test_ranking_shorter_than_k_counts_missing_positions_as_non_relevant():
    row = one_query(["a"], ["a"])
    assert row["p_at_10"] == pytest.approx(0.1)
    assert row["map_at_10"] == pytest.approx(1.0)
    assert row["map_at_10_div_k"] == pytest.approx(0.1)
    assert row["r_precision"] == 1.0


def test_rank_gaps_are_non_relevant_positions():
    row = one_query(["x", "a"], ["a"], ranks=[1, 3])
    assert row["p_at_1"] == 0.0
    assert row["map_at_5"] == pytest.approx(1 / 3)


def test_model_missing_a_query_scores_zero_on_it():
    runs = pl.DataFrame(run_rows("m1", "all", "q", ["a"]) + run_rows("m2", "all", "other", ["b"]))
    judged = pl.DataFrame(qrels("all", "q", ["a"]) + qrels("all", "other", ["b"]))
    pq = per_query_metrics(runs, judged)
    missing = pq.filter((pl.col("model") == "m2") & (pl.col("query") == "q")).row(0, named=True)
    assert missing["n_retrieved"] == 0
    assert missing["r_precision"] == 0.0 and missing["p_at_1"] == 0.0
    assert pq.height == 4


def test_judged_query_no_model_answered_scores_zero():
    runs = pl.DataFrame(run_rows("m", "all", "q", ["a"]))
    judged = pl.DataFrame(
        qrels("all", "q", ["a"]) + qrels("all", "silent", ["b"]) + qrels("other", "x", ["c"])
    )
    pq = per_query_metrics(runs, judged)
    assert pq.select("setting", "query").rows() == [("all", "q"), ("all", "silent")]
    silent = pq.row(1, named=True)
    assert silent["R"] == 1 and silent["n_retrieved"] == 0 and silent["r_precision"] == 0.0


def test_null_asin_is_a_non_relevant_position():
    row = one_query([None, "a"], ["a"])
    assert row["p_at_1"] == 0.0
    assert row["p_at_5"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("ranks", "message"),
    [([1, 1], "repeated rank"), ([0, 1], "rank < 1")],
)
def test_broken_ranks_raise_clear_errors(ranks, message):
    runs = pl.DataFrame(run_rows("m", "all", "q", ["a", "b"], ranks))
    with pytest.raises(ValueError, match=message):
        per_query_metrics(runs, pl.DataFrame(qrels("all", "q", ["a"])))


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks column"):
        per_query_metrics(pl.DataFrame({"model": ["m"]}), pl.DataFrame(qrels("all", "q", ["a"])))


def test_matrix_functions_pad_short_matrices_and_reject_bad_input():
    rel = np.array([[True, False], [False, False]])
    r = np.array([1, 0])
    np.testing.assert_allclose(precision_at_k(rel, r, 5), [0.2, np.nan])
    np.testing.assert_allclose(average_precision_at_k(rel, r, 5), [1.0, np.nan])
    np.testing.assert_allclose(average_precision_at_k(rel, r, 5, "k"), [0.2, np.nan])
    np.testing.assert_allclose(r_precision(rel, r), [1.0, np.nan])
    with pytest.raises(ValueError, match="normaliser"):
        average_precision_at_k(rel, r, 5, "bogus")
    with pytest.raises(ValueError, match="R values"):
        precision_at_k(rel, [1], 1)
    with pytest.raises(ValueError, match="cut-off"):
        precision_at_k(rel, r, 0)


# ---------------------------------------------------------------------------------------------
# vectorised == naive on random data
# ---------------------------------------------------------------------------------------------


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    pool = [f"p{i}" for i in range(60)]
    run_list, judged = [], []
    truth: dict[tuple[str, str, str], tuple[dict[int, str | None], set[str]]] = {}
    queries = [f"q{i}" for i in range(25)]
    relevant = {}
    for q in queries:
        R = int(rng.choice([0, 1, 2, 3, 5, 12, 30]))
        relevant[q] = set(rng.choice(pool, size=R, replace=False).tolist())
        judged += qrels("s", q, sorted(relevant[q]))
    for model in ("m1", "m2"):
        for q in queries:
            if rng.random() < 0.15:
                continue  # this model never ran q
            length = int(rng.integers(0, 45))
            ranks = sorted(rng.choice(np.arange(1, 60), size=length, replace=False).tolist())
            # Draw mostly from the relevant set, with duplicates, so hits are frequent.
            asins = [
                str(rng.choice(sorted(relevant[q])))
                if relevant[q] and rng.random() < 0.5
                else str(rng.choice(pool))
                for _ in ranks
            ]
            run_list += run_rows(model, "s", q, asins, ranks)
            truth[(model, "s", q)] = (dict(zip(ranks, asins, strict=True)), relevant[q])
    # every judged query plus every query some model ran is scored for every model
    scored = {q for (_, _, q) in truth} | {q for q in queries if relevant[q]}
    for model in ("m1", "m2"):
        for q in scored:
            truth.setdefault((model, "s", q), ({}, relevant[q]))
    schema = {
        "model": pl.String,
        "setting": pl.String,
        "query": pl.String,
        "rank": pl.Int64,
        "asin": pl.String,
        "score": pl.Float64,
    }
    return pl.DataFrame(run_list, schema=schema), pl.DataFrame(judged), truth


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_naive(seed, monkeypatch):
    if seed % 2:
        # Tiny blocks exercise the bucket / block split.
        monkeypatch.setattr(M, "_MAX_BLOCK_CELLS", 40)
    runs, judged, truth = random_case(seed)
    pq = per_query_metrics(runs, judged)
    assert pq.height == len(truth)
    for row in pq.iter_rows(named=True):
        ranking, relevant = truth[(row["model"], row["setting"], row["query"])]
        expected = naive_metrics(ranking, relevant)
        assert row["R"] == len(relevant)
        for metric in METRIC_COLUMNS:
            if math.isnan(expected[metric]):
                assert row[metric] is None
            else:
                assert row[metric] == pytest.approx(expected[metric]), (row["query"], metric)


# ---------------------------------------------------------------------------------------------
# subsets and aggregation
# ---------------------------------------------------------------------------------------------


def pairs_frame() -> pl.DataFrame:
    rows = [
        # setting all: "Audio" seen (a train pair), "Radios" unseen; "Radios" lives on two nodes
        ("all", "t1", "n_audio", "Audio", 2, "train", True),
        ("all", "a1", "n_audio", "Audio", 2, "test", True),
        ("all", "a2", "n_audio", "Audio", 2, "test", True),
        ("all", "r1", "n_radio_a", "Radios", 3, "test", False),
        ("all", "r2", "n_radio_b", "Radios", 4, "test", False),
        ("all", "r3", "n_radio_b", "Radios", 4, "test", False),
        ("general", "a1", "n_elec", "Electronics", 1, "test", False),
    ]
    return pl.DataFrame(
        rows,
        schema=[
            "setting",
            "asin",
            "category_id",
            "category_name",
            "category_depth",
            "split",
            "seen_in_train",
        ],
        orient="row",
    )


def test_qrels_and_query_info():
    pairs = pairs_frame()
    q = qrels_from_pairs(pairs).sort("setting", "query", "asin")
    assert q.filter(pl.col("query") == "Audio")["asin"].to_list() == [
        "a1",
        "a2",
    ]  # not the train t1
    info = {(r["setting"], r["query"]): r for r in query_info(pairs).iter_rows(named=True)}
    assert info[("all", "Audio")]["subset"] == "seen"
    assert info[("all", "Radios")]["subset"] == "unseen"
    # two nodes; the one with more test pairs gives the depth
    assert info[("all", "Radios")]["n_nodes"] == 2
    assert info[("all", "Radios")]["query_depth"] == 4
    assert info[("general", "Electronics")]["subset"] == "unseen"


def test_aggregate_by_subset():
    pairs = pairs_frame()
    runs = pl.DataFrame(
        run_rows("m", "all", "Audio", ["a1", "x"])  # P@1 = 1, R-prec = 1/2
        + run_rows("m", "all", "Radios", ["x", "r1", "r2"])  # P@1 = 0, R-prec = 2/3
        + run_rows("m", "general", "Electronics", ["a1"])
    )
    pq = per_query_metrics(runs, qrels_from_pairs(pairs), query_info(pairs))
    agg = {(r["setting"], r["subset"]): r for r in aggregate_metrics(pq).iter_rows(named=True)}
    assert agg[("all", "all")]["n_queries"] == 2
    assert agg[("all", "all")]["p_at_1"] == pytest.approx(0.5)
    assert agg[("all", "all")]["r_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert agg[("all", "seen")]["n_queries"] == 1
    assert agg[("all", "seen")]["r_precision"] == pytest.approx(1 / 2)
    assert agg[("all", "unseen")]["r_precision"] == pytest.approx(2 / 3)
    # general has no seen query: the row stays, empty
    assert agg[("general", "seen")]["n_queries"] == 0
    assert agg[("general", "seen")]["r_precision"] is None
    assert agg[("general", "all")]["p_at_1"] == 1.0
    assert len(agg) == 6
    # mAP@K (min(K, R)) is never below its /K variant
    table = aggregate_metrics(pq).drop_nulls()
    assert (table["map_at_5"] >= table["map_at_5_div_k"]).all()


def test_large_case_is_fast():
    """5,000 queries over a 40,000-product collection, depth 100: well under 5 s (about 0.1-0.2 s here)."""
    import time

    rng = np.random.default_rng(0)
    n_prod, n_q, depth = 40_000, 5_000, 100
    asins = np.array([f"A{i:07d}" for i in range(n_prod)])
    cats = rng.integers(0, n_q, n_prod)
    names = np.array([f"cat{i}" for i in range(n_q)])
    judged = pl.DataFrame({"setting": "all", "query": names[cats], "asin": asins})
    qs, first_product = np.unique(cats, return_index=True)
    idx = rng.integers(0, n_prod, (qs.size, depth))
    # Half the rankings start with one of their relevant products.
    idx[::2, 0] = first_product[::2]
    runs = pl.DataFrame(
        {
            "model": "m",
            "setting": "all",
            "query": np.repeat(names[qs], depth),
            "rank": np.tile(np.arange(1, depth + 1), qs.size),
            "asin": asins[idx.ravel()],
        }
    )
    start = time.perf_counter()
    pq = per_query_metrics(runs, judged)
    elapsed = time.perf_counter() - start
    assert pq.height == qs.size
    assert pq["p_at_1"].mean() >= 0.5
    assert elapsed < 5.0
