"""The ``hnsw_indexes`` asset: one HNSW index per (vector model, setting) over the setting's
test products (docs/retrieval.md); the work is in ``index_table``.

With ``shards > 1`` (``retrieval.assets.build_assets``) the indexes are built by one step per
possible vector model (``index_shards/hnsw_indexes/<model>``) and ``hnsw_indexes`` merges their
rows, so the executor runs the models side by side; see docs/scaling.md.

No ``from __future__ import annotations`` in the asset modules: Dagster reads the config
classes from the live annotations.
"""

import dagster as dg
import polars as pl

from catret_pipeline.fan_out import FanOut, assemble
from catret_pipeline.fusion.features import MODEL_SPECS
from catret_pipeline.markdown import frame_markdown
from catret_pipeline.retrieval.collection import held_out_pairs
from catret_pipeline.retrieval.config import IndexConfig, IndexMergeConfig, acceptance_settings
from catret_pipeline.retrieval.index_table import (
    build_index_rows,
    merge_index_rows,
    recorded_acceptance,
)
from catret_pipeline.retrieval.vectors import ZERO_SHOT_MODELS, VectorTables
from catret_pipeline.storage.resources import CatretStorage

GROUP = "retrieval"

#: Group and first key part of the per-model index assets.
INDEX_SHARD_GROUP = "index_shards"

#: The upstream tables each zero-shot model reads; a trained model reads fused_representations.
ZERO_SHOT_INPUTS = {
    "mpnet": ("title_embeddings", "category_embeddings"),
    "clip": ("image_embeddings", "category_clip_embeddings"),
}


def index_metadata(df: pl.DataFrame, acceptance: dict) -> dict:
    """The metadata of an hnsw_indexes-shaped table; ``acceptance`` holds the recall settings
    (``ACCEPTANCE_COLUMNS``), shown for the UI (the check reads them from the table)."""
    built = df.filter(pl.col("index_path").is_not_null())
    actions = built["action"].value_counts()
    count = dict(zip(actions["action"], actions["count"], strict=True))
    return {
        "indexes": dg.MetadataValue.md(
            frame_markdown(
                df.select(
                    "model",
                    "setting",
                    "action",
                    "reason",
                    "n_items",
                    "n_added",
                    "n_removed",
                    "n_changed",
                    "n_missing_vectors",
                    "dim",
                    "recall_at_10",
                ),
                float_digits=4,
            )
        ),
        "n_indexes": dg.MetadataValue.int(built.height),
        "n_built": dg.MetadataValue.int(int(count.get("built", 0))),
        "n_updated": dg.MetadataValue.int(int(count.get("updated", 0))),
        "n_unchanged": dg.MetadataValue.int(int(count.get("unchanged", 0))),
        "total_bytes": dg.MetadataValue.int(int(built["bytes"].sum() or 0)),
        "min_recall_at_10": dg.MetadataValue.float(
            float(built["recall_at_10"].min()) if built.height else float("nan")
        ),
        "recall_bound": dg.MetadataValue.float(float(acceptance["recall_bound"])),
        "recall_sample_queries": dg.MetadataValue.int(int(acceptance["recall_sample_queries"])),
        "seed": dg.MetadataValue.int(int(acceptance["seed"])),
    }


@dg.asset(
    group_name=GROUP,
    kinds={"hnswlib", "parquet"},
    description="One HNSW index per (vector model, setting) over the setting's test products.",
)
def hnsw_indexes(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    storage: CatretStorage,
    evaluation_pairs: pl.LazyFrame,
    title_embeddings: pl.LazyFrame,
    image_embeddings: pl.LazyFrame,
    category_embeddings: pl.LazyFrame,
    category_clip_embeddings: pl.LazyFrame,
    fused_representations: pl.LazyFrame,
) -> dg.Output[pl.DataFrame]:
    tables = VectorTables(
        title_embeddings=title_embeddings,
        image_embeddings=image_embeddings,
        category_embeddings=category_embeddings,
        category_clip_embeddings=category_clip_embeddings,
        fused_representations=fused_representations,
    )
    pairs = held_out_pairs(evaluation_pairs)
    df = build_index_rows(context.log, config, storage, pairs, tables, tables.vector_models())
    return dg.Output(df, metadata=index_metadata(df, acceptance_settings(config)))


# ---- per-model index steps (build_assets(shards > 1)) ----------------------------------------


def index_models() -> list[str]:
    """Every model that can have vectors, in hnsw_indexes row order: the zero-shot baselines,
    then every fusion model that ``fusion_models`` can train (sorted, like ``vector_models``).
    Static, so the per-model steps exist before any data does."""
    missing = set(ZERO_SHOT_MODELS) ^ set(ZERO_SHOT_INPUTS)
    if missing:  # a new baseline needs its inputs named here
        raise RuntimeError(f"ZERO_SHOT_INPUTS out of step with ZERO_SHOT_MODELS: {missing}")
    return [*ZERO_SHOT_MODELS, *sorted(MODEL_SPECS)]


def index_shard_key(model: str) -> dg.AssetKey:
    """``index_shards/hnsw_indexes/<model>``: two folders down under ``assets/``, so the file
    gets no DuckDB view (like the embedding shards); not a contract table."""
    return dg.AssetKey([INDEX_SHARD_GROUP, "hnsw_indexes", model])


def _model_index(
    model: str,
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    evaluation_pairs: pl.LazyFrame,
    **inputs: pl.LazyFrame,
) -> dg.Output[pl.DataFrame]:
    storage: CatretStorage = context.resources.storage
    tables = VectorTables(**inputs)
    if model in ZERO_SHOT_MODELS:
        models = [model]
    else:
        # A model fusion did not train this run has no vectors: no rows, as in the unsharded
        # table, which lists only the models present in fused_representations.
        models = [model] if model in tables.trained_models() else []
        if not models:
            context.log.info(f"{model}: no rows in fused_representations, no index")
    pairs = held_out_pairs(evaluation_pairs)
    df = build_index_rows(context.log, config, storage, pairs, tables, models)
    meta = index_metadata(df, acceptance_settings(config))
    meta["model"] = dg.MetadataValue.text(model)
    return dg.Output(df, metadata=meta)


def model_index_asset(model: str) -> dg.AssetsDefinition:
    """The per-model index step of ``model`` (key :func:`index_shard_key`)."""
    inputs = ZERO_SHOT_INPUTS.get(model, ("fused_representations",))

    @dg.asset(
        key=index_shard_key(model),
        group_name=INDEX_SHARD_GROUP,
        kinds={"hnswlib", "parquet"},
        description=f"The HNSW indexes of {model} (one per setting) and its rows of "
        "hnsw_indexes; no rows when the model has no vectors.",
        required_resource_keys={"storage"},
        ins={name: dg.AssetIn(key=name) for name in ("evaluation_pairs", *inputs)},
    )
    def model_index(
        context: dg.AssetExecutionContext, config: IndexConfig, **tables: pl.LazyFrame
    ) -> dg.Output[pl.DataFrame]:
        pairs = tables.pop("evaluation_pairs")
        return _model_index(model, context, config, pairs, **tables)

    return model_index


def merge_asset(models: list[str], fan: FanOut) -> dg.AssetsDefinition:
    """``hnsw_indexes`` as the merge of the per-model steps of ``models`` (keys ``fan``)."""

    @dg.asset(
        name="hnsw_indexes",
        group_name=GROUP,
        kinds={"hnswlib", "parquet"},
        description="One HNSW index per (vector model, setting) over the setting's test "
        f"products, built by {len(models)} per-model steps (group {INDEX_SHARD_GROUP}); the "
        "same table and row order as the single-step asset.",
        ins=fan.ins,
    )
    def hnsw_indexes_merge(
        context: dg.AssetExecutionContext,
        config: IndexMergeConfig,
        fused_representations: pl.LazyFrame,
        **per_model: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        # Only the model names are read: a trained model with no step would vanish silently.
        trained = VectorTables(fused_representations=fused_representations).trained_models()
        uncovered = sorted(set(trained) - set(models))
        if uncovered:
            raise ValueError(
                f"fused_representations holds model(s) {uncovered} that have no per-model index "
                f"step (known: {models}); add them to fusion MODEL_SPECS or build unsharded"
            )
        parts, _ = fan.split(per_model)
        df = merge_index_rows(parts, models)
        acceptance, notes = recorded_acceptance(df)
        for note in notes:
            context.log.warning(note)
        meta = index_metadata(df, acceptance)
        meta["index_steps"] = dg.MetadataValue.int(len(models))
        return dg.Output(df, metadata=meta)

    return hnsw_indexes_merge


def index_config_ops(job: dg.JobDefinition, config: dict) -> dict:
    """``ops`` run config giving IndexConfig values to whichever index steps ``job`` has:
    ``hnsw_indexes`` in the single-step graph, every ``index_shards/...`` step in the
    per-model one (the merge takes no config). Empty when the job has none of them."""
    fields = set(IndexConfig.model_fields)
    ops = {}
    for node in sorted(job.graph.nodes, key=lambda n: n.name):
        config_type = node.definition.config_field and node.definition.config_field.config_type
        schema = set(getattr(config_type, "fields", None) or ())
        is_index = node.name == "hnsw_indexes" or node.name.startswith(f"{INDEX_SHARD_GROUP}__")
        if is_index and schema == fields:
            ops[node.name] = {"config": dict(config)}
    return ops


def index_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """``hnsw_indexes`` alone (``shards == 1``), or a step per possible vector model and the
    merge under the same key."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return [hnsw_indexes]
    models = index_models()
    fan = FanOut(tuple(index_shard_key(m) for m in models))
    return assemble(fan, [model_index_asset(m) for m in models], merge_asset(models, fan))
