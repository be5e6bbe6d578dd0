"""Error analysis: where in the category tree does a wrong top-1 product come from?

For every ranking whose top-1 product is not relevant, the *predicted category* is the category
that product is paired with in the same setting; it is compared with the query's category node
in the tree (``relation`` says what the prediction is *relative to the query*):

- ``ancestor``: the predicted node is a proper ancestor of the query node (too general);
- ``descendant``: a proper descendant (too specific);
- ``same_tree_other``: same root, neither ancestor nor descendant (a sibling branch);
- ``different_tree``: another root;
- ``same_category``: the very node of the query (the product carries the query's category but is
  not a relevant *test* product, e.g. a train product left in the collection);
- ``unknown``: the product or a node is missing from the pairs / tree;
- ``no_result``: the ranking is empty.

``depth_diff`` = predicted depth - query depth (negative for ancestors).

A query is a category *name*; several nodes may carry it. Its nodes are those of the setting's
test pairs with that name, and the prediction is compared with each; the reported node is the
closest one: relation order same_category < ancestor / descendant < same_tree_other <
different_tree, then the smaller |depth_diff|, then the smaller node id. Reading the name
charitably this way counts an error as "in the same tree" whenever any reading of the query
makes it so.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from catret_pipeline.evaluation.metrics import (
    _require,
    qrels_from_pairs,
    ranking_grid,
    validate_runs,
)

RELATIONS: tuple[str, ...] = (
    "same_category",
    "ancestor",
    "descendant",
    "same_tree_other",
    "different_tree",
    "unknown",
    "no_result",
)
_PRIORITY = {
    "same_category": 0,
    "ancestor": 1,
    "descendant": 1,
    "same_tree_other": 2,
    "different_tree": 3,
    "unknown": 4,
    "no_result": 5,
}

ERROR_COLUMNS: tuple[str, ...] = (
    "model",
    "setting",
    "query",
    "subset",
    "top1_asin",
    "pred_category",
    "pred_category_id",
    "query_category_id",
    "relation",
    "pred_depth",
    "query_depth",
    "depth_diff",
)


def relation(pred_path: Sequence[str], query_path: Sequence[str]) -> str:
    """Relation of the predicted node to the query node, both given as root-to-node paths."""
    pred, query = tuple(pred_path), tuple(query_path)
    if not pred or not query:
        return "unknown"
    if pred == query:
        return "same_category"
    if len(pred) < len(query) and query[: len(pred)] == pred:
        return "ancestor"
    if len(pred) > len(query) and pred[: len(query)] == query:
        return "descendant"
    if pred[0] == query[0]:
        return "same_tree_other"
    return "different_tree"


def _relation_expr(pred: pl.Expr, query: pl.Expr) -> pl.Expr:
    """:func:`relation` as a polars expression over two list[str] columns."""
    p_len, q_len = pred.list.len(), query.list.len()
    return (
        pl.when(pred.is_null() | query.is_null() | (p_len == 0) | (q_len == 0))
        .then(pl.lit("unknown"))
        .when(pred == query)
        .then(pl.lit("same_category"))
        .when((p_len < q_len) & (query.list.head(p_len) == pred))
        .then(pl.lit("ancestor"))
        .when((p_len > q_len) & (pred.list.head(q_len) == query))
        .then(pl.lit("descendant"))
        .when(pred.list.first() == query.list.first())
        .then(pl.lit("same_tree_other"))
        .otherwise(pl.lit("different_tree"))
    )


def top1(runs: pl.DataFrame) -> pl.DataFrame:
    """``(model, setting, query, top1_asin)``: the best-ranked non-null asin of each ranking."""
    runs = validate_runs(runs).filter(pl.col("asin").is_not_null())
    keys = ["model", "setting", "query"]
    return runs.filter(pl.col("rank") == pl.col("rank").min().over(keys)).select(
        *keys, pl.col("asin").alias("top1_asin")
    )


def classify_errors(
    runs: pl.DataFrame,
    evaluation_pairs: pl.DataFrame,
    category_tree: pl.DataFrame,
    queries: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per ranking whose top-1 is wrong (see the module doc), columns :data:`ERROR_COLUMNS`.

    Rankings are those of :func:`per_query_metrics` (:func:`ranking_grid`), restricted to
    queries with at least one relevant test product.
    """
    _require(category_tree, ("node_id", "path"), "category_tree")
    _require(
        evaluation_pairs,
        ("setting", "asin", "category_id", "category_name", "split"),
        "evaluation_pairs",
    )
    runs = validate_runs(runs)
    keys = ["model", "setting", "query"]
    judged = qrels_from_pairs(evaluation_pairs)
    with_relevant = judged.select("setting", "query").unique()

    grid = ranking_grid(runs, judged).join(with_relevant, on=["setting", "query"])
    first = grid.join(top1(runs), on=keys, how="left")
    wrong = (
        first.join(
            judged.rename({"asin": "top1_asin"}).with_columns(pl.lit(True).alias("relevant")),
            on=["setting", "query", "top1_asin"],
            how="left",
        )
        .filter(pl.col("relevant").is_null())
        .drop("relevant")
    )

    tree = category_tree.select(
        pl.col("node_id").cast(pl.String), pl.col("path").cast(pl.List(pl.String))
    ).unique("node_id")
    # A product has one pair per setting; unique() guards against a repeated row upstream.
    pred = (
        evaluation_pairs.select(
            "setting",
            pl.col("asin").alias("top1_asin"),
            pl.col("category_id").cast(pl.String).alias("pred_category_id"),
            pl.col("category_name").alias("pred_category"),
        )
        .unique(["setting", "top1_asin"], keep="first")
        .join(
            tree.rename({"node_id": "pred_category_id", "path": "pred_path"}),
            on="pred_category_id",
            how="left",
        )
    )
    query_nodes = (
        evaluation_pairs.filter(pl.col("split") == "test")
        .select(
            "setting",
            pl.col("category_name").alias("query"),
            pl.col("category_id").cast(pl.String).alias("query_category_id"),
        )
        .unique()
        .join(
            tree.rename({"node_id": "query_category_id", "path": "query_path"}),
            on="query_category_id",
            how="left",
        )
    )

    candidates = (
        wrong.join(pred, on=["setting", "top1_asin"], how="left")
        .join(query_nodes, on=["setting", "query"], how="left")
        .with_columns(
            pl.when(pl.col("top1_asin").is_null())
            .then(pl.lit("no_result"))
            .otherwise(_relation_expr(pl.col("pred_path"), pl.col("query_path")))
            .alias("relation"),
            pl.col("pred_path").list.len().cast(pl.Int64).alias("pred_depth"),
            pl.col("query_path").list.len().cast(pl.Int64).alias("query_depth"),
        )
        .with_columns(
            (pl.col("pred_depth") - pl.col("query_depth")).alias("depth_diff"),
            pl.col("relation").replace_strict(_PRIORITY, return_dtype=pl.Int64).alias("_priority"),
        )
    )
    best = (
        candidates.sort(
            [*keys, "_priority", pl.col("depth_diff").abs(), "query_category_id"],
            nulls_last=True,
        )
        .group_by(keys, maintain_order=True)
        .first()
    )
    if queries is not None and "subset" in queries.columns:
        best = best.join(
            queries.select("setting", "query", "subset"), on=["setting", "query"], how="left"
        )
    else:
        best = best.with_columns(pl.lit(None, dtype=pl.String).alias("subset"))
    return best.select(ERROR_COLUMNS).sort(keys)


def summarise_errors(errors: pl.DataFrame, per_query: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per ``(model, setting)``: wrong top-1 count, share of each relation, mean depth diffs.

    With ``per_query`` the share of wrong top-1 among the scored queries is added
    (``error_rate``).
    """
    _require(errors, ("model", "setting", "relation", "depth_diff"), "errors")
    counts = errors.group_by("model", "setting").agg(
        pl.len().cast(pl.Int64).alias("n_errors"),
        *[(pl.col("relation") == r).mean().alias(f"share_{r}") for r in RELATIONS],
        pl.col("depth_diff")
        .filter(pl.col("relation") == "ancestor")
        .mean()
        .alias("mean_depth_diff_ancestor"),
        pl.col("depth_diff")
        .filter(pl.col("relation") == "descendant")
        .mean()
        .alias("mean_depth_diff_descendant"),
        pl.col("depth_diff").mean().alias("mean_depth_diff"),
    )
    if per_query is not None:
        n = (
            per_query.filter(pl.col("R") > 0)
            .group_by("model", "setting")
            .agg(pl.len().cast(pl.Int64).alias("n_queries"))
        )
        counts = (
            n.join(counts, on=["model", "setting"], how="left")
            .with_columns(pl.col("n_errors").fill_null(0))
            .with_columns((pl.col("n_errors") / pl.col("n_queries")).alias("error_rate"))
        )
    return counts.sort("model", "setting")
