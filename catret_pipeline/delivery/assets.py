"""Assets for serving: ``serving_models`` (chosen on validation) and ``category_rankings``.

Thin: the choice is :mod:`delivery.choice`, the ranking and fingerprints :mod:`delivery.rankings`,
the whole-catalogue vectors the server's own :func:`serving.vectors.model_vectors`.
"""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.catalogue.splits import SETTINGS
from catret_pipeline.delivery import rankings
from catret_pipeline.delivery.choice import choices_frame, choose_model, parse_override
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.tables import read_tables

GROUP = "serving"
#: Tables ``model_vectors`` may need; which ones depends on the served model, so they are read
#: through storage (absent ones skipped) instead of being inputs every build must have.
VECTOR_TABLES = (
    "image_embeddings",
    "title_embeddings",
    "attribute_embeddings",
    "category_embeddings",
    "category_clip_embeddings",
    "fused_representations",
)


class ServingModelsConfig(dg.Config):
    override: str = Field(
        "",
        description="Serving model override, as CATRET_SERVE_MODEL: 'clip-ita' (every setting) "
        "or 'all=clip-ita,specific=mpnet'; '' = best validation R-precision.",
    )


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Per setting the model that serves, chosen on validation R-precision only "
    "(fusion_models.val_rprec_best), with every candidate's number; overridable by config.",
)
def serving_models(
    config: ServingModelsConfig, fusion_models: pl.DataFrame, evaluation_pairs: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    have = set(evaluation_pairs["setting"].unique().to_list())
    override = parse_override(config.override)
    choices = [choose_model(fusion_models, s, override) for s in SETTINGS if s in have]
    df = choices_frame(choices)
    meta = {f"{c.setting}.model": dg.MetadataValue.text(c.model) for c in choices}
    meta |= {f"{c.setting}.reason": dg.MetadataValue.text(c.reason) for c in choices}
    return dg.Output(df, metadata=meta)


class CategoryRankingsConfig(dg.Config):
    k: int = Field(50, ge=1, description="Products per category page.")
    chunk_nodes: int = Field(1024, ge=1, description="Nodes scored per matrix product.")


def _tables(storage: CatretStorage) -> dict[str, pl.DataFrame]:
    out = {}
    for name in VECTOR_TABLES:
        path = storage.asset_path(name)
        if path.exists():
            out[name] = read_tables([path])
    return out


@dg.asset(
    group_name=GROUP,
    kinds={"numpy", "polars"},
    deps=list(VECTOR_TABLES),
    description="Top-K products of the whole catalogue (all splits) for every category tree "
    "node, per setting, with the serving model; nodes whose inputs did not change are reused.",
)
def category_rankings(
    context: dg.AssetExecutionContext,
    config: CategoryRankingsConfig,
    storage: CatretStorage,
    serving_models: pl.DataFrame,
    category_tree: pl.DataFrame,
    products: pl.LazyFrame,
    product_images: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    from catret_pipeline.serving import vectors

    titles = products.select("asin", "title").collect().unique("asin", keep="first")
    asins = sorted(titles["asin"].to_list())
    images = (
        product_images.filter((pl.col("status") == "ok") & pl.col("cache_path").is_not_null())
        .unique("asin", keep="first")
        .select("asin", pl.col("cache_path").alias("image_path"))
    )
    tables = _tables(storage)
    previous = storage.read_previous("category_rankings")
    nodes = category_tree.sort("node_id").select("node_id", "name").rows()
    parts, meta = [], {}
    for setting, model in serving_models.select("setting", "model").rows():
        mv = vectors.model_vectors(storage.root, tables, model, setting, asins)
        labels, unit = rankings.unit_catalogue(mv.asins, mv.vectors)
        cat_fp = rankings.catalogue_fingerprint(labels, unit)
        todo, fps, missing = [], {}, 0
        for node_id, name in nodes:
            q = mv.queries.get(name)
            if q is None and mv.encode is not None:
                q = mv.encode(name)  # a name without a precomputed vector, as the server does
            if q is None:
                missing += 1
                continue
            fps[node_id] = rankings.node_fingerprint(name, q, mv.model, config.k, cat_fp)
            todo.append((node_id, name, np.asarray(q, dtype=np.float32), fps[node_id]))
        kept = rankings.reusable(previous, setting, fps)
        done = set(kept["node_id"].unique().to_list())
        todo = [t for t in todo if t[0] not in done]
        fresh = rankings.rank_nodes(
            setting, mv.model, labels, unit, todo, config.k, cat_fp, config.chunk_nodes
        )
        parts += [kept, fresh]
        meta[f"{setting}.nodes_recomputed"] = dg.MetadataValue.int(len(todo))
        meta[f"{setting}.nodes_reused"] = dg.MetadataValue.int(len(done))
        meta[f"{setting}.nodes_without_vector"] = dg.MetadataValue.int(missing)
        meta[f"{setting}.model"] = dg.MetadataValue.text(mv.model)
        context.log.info(
            f"category_rankings {setting} ({mv.model}): {len(todo)} node(s) ranked, "
            f"{len(done)} reused, {missing} without a query vector"
        )
    ranked = pl.concat(parts) if parts else pl.DataFrame(schema=rankings.RANKED_SCHEMA)
    df = rankings.with_display(ranked, titles, images)
    return dg.Output(df, metadata=meta)


ASSETS = [serving_models, category_rankings]
CHECKS: list = []
