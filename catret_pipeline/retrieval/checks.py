"""The ``hnsw_recall`` check: every index loaded back from disk, its recall@10 measured against
exact search. The bound, sample size and seed are those the indexes were built with, read from
the ``hnsw_indexes`` table (``ACCEPTANCE_COLUMNS``), unless ``RecallCheckConfig`` overrides them.
"""

import dagster as dg
import polars as pl

from catret_pipeline.markdown import frame_markdown
from catret_pipeline.retrieval.collection import (
    category_matrix,
    check_dims,
    held_out_pairs,
    query_plan,
)
from catret_pipeline.retrieval.config import RecallCheckConfig
from catret_pipeline.retrieval.hnsw_search import recall_at_k, recall_queries
from catret_pipeline.retrieval.hnsw_store import load_index
from catret_pipeline.retrieval.index_assets import hnsw_indexes
from catret_pipeline.retrieval.index_table import recorded_acceptance
from catret_pipeline.retrieval.schemas import ACCEPTANCE_COLUMNS, RECALL_K
from catret_pipeline.retrieval.vectors import VectorTables
from catret_pipeline.storage.resources import CatretStorage


def check_settings(table: pl.DataFrame, config: RecallCheckConfig) -> dict:
    """``ACCEPTANCE_COLUMNS`` for this run of the check: the config's overrides, else what the
    table records, else the IndexConfig defaults."""
    recorded, _ = recorded_acceptance(table)
    return {
        name: recorded[name] if getattr(config, name) is None else getattr(config, name)
        for name in ACCEPTANCE_COLUMNS
    }


def measure_recall(
    table: pl.DataFrame,
    storage: CatretStorage,
    pairs: pl.DataFrame,
    tables: VectorTables,
    n_samples: int,
    seed: int,
) -> pl.DataFrame:
    """recall@10 of every index of ``table``, loaded from disk, on ``n_samples`` of its own
    stored vectors plus up to as many category query vectors; one row per index."""
    rows = []
    for row in table.iter_rows(named=True):
        if row["index_path"] is None:
            continue
        loaded = load_index(storage.path(row["index_path"]), storage.path(row["labels_path"]))
        vectors = loaded.vectors()
        names = query_plan(pairs, row["setting"])["query"].to_list()
        queries = tables.queries(row["model"], row["setting"])
        check_dims(queries, loaded.dim, f"{row['model']}/{row['setting']}")
        cats = category_matrix(queries, names, loaded.dim)
        sample = recall_queries(vectors, cats, max(1, n_samples), seed)
        rows.append(
            {
                "model": row["model"],
                "setting": row["setting"],
                "n_items": loaded.n,
                "n_queries": int(sample.shape[0]),
                "ef": loaded.ef,
                "recall_at_10": recall_at_k(loaded, vectors, sample, RECALL_K),
            }
        )
    return pl.DataFrame(rows)


@dg.asset_check(
    asset=hnsw_indexes,
    blocking=True,
    description="Loads every index back from disk and measures recall@10 against exact search.",
    additional_ins={
        "evaluation_pairs": dg.AssetIn(),
        "category_embeddings": dg.AssetIn(),
        "category_clip_embeddings": dg.AssetIn(),
        "fused_representations": dg.AssetIn(),
    },
)
def hnsw_recall(
    context: dg.AssetCheckExecutionContext,
    config: RecallCheckConfig,
    storage: CatretStorage,
    hnsw_indexes: pl.DataFrame,
    evaluation_pairs: pl.LazyFrame,
    category_embeddings: pl.LazyFrame,
    category_clip_embeddings: pl.LazyFrame,
    fused_representations: pl.LazyFrame,
) -> dg.AssetCheckResult:
    settings = check_settings(hnsw_indexes, config)
    bound = float(settings["recall_bound"])
    tables = VectorTables(
        category_embeddings=category_embeddings,
        category_clip_embeddings=category_clip_embeddings,
        fused_representations=fused_representations,
    )
    result = measure_recall(
        hnsw_indexes,
        storage,
        held_out_pairs(evaluation_pairs),
        tables,
        int(settings["recall_sample_queries"]),
        int(settings["seed"]),
    )
    if result.is_empty():
        return dg.AssetCheckResult(
            passed=True,
            metadata={"note": "no index was built (every collection was empty)"},
        )
    min_recall = float(result["recall_at_10"].min())
    failing = result.filter(pl.col("recall_at_10") < bound)
    return dg.AssetCheckResult(
        passed=failing.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"min recall@10 {min_recall:.4f} vs bound {bound}"
            + (
                ""
                if failing.is_empty()
                else "; below: "
                + ", ".join(f"{m}/{s}" for m, s in failing.select("model", "setting").iter_rows())
            )
        ),
        metadata={
            "recall": dg.MetadataValue.md(frame_markdown(result, float_digits=4)),
            "min_recall_at_10": dg.MetadataValue.float(min_recall),
            "recall_bound": dg.MetadataValue.float(bound),
            "n_indexes": dg.MetadataValue.int(result.height),
        },
    )


CHECKS = [hnsw_recall]
