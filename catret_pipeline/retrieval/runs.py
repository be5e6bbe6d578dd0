"""Building ``retrieval_runs``: the ranked lists of BM25 (titles), of every vector model's HNSW
index and of catret-hybrid, per (setting, test query), and their summary. No Dagster: the
asset passes the tables and a function that loads an index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import polars as pl

from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker
from catret_pipeline.retrieval.collection import (
    check_dims,
    collection_asins,
    query_plan,
    settings_of,
)
from catret_pipeline.retrieval.hnsw_search import search
from catret_pipeline.retrieval.hnsw_store import LoadedIndex
from catret_pipeline.retrieval.schemas import (
    RUN_COLUMNS,
    SEARCH_COUNTS,
    SUMMARY_COLUMNS,
    RunRows,
    frame,
    new_summary_row,
)
from catret_pipeline.retrieval.vectors import BM25_MODEL, VectorSet, VectorTables

#: Loads the index of an ``hnsw_indexes`` row (from its ``index_path`` / ``labels_path``).
IndexLoader = Callable[[dict], LoadedIndex]


def bm25_runs(
    titles: pl.DataFrame, pairs: pl.DataFrame, setting: str, plan: pl.DataFrame, out: RunRows
) -> dict:
    """BM25 over the titles of the setting's test collection, one list per query of ``plan``
    (to its depth); appended to ``out``. Returns the summary row."""
    collection = pl.DataFrame({"asin": collection_asins(pairs, setting)}).join(
        titles, on="asin", how="left"
    )
    ranker = Bm25Ranker(collection["title"].to_list(), collection["asin"].to_list(), Bm25Params())
    n_before = len(out)
    answered = 0
    for name, depth in plan.select("query", "depth").iter_rows():
        asins, scores = ranker.rank(name, int(depth))
        answered += bool(asins)
        out.add(BM25_MODEL, setting, name, asins, scores, "bm25")
    return new_summary_row(
        BM25_MODEL,
        setting,
        plan.height,
        answered=answered,
        rows=len(out) - n_before,
        note=f"{ranker.n_empty} empty/missing titles",
    )


def vector_runs(
    loaded: LoadedIndex,
    queries: VectorSet,
    plan: pl.DataFrame,
    model: str,
    setting: str,
    out: RunRows,
) -> dict[str, int]:
    """Append the ranked lists of one (model, setting) to ``out``; returns the search counts."""
    check_dims(queries, loaded.dim, f"{model}/{setting}")
    lookup = queries.lookup()
    counts = dict.fromkeys(SEARCH_COUNTS, 0)
    by_depth: dict[int, list[str]] = defaultdict(list)
    for name, depth in plan.select("query", "depth").iter_rows():
        if name in lookup:
            by_depth[int(depth)].append(name)
        else:
            counts["no_vector"] += 1
    for depth, names in sorted(by_depth.items()):
        matrix = queries.matrix[[lookup[n] for n in names]]
        res = search(loaded, matrix, depth)
        for name, asins, scores, how in zip(names, res.asins, res.scores, res.method, strict=True):
            counts[how] += 1
            out.add(model, setting, name, asins, scores, how)
    return counts


def index_runs(
    row: dict, load: IndexLoader, tables: VectorTables, plan: pl.DataFrame, out: RunRows
) -> dict:
    """The lists of the index of one ``hnsw_indexes`` row (none without an index); returns the
    summary row."""
    model, setting = row["model"], row["setting"]
    n_before = len(out)
    if row["index_path"] is None:
        counts = dict.fromkeys(SEARCH_COUNTS, 0)
        note = "no index (no product vectors)"
    else:
        counts = vector_runs(load(row), tables.queries(model, setting), plan, model, setting, out)
        note = f"{row['n_missing_vectors']} test products without a vector"
    return new_summary_row(
        model, setting, plan.height, **counts, rows=len(out) - n_before, note=note
    )


def hybrid_summary(hybrid: pl.DataFrame, pairs: pl.DataFrame) -> list[dict]:
    """Summary rows of ``hybrid_runs`` (one per setting)."""
    rows = []
    for (setting,), part in hybrid.group_by(["setting"], maintain_order=True):
        rows.append(
            new_summary_row(
                part["model"][0],
                setting,
                query_plan(pairs, setting).height,
                answered=part["query"].n_unique(),
                exact=part["query"].n_unique(),
                rows=part.height,
                note="hybrid: exact fused scores over the test collection",
            )
        )
    return rows


def baseline_rename(text_name: str, clip_name: str) -> pl.Expr:
    """``model`` with the zero-shot baselines under their reported names: the title-vs-name
    baseline is the paper's MPNet only when the encoder is MPNet, and the image-vs-name one the
    paper's CLIP only when its towers are aligned."""
    return (
        pl.when(pl.col("model") == "mpnet")
        .then(pl.lit(text_name))
        .when(pl.col("model") == "clip")
        .then(pl.lit(clip_name))
        .otherwise("model")
        .alias("model")
    )


def build_runs(
    pairs: pl.DataFrame,
    titles: pl.DataFrame,
    hnsw_indexes: pl.DataFrame,
    hybrid_runs: pl.DataFrame,
    tables: VectorTables,
    load: IndexLoader,
    rename: pl.Expr,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``retrieval_runs`` and its summary: per setting (sorted) BM25, then every index (by
    model), then catret-hybrid's lists as given; ``rename`` names the baselines."""
    out = RunRows()
    summary = []
    for setting in settings_of(pairs):
        plan = query_plan(pairs, setting)
        summary.append(bm25_runs(titles, pairs, setting, plan, out))
        indexes = hnsw_indexes.filter(pl.col("setting") == setting).sort("model")
        for row in indexes.iter_rows(named=True):
            summary.append(index_runs(row, load, tables, plan, out))
    hybrid = hybrid_runs.select(list(RUN_COLUMNS)).cast(RUN_COLUMNS)
    summary.extend(hybrid_summary(hybrid, pairs))
    runs = pl.concat([out.frame(), hybrid]).with_columns(rename)
    return runs, frame(summary, SUMMARY_COLUMNS).with_columns(rename)
