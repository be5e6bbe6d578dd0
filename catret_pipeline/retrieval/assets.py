"""Retrieval assets: one HNSW index per (vector model, setting), its recall check, and the
ranked lists every model returns for every test query (see docs/retrieval.md).

With ``build_assets(shards)`` and ``shards > 1`` the indexes are built by one step per possible
vector model (``index_shards/hnsw_indexes/<model>``) and ``hnsw_indexes`` merges their rows, so
the executor runs the models side by side; see docs/scaling.md.
"""

from collections import defaultdict

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.fusion.features import MODEL_SPECS
from catret_pipeline.markdown import frame_markdown
from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker
from catret_pipeline.retrieval.hnsw_index import (
    HnswParams,
    LoadedIndex,
    RecallTarget,
    UpdatePolicy,
    load_index,
    recall_at_k,
    recall_queries,
    refresh_index,
    search,
)
from catret_pipeline.retrieval.schemas import MIN_DEPTH, RUN_COLUMNS
from catret_pipeline.retrieval.vectors import (
    BM25_MODEL,
    ZERO_SHOT_MODELS,
    VectorSet,
    VectorTables,
    clip_baseline_name,
    text_baseline_name,
)
from catret_pipeline.storage.resources import CatretStorage

GROUP = "retrieval"
RECALL_K = 10

INDEX_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "n_items": pl.Int64,
    "n_missing_vectors": pl.Int64,
    "dim": pl.Int64,
    "M": pl.Int64,
    "ef_construction": pl.Int64,
    "ef": pl.Int64,
    "index_path": pl.String,
    "labels_path": pl.String,
    "bytes": pl.Int64,
    "build_seconds": pl.Float64,
    "recall_at_10": pl.Float64,
    "action": pl.String,
    "reason": pl.String,
    "n_added": pl.Int64,
    "n_removed": pl.Int64,
    "n_changed": pl.Int64,
}
SUMMARY_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "n_queries": pl.Int64,
    "answered": pl.Int64,
    "hnsw": pl.Int64,
    "exact": pl.Int64,
    "no_vector": pl.Int64,
    "rows": pl.Int64,
    "note": pl.String,
}


class IndexConfig(dg.Config):
    """HNSW build and acceptance settings (defaults and their reasons: docs/retrieval.md)."""

    M: int = Field(default=16, description="HNSW graph degree (hnswlib M).")
    ef_construction: int = Field(default=200, description="Candidate list size while building.")
    ef: int = Field(
        default=100,
        description="Candidate list size while searching; raised to k for deeper queries, and "
        "doubled (up to ef_max) while a sample of queries misses recall_bound.",
    )
    ef_max: int = Field(
        default=1000,
        ge=1,
        description="Largest ef the build may raise the search ef to, to meet recall_bound.",
    )
    threads: int = Field(
        default=1,
        description="Build threads; 1 gives the same graph on every run (fixed seed).",
    )
    recall_sample_queries: int = Field(
        default=200,
        description="Product vectors (and up to as many category vectors) sampled per index "
        "to measure recall@10 against exact search.",
    )
    recall_bound: float = Field(
        default=0.98, description="The hnsw_recall check fails below this recall@10."
    )
    seed: int = Field(default=0, description="Seeds the HNSW level draws and the recall sample.")
    rebuild_fraction: float = Field(
        default=0.5,
        ge=0,
        description="Rebuild an index instead of updating it in place when added + removed + "
        "changed items exceed this share of its previous items (a retrained model changes "
        "every vector).",
    )
    max_deleted_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Rebuild when deleted (tombstoned) slots left after an update would exceed "
        "this share of the graph; search still walks through them.",
    )
    force_rebuild: bool = Field(
        default=False, description="Rebuild every index from scratch, whatever changed."
    )


class IndexMergeConfig(dg.Config):
    """No options: with per-model index steps, IndexConfig goes to each
    ``index_shards__hnsw_indexes__<model>`` op (``index_config_ops`` writes that run config).
    Declared empty so that IndexConfig values given to this op are refused, not ignored."""


class RecallCheckConfig(dg.Config):
    """Overrides for the hnsw_recall check; unset values come from the hnsw_indexes run."""

    recall_bound: float | None = Field(default=None, description="Fail below this recall@10.")
    recall_sample_queries: int | None = Field(default=None, description="Sampled queries.")
    seed: int | None = Field(default=None, description="Seed of the query sample.")


# ---------------------------------------------------------------------------------------------
# Plain helpers (no Dagster)


def held_out_pairs(evaluation_pairs: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    lf = evaluation_pairs.lazy() if isinstance(evaluation_pairs, pl.DataFrame) else evaluation_pairs
    return lf.filter(pl.col("split") == "test").select("setting", "asin", "category_name").collect()


def collection_asins(pairs: pl.DataFrame, setting: str) -> list[str]:
    """The setting's test products: what every model ranks for that setting."""
    return sorted(pairs.filter(pl.col("setting") == setting)["asin"].unique().to_list())


def query_plan(pairs: pl.DataFrame, setting: str) -> pl.DataFrame:
    """``query`` (category name), ``n_relevant`` (R) and ``depth`` = max(10, R) per query."""
    return (
        pairs.filter(pl.col("setting") == setting)
        .group_by(pl.col("category_name").alias("query"))
        .agg(pl.col("asin").n_unique().alias("n_relevant"))
        .with_columns(pl.max_horizontal(pl.col("n_relevant"), pl.lit(MIN_DEPTH)).alias("depth"))
        .sort("query")
    )


def _check_dims(queries: VectorSet, dim: int, what: str) -> None:
    # Different encoders on the two sides (e.g. two CLIP variants) make every score meaningless.
    if len(queries) and queries.dim != dim:
        raise ValueError(f"{what}: query vectors have dimension {queries.dim}, products {dim}")


def _category_matrix(queries: VectorSet, names: list[str], dim: int) -> np.ndarray:
    lookup = queries.lookup()
    rows = [lookup[n] for n in names if n in lookup]
    if not rows:
        return np.zeros((0, dim), np.float32)
    return queries.matrix[rows]


# ---------------------------------------------------------------------------------------------
# Assets


def index_params(config: IndexConfig) -> tuple[HnswParams, UpdatePolicy]:
    params = HnswParams(
        M=config.M, ef_construction=config.ef_construction, ef=config.ef, seed=config.seed
    )
    policy = UpdatePolicy(
        rebuild_fraction=config.rebuild_fraction,
        max_deleted_fraction=config.max_deleted_fraction,
        force_rebuild=config.force_rebuild,
    )
    return params, policy


def build_index_rows(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    storage: CatretStorage,
    pairs: pl.DataFrame,
    tables: VectorTables,
    models: list[str],
) -> pl.DataFrame:
    """Build, update or keep the index of every (model in ``models``, setting); one row each,
    models in the given order, settings sorted."""
    params, policy = index_params(config)
    settings = sorted(pairs["setting"].unique().to_list())
    rows = []
    for model in models:
        for setting in settings:
            collection = collection_asins(pairs, setting)
            products = tables.products(model, setting).restrict(collection)
            row = {
                "model": model,
                "setting": setting,
                "n_items": len(products),
                "n_missing_vectors": len(collection) - len(products),
                "dim": products.dim or None,
                "M": params.M,
                "ef_construction": params.ef_construction,
                "ef": params.ef,
                "index_path": None,
                "labels_path": None,
                "bytes": None,
                "build_seconds": None,
                "recall_at_10": None,
                "action": None,
                "reason": "no product vectors",
                "n_added": None,
                "n_removed": None,
                "n_changed": None,
            }
            if len(products) == 0:
                context.log.warning(f"{model}/{setting}: no product vectors, no index built")
                rows.append(row)
                continue
            queries = tables.queries(model, setting)
            if len(queries) == 0:
                # e.g. CLIP offline: image vectors but no aligned text tower for the queries.
                row["reason"] = "no query vectors"
                context.log.warning(f"{model}/{setting}: no query vectors, no index built")
                rows.append(row)
                continue
            bin_path = storage.path("indexes", model, f"{setting}.bin")
            labels_path = storage.path("indexes", model, f"{setting}.labels.parquet")
            names = query_plan(pairs, setting)["query"].to_list()
            _check_dims(queries, products.dim, f"{model}/{setting}")
            categories = _category_matrix(queries, names, products.dim)
            n_sample = max(1, config.recall_sample_queries)
            # ef is tuned on another draw than the one the recall (and the check) is measured on.
            tuning = RecallTarget(
                recall_queries(products.matrix, categories, n_sample, config.seed + 1),
                config.recall_bound,
                RECALL_K,
                max(config.ef_max, config.ef),
            )
            done = refresh_index(
                bin_path,
                labels_path,
                products.keys,
                products.matrix,
                params,
                policy,
                threads=config.threads,
                extra={"model": model, "setting": setting},
                recall=tuning,
            )
            sample = recall_queries(products.matrix, categories, n_sample, config.seed)
            # Measured against exact search over the new vectors, whichever path produced the
            # index: an update must be as good as a build.
            row_id_of = dict(
                zip(done.loaded.labels.tolist(), done.loaded.row_ids.tolist(), strict=True)
            )
            ids = np.array([row_id_of[a] for a in products.keys], dtype=np.int64)
            row.update(
                index_path=str(bin_path.relative_to(storage.root)),
                labels_path=str(labels_path.relative_to(storage.root)),
                ef=done.loaded.ef,
                bytes=int(done.meta["index_bytes"]),
                build_seconds=round(done.seconds, 4),
                recall_at_10=recall_at_k(done.loaded, products.matrix, sample, RECALL_K, ids=ids),
                action=done.action,
                reason=done.reason,
                n_added=done.n_added,
                n_removed=done.n_removed,
                n_changed=done.n_changed,
            )
            context.log.info(
                f"{model}/{setting}: {done.action} ({done.reason}); {len(products)} items "
                f"(+{done.n_added} -{done.n_removed} ~{done.n_changed}), dim {products.dim}, "
                f"{done.seconds:.2f} s, ef {done.loaded.ef}, recall@10 {row['recall_at_10']:.4f}"
            )
            rows.append(row)
    return pl.DataFrame(rows, schema=INDEX_COLUMNS)


#: The IndexConfig values the hnsw_recall check reads back from the hnsw_indexes materialisation.
RECORDED_SETTINGS = ("recall_bound", "recall_sample_queries", "seed")


def index_metadata(df: pl.DataFrame, recorded: dict) -> dict:
    """The metadata of an hnsw_indexes-shaped table; ``recorded`` holds RECORDED_SETTINGS."""
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
        # Read back by the hnsw_recall check, so one config governs build and acceptance.
        "recall_bound": dg.MetadataValue.float(float(recorded["recall_bound"])),
        "recall_sample_queries": dg.MetadataValue.int(int(recorded["recall_sample_queries"])),
        "seed": dg.MetadataValue.int(int(recorded["seed"])),
    }


def _config_settings(config: IndexConfig) -> dict:
    return {name: getattr(config, name) for name in RECORDED_SETTINGS}


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
    df = build_index_rows(context, config, storage, pairs, tables, tables.vector_models())
    return dg.Output(df, metadata=index_metadata(df, _config_settings(config)))


# ---- per-model index steps (build_assets(shards > 1)) ----------------------------------------

#: Group and first key part of the per-model index assets.
INDEX_SHARD_GROUP = "index_shards"

#: The upstream tables each zero-shot model reads; a trained model reads fused_representations.
ZERO_SHOT_INPUTS = {
    "mpnet": ("title_embeddings", "category_embeddings"),
    "clip": ("image_embeddings", "category_clip_embeddings"),
}


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
    df = build_index_rows(context, config, storage, pairs, tables, models)
    meta = index_metadata(df, _config_settings(config))
    meta["model"] = dg.MetadataValue.text(model)
    return dg.Output(df, metadata=meta)


def _model_index_asset(model: str) -> dg.AssetsDefinition:
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


def _per_model_settings(context: dg.AssetExecutionContext, keys: list[dg.AssetKey]) -> dict:
    """RECORDED_SETTINGS of the per-model steps' latest materialisations (IndexConfig defaults
    where none is recorded). Steps configured apart record the strictest bound."""
    defaults = _config_settings(IndexConfig())
    seen: dict[str, list] = {name: [] for name in RECORDED_SETTINGS}
    for key in keys:
        event = context.instance.get_latest_materialization_event(key)
        meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
        for name in RECORDED_SETTINGS:
            if name in meta:
                seen[name].append(meta[name].value)
    out = {}
    for name, values in seen.items():
        if not values:
            out[name] = defaults[name]
            continue
        if len(set(values)) > 1:
            context.log.warning(
                f"hnsw_indexes: per-model index steps ran with different {name} values "
                f"{sorted(set(values))}; the recall check uses "
                + ("the highest" if name == "recall_bound" else "the first model's")
            )
        out[name] = max(values) if name == "recall_bound" else values[0]
    return out


def merge_index_rows(tables: list[pl.DataFrame], models: list[str]) -> pl.DataFrame:
    """Stack the per-model tables (``tables[i]`` holds ``models[i]``'s rows) in ``models``
    order: the row order of the unsharded hnsw_indexes."""
    parts = []
    for model, table in zip(models, tables, strict=True):
        other = sorted(set(table["model"].drop_nulls().to_list()) - {model})
        if other or table["model"].null_count():
            raise ValueError(f"the index table of {model} holds rows of other models: {other}")
        parts.append(table.sort("setting", maintain_order=True))
    if not parts:
        return pl.DataFrame(schema=INDEX_COLUMNS)
    return pl.concat(parts, how="vertical_relaxed").cast(INDEX_COLUMNS)


def _merge_asset(models: list[str]) -> dg.AssetsDefinition:
    keys = [index_shard_key(m) for m in models]

    @dg.asset(
        name="hnsw_indexes",
        group_name=GROUP,
        kinds={"hnswlib", "parquet"},
        description="One HNSW index per (vector model, setting) over the setting's test "
        f"products, built by {len(models)} per-model steps (group {INDEX_SHARD_GROUP}); the "
        "same table and row order as the single-step asset.",
        ins={f"model_{i}": dg.AssetIn(key=key) for i, key in enumerate(keys)},
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
        df = merge_index_rows([per_model[f"model_{i}"] for i in range(len(models))], models)
        meta = index_metadata(df, _per_model_settings(context, keys))
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


def build_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """The retrieval assets. With ``shards > 1`` (``CATRET_EMBED_SHARDS``) ``hnsw_indexes`` is
    one step per possible vector model (group ``index_shards``) and a merge under the same key,
    so the executor builds the models' indexes side by side; 1 gives the single-step graph."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return [hnsw_indexes, retrieval_runs]
    models = index_models()
    return [*(_model_index_asset(m) for m in models), _merge_asset(models), retrieval_runs]


def _recorded_settings(context: dg.AssetCheckExecutionContext) -> dict:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("hnsw_indexes"))
    if event is None or event.asset_materialization is None:
        return {}
    meta = event.asset_materialization.metadata
    return {
        k: meta[k].value for k in ("recall_bound", "recall_sample_queries", "seed") if k in meta
    }


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
    defaults = IndexConfig()
    recorded = _recorded_settings(context)

    def pick(name: str):
        override = getattr(config, name)
        return override if override is not None else recorded.get(name, getattr(defaults, name))

    bound = float(pick("recall_bound"))
    n_samples = int(pick("recall_sample_queries"))
    seed = int(pick("seed"))
    tables = VectorTables(
        category_embeddings=category_embeddings,
        category_clip_embeddings=category_clip_embeddings,
        fused_representations=fused_representations,
    )
    pairs = held_out_pairs(evaluation_pairs)
    rows = []
    for row in hnsw_indexes.iter_rows(named=True):
        if row["index_path"] is None:
            continue
        loaded = load_index(storage.path(row["index_path"]), storage.path(row["labels_path"]))
        vectors = loaded.vectors()
        names = query_plan(pairs, row["setting"])["query"].to_list()
        queries = tables.queries(row["model"], row["setting"])
        _check_dims(queries, loaded.dim, f"{row['model']}/{row['setting']}")
        cats = _category_matrix(queries, names, loaded.dim)
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
    if not rows:
        return dg.AssetCheckResult(
            passed=True,
            metadata={"note": "no index was built (every collection was empty)"},
        )
    result = pl.DataFrame(rows)
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


def _vector_runs(
    loaded: LoadedIndex,
    queries: VectorSet,
    plan: pl.DataFrame,
    model: str,
    setting: str,
    out: dict[str, list],
) -> dict[str, int]:
    """Append the ranked lists of one (model, setting) to ``out``; returns counts."""
    _check_dims(queries, loaded.dim, f"{model}/{setting}")
    lookup = queries.lookup()
    counts = {"hnsw": 0, "exact": 0, "no_vector": 0}
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
            n = len(asins)
            out["model"].extend([model] * n)
            out["setting"].extend([setting] * n)
            out["query"].extend([name] * n)
            out["rank"].extend(range(1, n + 1))
            out["asin"].extend(asins.tolist())
            out["score"].extend(scores.tolist())
            out["search"].extend([how] * n)
    return counts


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
    pairs = held_out_pairs(evaluation_pairs)
    titles = products.select("asin", "title").collect().unique(subset="asin", keep="first")
    out: dict[str, list] = {c: [] for c in RUN_COLUMNS}
    summary = []
    for setting in sorted(pairs["setting"].unique().to_list()):
        plan = query_plan(pairs, setting)
        collection = pl.DataFrame({"asin": collection_asins(pairs, setting)}).join(
            titles, on="asin", how="left"
        )
        ranker = Bm25Ranker(
            collection["title"].to_list(), collection["asin"].to_list(), Bm25Params()
        )
        n_before = len(out["asin"])
        answered = 0
        for name, depth in plan.select("query", "depth").iter_rows():
            asins, scores = ranker.rank(name, int(depth))
            answered += bool(asins)
            n = len(asins)
            out["model"].extend([BM25_MODEL] * n)
            out["setting"].extend([setting] * n)
            out["query"].extend([name] * n)
            out["rank"].extend(range(1, n + 1))
            out["asin"].extend(asins)
            out["score"].extend(scores.tolist())
            out["search"].extend(["bm25"] * n)
        summary.append(
            {
                "model": BM25_MODEL,
                "setting": setting,
                "n_queries": plan.height,
                "answered": answered,
                "hnsw": 0,
                "exact": 0,
                "no_vector": 0,
                "rows": len(out["asin"]) - n_before,
                "note": f"{ranker.n_empty} empty/missing titles",
            }
        )
        for row in (
            hnsw_indexes.filter(pl.col("setting") == setting).sort("model").iter_rows(named=True)
        ):
            model = row["model"]
            n_before = len(out["asin"])
            if row["index_path"] is None:
                counts = {"hnsw": 0, "exact": 0, "no_vector": 0}
                note = "no index (no product vectors)"
            else:
                loaded = load_index(
                    storage.path(row["index_path"]), storage.path(row["labels_path"])
                )
                counts = _vector_runs(
                    loaded, tables.queries(model, setting), plan, model, setting, out
                )
                note = f"{row['n_missing_vectors']} test products without a vector"
            summary.append(
                {
                    "model": model,
                    "setting": setting,
                    "n_queries": plan.height,
                    "answered": counts["hnsw"] + counts["exact"],
                    **counts,
                    "rows": len(out["asin"]) - n_before,
                    "note": note,
                }
            )
    hybrid = hybrid_runs.select(list(RUN_COLUMNS)).cast(RUN_COLUMNS)
    for (setting,), part in hybrid.group_by(["setting"], maintain_order=True):
        summary.append(
            {
                "model": part["model"][0],
                "setting": setting,
                "n_queries": query_plan(pairs, setting).height,
                "answered": part["query"].n_unique(),
                "hnsw": 0,
                "exact": part["query"].n_unique(),
                "no_vector": 0,
                "rows": part.height,
                "note": "hybrid: exact fused scores over the test collection",
            }
        )
    text_name = text_baseline_name(_model_ids(title_embeddings))
    clip_name = clip_baseline_name(_model_ids(category_clip_embeddings))
    # The title-vs-name baseline is the paper's MPNet only when the encoder is MPNet, and the
    # image-vs-name one the paper's CLIP only when its towers are aligned.
    rename = (
        pl.when(pl.col("model") == "mpnet")
        .then(pl.lit(text_name))
        .when(pl.col("model") == "clip")
        .then(pl.lit(clip_name))
        .otherwise("model")
    )
    df = pl.concat([pl.DataFrame(out, schema=RUN_COLUMNS), hybrid]).with_columns(
        rename.alias("model")
    )
    summary_df = pl.DataFrame(summary, schema=SUMMARY_COLUMNS).with_columns(rename.alias("model"))
    return dg.Output(
        df,
        metadata={
            "runs": dg.MetadataValue.md(frame_markdown(summary_df, float_digits=4)),
            "n_exact_fallback": dg.MetadataValue.int(int(summary_df["exact"].sum())),
            "n_queries_without_vector": dg.MetadataValue.int(int(summary_df["no_vector"].sum())),
        },
    )


def _model_ids(table: pl.LazyFrame) -> list[str]:
    if "model_id" not in table.collect_schema().names():
        return []
    ids = table.select(pl.col("model_id").unique()).collect()["model_id"]
    return [str(m) for m in ids.drop_nulls().to_list()]


ASSETS = build_assets(1)
CHECKS = [hnsw_recall]
