"""The ``retrieval_runs`` asset: the ranked lists every model returns for every test query
(BM25, every vector model's HNSW index, catret-hybrid); the work is in ``runs``."""

import dagster as dg
import polars as pl

from catret_pipeline.markdown import frame_markdown
from catret_pipeline.retrieval.collection import held_out_pairs
from catret_pipeline.retrieval.hnsw_store import LoadedIndex, load_index
from catret_pipeline.retrieval.index_assets import GROUP
from catret_pipeline.retrieval.runs import baseline_rename, build_runs
from catret_pipeline.retrieval.vectors import VectorTables, clip_baseline_name, text_baseline_name
from catret_pipeline.storage.resources import CatretStorage


def model_ids(table: pl.LazyFrame) -> list[str]:
    """The encoder ids an embedding table records (none without a ``model_id`` column)."""
    if "model_id" not in table.collect_schema().names():
        return []
    ids = table.select(pl.col("model_id").unique()).collect()["model_id"]
    return [str(m) for m in ids.drop_nulls().to_list()]


@dg.asset(
    group_name=GROUP,
    kinds={"hnswlib", "polars"},
    description="Ranked products per (model, setting, test query), depth max(10, R): BM25, "
    "every vector model's HNSW index, and catret-hybrid (hybrid_runs).",
)
def retrieval_runs(
    context: dg.AssetExecutionContext,
    storage: CatretStorage,
    hnsw_indexes: pl.DataFrame,
    hybrid_runs: pl.DataFrame,
    evaluation_pairs: pl.LazyFrame,
    products: pl.LazyFrame,
    title_embeddings: pl.LazyFrame,
    category_embeddings: pl.LazyFrame,
    category_clip_embeddings: pl.LazyFrame,
    fused_representations: pl.LazyFrame,
) -> dg.Output[pl.DataFrame]:
    tables = VectorTables(
        category_embeddings=category_embeddings,
        category_clip_embeddings=category_clip_embeddings,
        fused_representations=fused_representations,
    )

    def load(row: dict) -> LoadedIndex:
        return load_index(storage.path(row["index_path"]), storage.path(row["labels_path"]))

    rename = baseline_rename(
        text_baseline_name(model_ids(title_embeddings)),
        clip_baseline_name(model_ids(category_clip_embeddings)),
    )
    df, summary = build_runs(
        held_out_pairs(evaluation_pairs),
        products.select("asin", "title").collect().unique(subset="asin", keep="first"),
        hnsw_indexes,
        hybrid_runs,
        tables,
        load,
        rename,
    )
    return dg.Output(
        df,
        metadata={
            "runs": dg.MetadataValue.md(frame_markdown(summary, float_digits=4)),
            "n_exact_fallback": dg.MetadataValue.int(int(summary["exact"].sum())),
            "n_queries_without_vector": dg.MetadataValue.int(int(summary["no_vector"].sum())),
        },
    )
