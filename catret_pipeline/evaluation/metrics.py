"""Ranking metrics for category-to-image retrieval, vectorised over queries.

A set of rankings is a boolean *relevance matrix* ``rel`` of shape ``(n_queries, depth)``
(``rel[q, i]`` is True when the item at rank ``i + 1`` of query ``q`` is relevant) plus a vector
``n_relevant`` (R, the number of relevant items of each query). Rankings shorter than the matrix
are padded with False, so a missing position is a non-relevant one.

Conventions (docs/evaluation.md):

- P@K = relevant in the top K / K (K, not the ranking length, is the denominator).
- AP@K = sum over relevant ranks i <= K of P@i, divided by ``min(K, R)`` (main, ``map_at_K``) or
  by ``K`` (alternative, ``map_at_K_div_k``). The paper reports mAP@K > P@K on every row, which
  only the ``min(K, R)`` normaliser produces.
- R-precision = relevant in the top R / R.
- A query with R = 0 gets NaN for every metric and is left out of every mean.
- A duplicated asin in one ranking counts once: later copies are non-relevant (a system must not
  earn credit twice for one product).
- Ties: the metrics consume ranks; equal scores are ordered by the retrieval stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

PRECISION_KS: tuple[int, ...] = (1, 5, 10)
MAP_KS: tuple[int, ...] = (5, 10)

#: Every per-query metric column, in report order.
METRIC_COLUMNS: tuple[str, ...] = (
    "p_at_1",
    "p_at_5",
    "p_at_10",
    "map_at_5",
    "map_at_10",
    "map_at_5_div_k",
    "map_at_10_div_k",
    "r_precision",
)
#: The six metrics of the paper's Table 1, in its column order.
PAPER_METRICS: tuple[str, ...] = (
    "p_at_1",
    "p_at_5",
    "p_at_10",
    "map_at_5",
    "map_at_10",
    "r_precision",
)
SUBSETS: tuple[str, ...] = ("all", "seen", "unseen")

# Cells of one dense relevance block; bounds memory when some query has a very large R.
_MAX_BLOCK_CELLS = 1 << 23


def _as_inputs(
    rel: np.ndarray, n_relevant: np.ndarray | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    rel = np.asarray(rel, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance matrix must be 2-D (queries x ranks), got shape {rel.shape}")
    r = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    if r.shape[0] != rel.shape[0]:
        raise ValueError(f"{r.shape[0]} R values for {rel.shape[0]} rankings")
    if (r < 0).any():
        raise ValueError("R (number of relevant items) must be >= 0")
    return rel, r


def _top(rel: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` columns, zero-padded when the rankings are shorter than ``k``."""
    if k < 1:
        raise ValueError(f"cut-off must be >= 1, got {k}")
    if rel.shape[1] >= k:
        return rel[:, :k]
    return np.pad(rel, ((0, 0), (0, k - rel.shape[1])))


def _nan_where_no_relevant(values: np.ndarray, r: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    values[r == 0] = np.nan
    return values


def precision_at_k(rel: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    rel, r = _as_inputs(rel, n_relevant)
    hits = _top(rel, k).sum(axis=1)
    return _nan_where_no_relevant(hits / k, r)


def average_precision_at_k(
    rel: np.ndarray,
    n_relevant: np.ndarray | Sequence[int],
    k: int,
    normaliser: str = "min_k_r",
) -> np.ndarray:
    """AP@K per query; ``normaliser`` is ``"min_k_r"`` (main) or ``"k"`` (alternative)."""
    rel, r = _as_inputs(rel, n_relevant)
    top = _top(rel, k)
    cum_hits = np.cumsum(top, axis=1, dtype=np.int64)
    precision_at_i = cum_hits / np.arange(1, k + 1)
    numerator = np.where(top, precision_at_i, 0.0).sum(axis=1)
    if normaliser == "min_k_r":
        denominator = np.minimum(k, r)
    elif normaliser == "k":
        denominator = np.full(r.shape, k)
    else:
        raise ValueError(f"unknown AP normaliser {normaliser!r}; use 'min_k_r' or 'k'")
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = numerator / denominator
    return _nan_where_no_relevant(ap, r)


def r_precision(rel: np.ndarray, n_relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    rel, r = _as_inputs(rel, n_relevant)
    if rel.shape[1] == 0:
        return _nan_where_no_relevant(np.zeros(r.shape), r)
    cum_hits = np.cumsum(rel, axis=1, dtype=np.int64)
    # Precision at rank R reads the cumulative hits at column R - 1; beyond the ranking's end
    # every position is non-relevant, so the last column holds the count.
    col = np.clip(r - 1, 0, rel.shape[1] - 1)
    hits = cum_hits[np.arange(rel.shape[0]), col]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = hits / r
    return _nan_where_no_relevant(values, r)


def evaluate_matrix(
    rel: np.ndarray, n_relevant: np.ndarray | Sequence[int]
) -> dict[str, np.ndarray]:
    """Every column of :data:`METRIC_COLUMNS` for a relevance matrix."""
    rel, r = _as_inputs(rel, n_relevant)
    out: dict[str, np.ndarray] = {}
    for k in PRECISION_KS:
        out[f"p_at_{k}"] = precision_at_k(rel, r, k)
    for k in MAP_KS:
        out[f"map_at_{k}"] = average_precision_at_k(rel, r, k, "min_k_r")
    for k in MAP_KS:
        out[f"map_at_{k}_div_k"] = average_precision_at_k(rel, r, k, "k")
    out["r_precision"] = r_precision(rel, r)
    return {name: out[name] for name in METRIC_COLUMNS}


def relevance_matrix(
    query_index: np.ndarray, rank: np.ndarray, n_queries: int, width: int
) -> np.ndarray:
    """Dense matrix from the (query, rank) coordinates of relevant, first-occurrence hits."""
    rel = np.zeros((n_queries, width), dtype=bool)
    query_index = np.asarray(query_index, dtype=np.int64)
    rank = np.asarray(rank, dtype=np.int64)
    keep = rank <= width
    rel[query_index[keep], rank[keep] - 1] = True
    return rel


# --------------------------------------------------------------------------------------------
# From tables: runs + qrels -> per-query metrics -> aggregates
# --------------------------------------------------------------------------------------------

RUN_COLUMNS = ("model", "setting", "query", "rank", "asin")


def _require(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {df.columns}")


def qrels_from_pairs(evaluation_pairs: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Relevance judgements ``(setting, query, asin)``: the split's products paired with the query."""
    _require(evaluation_pairs, ("setting", "asin", "category_name", "split"), "evaluation_pairs")
    return (
        evaluation_pairs.filter(pl.col("split") == split)
        .select("setting", pl.col("category_name").alias("query"), "asin")
        .unique()
    )


def query_info(evaluation_pairs: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Per ``(setting, query)``: ``subset`` (seen / unseen), ``query_depth`` and ``n_nodes``.

    A query is a category *name*; several tree nodes may carry it. ``seen`` when the name occurs
    among the setting's train pairs (``seen_in_train`` of its test pairs says the same).
    ``query_depth`` is the depth of the node most test pairs of that name point to (ties: the
    shallower node, then the smaller node id), so every query has one depth.
    """
    _require(
        evaluation_pairs,
        (
            "setting",
            "asin",
            "category_id",
            "category_name",
            "category_depth",
            "split",
            "seen_in_train",
        ),
        "evaluation_pairs",
    )
    pairs = evaluation_pairs.rename({"category_name": "query"})
    seen = pairs.group_by("setting", "query").agg(
        (
            (pl.col("split") == "train").any()
            | (pl.col("seen_in_train").fill_null(False) & (pl.col("split") == split)).any()
        ).alias("seen"),
    )
    ranked_nodes = (
        pairs.filter(pl.col("split") == split)
        .group_by("setting", "query", "category_id")
        .agg(pl.len().alias("n_pairs"), pl.col("category_depth").min().alias("depth"))
        .sort(
            ["setting", "query", "n_pairs", "depth", "category_id"],
            descending=[False, False, True, False, False],
        )
    )
    nodes = ranked_nodes.group_by("setting", "query", maintain_order=True).agg(
        pl.col("category_id").first().alias("query_category_id"),
        pl.col("depth").first().cast(pl.Int64).alias("query_depth"),
        pl.len().cast(pl.Int64).alias("n_nodes"),
    )
    return (
        seen.join(nodes, on=["setting", "query"], how="left")
        .with_columns(
            pl.when(pl.col("seen"))
            .then(pl.lit("seen"))
            .otherwise(pl.lit("unseen"))
            .alias("subset"),
            pl.col("n_nodes").fill_null(0),
        )
        .select("setting", "query", "subset", "query_depth", "query_category_id", "n_nodes")
        .sort("setting", "query")
    )


def validate_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The run columns with string keys and Int64 ranks; clear errors for broken rankings."""
    _require(runs, RUN_COLUMNS, "retrieval_runs")
    runs = runs.select(
        pl.col("model").cast(pl.String),
        pl.col("setting").cast(pl.String),
        pl.col("query").cast(pl.String),
        pl.col("rank").cast(pl.Int64),
        pl.col("asin").cast(pl.String),
    )
    bad = runs.filter(
        pl.any_horizontal(pl.col("model", "setting", "query", "rank").is_null())
        | (pl.col("rank") < 1)
    )
    if bad.height:
        raise ValueError(
            f"retrieval_runs has {bad.height} row(s) with a null key or a rank < 1, e.g. "
            f"{bad.head(3).to_dicts()}"
        )
    return runs


def ranking_grid(runs: pl.DataFrame, qrels: pl.DataFrame) -> pl.DataFrame:
    """``(model, setting, query)`` of every ranking to score.

    Per setting that has runs: each model that ran in it x every query of the setting, i.e. every
    judged query (a test category name) plus any other query some model ran. Settings without
    runs are not evaluated.
    """
    ran = runs.select("model", "setting").unique()
    queries = pl.concat(
        [
            runs.select("setting", "query"),
            qrels.select(pl.col("setting").cast(pl.String), pl.col("query").cast(pl.String)),
        ]
    ).unique()
    return ran.join(queries, on="setting").sort("model", "setting", "query")


def per_query_metrics(
    runs: pl.DataFrame,
    qrels: pl.DataFrame,
    queries: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per ``(model, setting, query)`` with R, ``n_retrieved`` and every metric.

    ``runs``: ``model, setting, query, rank, asin``. ``qrels``: ``setting, query, asin`` (the
    relevant products). ``queries`` (optional, from :func:`query_info`) adds ``subset`` and
    ``query_depth``.

    Every model is scored on every query of the setting (:func:`ranking_grid`): a model that
    returned nothing for a query scores 0 on it instead of being evaluated on fewer queries.
    Metrics are NaN -> null for R = 0. Ranks must be unique within a ranking; gaps are allowed
    (a skipped rank is a non-relevant position).
    """
    _require(qrels, ("setting", "query", "asin"), "qrels")
    runs = validate_runs(runs)
    keys = ["model", "setting", "query"]

    judged = qrels.select(
        pl.col("setting").cast(pl.String),
        pl.col("query").cast(pl.String),
        pl.col("asin").cast(pl.String),
    ).unique()
    n_rel = judged.group_by("setting", "query").agg(pl.len().cast(pl.Int64).alias("R"))

    per_ranking = runs.group_by(keys).agg(
        pl.len().alias("n_rows"),
        pl.col("rank").n_unique().alias("n_ranks"),
        pl.col("asin").drop_nulls().n_unique().cast(pl.Int64).alias("n_retrieved"),
    )
    dup = per_ranking.filter(pl.col("n_rows") != pl.col("n_ranks"))
    if dup.height:
        raise ValueError(
            f"retrieval_runs has {dup.height} ranking(s) with a repeated rank; ranks must be unique "
            f"per (model, setting, query) (ties are broken by the retrieval stage), e.g. "
            f"{dup.select(keys).head(3).to_dicts()}"
        )

    grid = (
        ranking_grid(runs, judged)
        .join(n_rel, on=["setting", "query"], how="left")
        .join(per_ranking.select(*keys, "n_retrieved"), on=keys, how="left")
        .with_columns(pl.col("R").fill_null(0), pl.col("n_retrieved").fill_null(0))
        .sort(keys)
        .with_row_index("qi")
    )

    max_k = max(*PRECISION_KS, *MAP_KS)
    # Only relevant rows matter, so the duplicate rule runs on them alone: a relevant asin
    # repeated lower in the same ranking is dropped (it would be non-relevant there).
    hits = (
        runs.join(judged, on=["setting", "query", "asin"])
        .join(grid.select(*keys, "qi", "R"), on=keys)
        .select("qi", "rank", "asin", "R")
        .sort("qi", "rank")
        .filter(pl.struct("qi", "asin").is_first_distinct())
        # Ranks beyond max(K, R) affect no metric.
        .filter(pl.col("rank") <= pl.max_horizontal(pl.col("R"), pl.lit(max_k)))
    )

    n = grid.height
    r_all = grid["R"].to_numpy()
    hit_q = hits["qi"].to_numpy().astype(np.int64)
    hit_rank = hits["rank"].to_numpy().astype(np.int64)
    needed = np.full(n, max_k, dtype=np.int64)
    if hit_q.size:
        np.maximum.at(needed, hit_q, hit_rank)

    columns = {name: np.empty(n, dtype=np.float64) for name in METRIC_COLUMNS}
    # Queries are bucketed by the power of two above the depth they need, so one query with a
    # huge R does not widen everyone's matrix; each bucket is cut into blocks under a cell budget.
    bucket = np.ceil(np.log2(needed)).astype(np.int64)
    hit_bucket = bucket[hit_q]
    for b in np.unique(bucket):
        rows = np.flatnonzero(bucket == b)
        width = int(needed[rows].max())
        in_bucket = hit_bucket == b
        # rows is sorted, so a hit's position in the bucket is a searchsorted away.
        b_hit_row = np.searchsorted(rows, hit_q[in_bucket])
        b_hit_rank = hit_rank[in_bucket]
        step = max(1, _MAX_BLOCK_CELLS // width)
        for lo in range(0, rows.size, step):
            hi = min(lo + step, rows.size)
            sel = (b_hit_row >= lo) & (b_hit_row < hi)
            rel = relevance_matrix(b_hit_row[sel] - lo, b_hit_rank[sel], hi - lo, width)
            for name, values in evaluate_matrix(rel, r_all[rows[lo:hi]]).items():
                columns[name][rows[lo:hi]] = values

    out = grid.drop("qi").with_columns(
        [pl.Series(name, values).fill_nan(None) for name, values in columns.items()]
    )
    if queries is not None:
        _require(queries, ("setting", "query", "subset"), "queries")
        extra = [c for c in ("subset", "query_depth") if c in queries.columns]
        out = out.join(
            queries.select("setting", "query", *extra), on=["setting", "query"], how="left"
        )
    if "subset" not in out.columns:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("subset"))
    if "query_depth" not in out.columns:
        out = out.with_columns(pl.lit(None, dtype=pl.Int64).alias("query_depth"))
    return out.select(*keys, "subset", "query_depth", "R", "n_retrieved", *METRIC_COLUMNS).sort(
        keys
    )


def aggregate_metrics(per_query: pl.DataFrame) -> pl.DataFrame:
    """Means per ``(model, setting, subset)`` over queries with R > 0.

    ``all`` pools every query; ``seen`` / ``unseen`` split them by the query's subset. A subset
    with no query keeps its row with ``n_queries = 0`` and null metrics, so the table stays
    rectangular.
    """
    _require(per_query, ("model", "setting", "subset", "R", *METRIC_COLUMNS), "per_query")
    scored = per_query.filter(pl.col("R") > 0)
    aggs = [pl.len().cast(pl.Int64).alias("n_queries")] + [
        pl.col(m).mean().alias(m) for m in METRIC_COLUMNS
    ]
    overall = (
        scored.group_by("model", "setting").agg(aggs).with_columns(pl.lit("all").alias("subset"))
    )
    split = (
        scored.filter(pl.col("subset").is_in(["seen", "unseen"]))
        .group_by("model", "setting", "subset")
        .agg(aggs)
    )
    frame = (
        per_query.select("model", "setting")
        .unique()
        .join(pl.DataFrame({"subset": list(SUBSETS)}), how="cross")
    )
    combined = pl.concat([overall.select(split.columns), split], how="vertical_relaxed")
    subset_order = pl.col("subset").replace_strict(
        {s: i for i, s in enumerate(SUBSETS)}, return_dtype=pl.Int64
    )
    return (
        frame.join(combined, on=["model", "setting", "subset"], how="left")
        .with_columns(pl.col("n_queries").fill_null(0))
        .sort(pl.col("model"), pl.col("setting"), subset_order)
        .select("model", "setting", "subset", "n_queries", *METRIC_COLUMNS)
    )


def evaluate(
    runs: pl.DataFrame, evaluation_pairs: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(metrics, metrics_per_query)`` from runs and the evaluation pairs (test split judged)."""
    per_query = per_query_metrics(
        runs, qrels_from_pairs(evaluation_pairs), query_info(evaluation_pairs)
    )
    return aggregate_metrics(per_query), per_query
