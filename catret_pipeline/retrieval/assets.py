"""Retrieval assets: one HNSW index per (vector model, setting), its recall check, and the
ranked lists every model returns for every test query (see docs/retrieval.md)."""

from collections import defaultdict

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.markdown import markdown_table
from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker
from catret_pipeline.retrieval.hnsw_index import (
    HnswParams,
    LoadedIndex,
    UpdatePolicy,
    load_index,
    recall_at_k,
    refresh_index,
    search,
)
from catret_pipeline.retrieval.vectors import BM25_MODEL, VectorSet, VectorTables
from catret_pipeline.storage.resources import CatretStorage

GROUP = "retrieval"
RECALL_K = 10
#: Every query gets at least this many results (the deepest cut-off among P@k / mAP@k).
MIN_DEPTH = 10

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
RUN_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "query": pl.String,
    "rank": pl.Int32,
    "asin": pl.String,
    "score": pl.Float32,
    "search": pl.String,
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
        description="Candidate list size while searching; raised to k for deeper queries.",
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


def recall_queries(
    products: np.ndarray, categories: np.ndarray, n_samples: int, seed: int
) -> np.ndarray:
    """Up to ``n_samples`` random product vectors plus up to ``n_samples`` category vectors."""
    rng = np.random.default_rng(seed)
    parts = []
    for block in (products, categories):
        if block.shape[0]:
            take = min(n_samples, block.shape[0])
            parts.append(block[np.sort(rng.choice(block.shape[0], size=take, replace=False))])
    if not parts:
        return np.zeros((0, products.shape[1] if products.ndim == 2 else 0), np.float32)
    return np.concatenate(parts).astype(np.float32)


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


def _md_table(df: pl.DataFrame) -> str:
    rows = [[f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in df.iter_rows()]
    return markdown_table(df.columns, rows)


# ---------------------------------------------------------------------------------------------
# Assets


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
    params = HnswParams(
        M=config.M, ef_construction=config.ef_construction, ef=config.ef, seed=config.seed
    )
    policy = UpdatePolicy(
        rebuild_fraction=config.rebuild_fraction,
        max_deleted_fraction=config.max_deleted_fraction,
        force_rebuild=config.force_rebuild,
    )
    tables = VectorTables(
        title_embeddings=title_embeddings,
        image_embeddings=image_embeddings,
        category_embeddings=category_embeddings,
        category_clip_embeddings=category_clip_embeddings,
        fused_representations=fused_representations,
    )
    pairs = held_out_pairs(evaluation_pairs)
    settings = sorted(pairs["setting"].unique().to_list())
    rows = []
    for model in tables.vector_models():
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
            bin_path = storage.path("indexes", model, f"{setting}.bin")
            labels_path = storage.path("indexes", model, f"{setting}.labels.parquet")
            done = refresh_index(
                bin_path,
                labels_path,
                products.keys,
                products.matrix,
                params,
                policy,
                threads=config.threads,
                extra={"model": model, "setting": setting},
            )
            names = query_plan(pairs, setting)["query"].to_list()
            queries = tables.queries(model, setting)
            _check_dims(queries, products.dim, f"{model}/{setting}")
            sample = recall_queries(
                products.matrix,
                _category_matrix(queries, names, products.dim),
                max(1, config.recall_sample_queries),
                config.seed,
            )
            # Measured against exact search over the new vectors, whichever path produced the
            # index: an update must be as good as a build.
            row_id_of = dict(
                zip(done.loaded.labels.tolist(), done.loaded.row_ids.tolist(), strict=True)
            )
            ids = np.array([row_id_of[a] for a in products.keys], dtype=np.int64)
            row.update(
                index_path=str(bin_path.relative_to(storage.root)),
                labels_path=str(labels_path.relative_to(storage.root)),
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
                f"{done.seconds:.2f} s, recall@10 {row['recall_at_10']:.4f}"
            )
            rows.append(row)
    df = pl.DataFrame(rows, schema=INDEX_COLUMNS)
    built = df.filter(pl.col("index_path").is_not_null())
    actions = built["action"].value_counts()
    count = dict(zip(actions["action"], actions["count"], strict=True))
    return dg.Output(
        df,
        metadata={
            "indexes": dg.MetadataValue.md(
                _md_table(
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
                    )
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
            "recall_bound": dg.MetadataValue.float(config.recall_bound),
            "recall_sample_queries": dg.MetadataValue.int(config.recall_sample_queries),
            "seed": dg.MetadataValue.int(config.seed),
        },
    )


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
            "recall": dg.MetadataValue.md(_md_table(result)),
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
    description="Ranked products per (model, setting, test query), depth max(10, R).",
)
def retrieval_runs(
    context: dg.AssetExecutionContext,
    storage: CatretStorage,
    hnsw_indexes: pl.DataFrame,
    evaluation_pairs: pl.LazyFrame,
    products: pl.LazyFrame,
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
    df = pl.DataFrame(out, schema=RUN_COLUMNS)
    summary_df = pl.DataFrame(summary, schema=SUMMARY_COLUMNS)
    return dg.Output(
        df,
        metadata={
            "runs": dg.MetadataValue.md(_md_table(summary_df)),
            "n_exact_fallback": dg.MetadataValue.int(int(summary_df["exact"].sum())),
            "n_queries_without_vector": dg.MetadataValue.int(int(summary_df["no_vector"].sum())),
        },
    )


ASSETS = [hnsw_indexes, retrieval_runs]
CHECKS = [hnsw_recall]
