"""Assets for serving: ``serving_models`` (chosen on validation), ``category_rankings`` and
``serving_indexes`` (the whole catalogue's HNSW index per setting) with its recall check.

Thin: the choice is :mod:`delivery.choice`, the ranking and fingerprints :mod:`delivery.rankings`,
the index :mod:`delivery.serving_index`, the whole-catalogue vectors the server's own
:func:`serving.vectors.model_vectors`.
"""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.catalogue.splits import SETTINGS
from catret_pipeline.delivery import rankings, serving_index
from catret_pipeline.delivery.choice import choices_frame, choose_model, parse_override
from catret_pipeline.embeddings.prompt import recorded_prompt
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.markdown import markdown_table
from catret_pipeline.retrieval.config import IndexConfig, index_params
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.tables import read_tables
from catret_pipeline.vectors_math import l2_normalize

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
    clip: OpenClipEncoder,
    text_encoder: TextEncoder,
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
    prompt = recorded_prompt(storage.asset_path("category_clip_embeddings"))
    previous = storage.read_previous("category_rankings")
    nodes = category_tree.sort("node_id").select("node_id", "name").rows()
    parts, meta = [], {}
    for setting, model in serving_models.select("setting", "model").rows():
        mv = vectors.model_vectors(
            storage.artefact_root, _specs(clip, text_encoder), tables, model, setting, asins, prompt
        )
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


def _specs(clip: OpenClipEncoder, text_encoder: TextEncoder):
    """The run's encoders: names without a stored vector are encoded as the server would."""
    from catret_pipeline.serving.encoders import EncoderSpecs

    return EncoderSpecs(text=text_encoder.spec(), clip=clip.spec())


def _catalogue_vectors(
    storage: CatretStorage, specs, products: pl.LazyFrame, model: str, setting: str
):
    from catret_pipeline.serving import vectors

    asins = sorted(products.select("asin").collect().unique()["asin"].to_list())
    prompt = recorded_prompt(storage.asset_path("category_clip_embeddings"))
    return vectors.model_vectors(
        storage.artefact_root, specs, _tables(storage), model, setting, asins, prompt
    )


@dg.asset(
    group_name=GROUP,
    kinds={"hnswlib", "polars"},
    deps=list(VECTOR_TABLES),
    description="Per setting, an HNSW index over the serving model's vectors of EVERY product "
    "(all splits), updated in place on a refresh, rebuilt when the serving model changes; "
    "catret serve uses it instead of exact top-k on large catalogues.",
)
def serving_indexes(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    storage: CatretStorage,
    clip: OpenClipEncoder,
    text_encoder: TextEncoder,
    serving_models: pl.DataFrame,
    category_tree: pl.DataFrame,
    products: pl.LazyFrame,
) -> dg.Output[pl.DataFrame]:
    params, policy = index_params(config)
    recall = serving_index.RecallSettings(
        config.recall_bound, config.recall_sample_queries, config.seed, config.ef_max
    )
    names = category_tree["name"].unique().sort().to_list()
    rows = []
    for setting, model in serving_models.select("setting", "model").rows():
        mv = _catalogue_vectors(storage, _specs(clip, text_encoder), products, model, setting)
        labels, unit = rankings.unit_catalogue(mv.asins, mv.vectors)
        cats = [mv.queries[n] for n in names if n in mv.queries]
        categories = (
            l2_normalize(np.stack(cats).astype(np.float32), "category vectors")
            if cats and len(labels)
            else np.zeros((0, unit.shape[1] if unit.ndim == 2 else 0), np.float32)
        )
        row = serving_index.refresh_serving_index(
            storage.artefact_root,
            setting,
            mv.model,
            labels,
            unit,
            categories,
            params,
            policy,
            recall,
            threads=config.threads,
        )
        rows.append(row)
        context.log.info(
            f"serving_indexes {setting} ({mv.model}): {row['action']} ({row['reason']}), "
            f"{row['n_items']} products, recall@10 {row['recall_at_10']}"
        )
    df = pl.DataFrame(rows, schema=serving_index.SERVING_INDEX_SCHEMA)
    meta = {
        f"{r['setting']}.{k}": dg.MetadataValue.text(str(r[k]))
        for r in rows
        for k in ("model", "action", "n_items", "recall_at_10")
    }
    return dg.Output(df, metadata=meta)


@dg.asset_check(
    asset=serving_indexes,
    blocking=True,
    description="Loads every serving index back: its items must be the catalogue its row "
    "records, and recall@10 against exact search at least the row's bound.",
)
def serving_index_recall(
    storage: CatretStorage, serving_indexes: pl.DataFrame
) -> dg.AssetCheckResult:
    built = serving_indexes.filter(pl.col("index_path").is_not_null())
    results = [
        serving_index.check_serving_index(storage.artefact_root, r)
        for r in built.iter_rows(named=True)
    ]
    if not results:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no serving index was built"})
    failing = [r for r in results if r["problem"]]
    rows = [[r["setting"], r["model"], r["n_items"], f"{r['recall_at_10']:.4f}"] for r in results]
    return dg.AssetCheckResult(
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{r['setting']}: {r['problem']}" for r in failing)
        or f"min recall@10 {min(r['recall_at_10'] for r in results):.4f}",
        metadata={
            "recall": dg.MetadataValue.md(
                markdown_table(["setting", "model", "n_items", "recall@10"], rows)
            ),
            "min_recall_at_10": dg.MetadataValue.float(min(r["recall_at_10"] for r in results)),
        },
    )


ASSETS = [serving_models, category_rankings, serving_indexes]
CHECKS: list = [serving_index_recall]
