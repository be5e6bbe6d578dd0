"""The ``hnsw_indexes`` table: building (or updating, or keeping) the index of every
(vector model, setting) and its row, merging per-model tables, and reading back the settings the
indexes were accepted with. No Dagster: the assets pass a logger and their config.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from catret_pipeline.retrieval.collection import (
    category_matrix,
    check_dims,
    collection_asins,
    query_plan,
    settings_of,
)
from catret_pipeline.retrieval.config import IndexConfig, acceptance_settings, index_params
from catret_pipeline.retrieval.hnsw_params import HnswParams, UpdatePolicy
from catret_pipeline.retrieval.hnsw_search import RecallTarget, recall_at_k, recall_queries
from catret_pipeline.retrieval.hnsw_update import refresh_index
from catret_pipeline.retrieval.schemas import (
    ACCEPTANCE_COLUMNS,
    INDEX_COLUMNS,
    RECALL_K,
    frame,
    new_index_row,
)
from catret_pipeline.retrieval.vectors import VectorTables
from catret_pipeline.storage.artefacts import relative_key
from catret_pipeline.storage.resources import CatretStorage


def index_row(
    log: logging.Logger,
    config: IndexConfig,
    params: HnswParams,
    policy: UpdatePolicy,
    storage: CatretStorage,
    pairs: pl.DataFrame,
    tables: VectorTables,
    model: str,
    setting: str,
) -> dict:
    """Build, update or keep the index of (``model``, ``setting``); its table row."""
    collection = collection_asins(pairs, setting)
    products = tables.products(model, setting).restrict(collection)
    row = new_index_row(
        model,
        setting,
        n_items=len(products),
        n_missing_vectors=len(collection) - len(products),
        dim=products.dim or None,
        M=params.M,
        ef_construction=params.ef_construction,
        ef=params.ef,
        reason="no product vectors",
        **acceptance_settings(config),
    )
    if len(products) == 0:
        log.warning(f"{model}/{setting}: no product vectors, no index built")
        return row
    queries = tables.queries(model, setting)
    if len(queries) == 0:
        # e.g. CLIP offline: image vectors but no aligned text tower for the queries.
        log.warning(f"{model}/{setting}: no query vectors, no index built")
        return row | {"reason": "no query vectors"}
    bin_path = storage.path("indexes", model, f"{setting}.bin")
    labels_path = storage.path("indexes", model, f"{setting}.labels.parquet")
    names = query_plan(pairs, setting)["query"].to_list()
    check_dims(queries, products.dim, f"{model}/{setting}")
    categories = category_matrix(queries, names, products.dim)
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
    row_id_of = dict(zip(done.loaded.labels.tolist(), done.loaded.row_ids.tolist(), strict=True))
    ids = np.array([row_id_of[a] for a in products.keys], dtype=np.int64)
    row |= {
        "index_path": relative_key(storage.artefact_root, bin_path),
        "labels_path": relative_key(storage.artefact_root, labels_path),
        "ef": done.loaded.ef,
        "bytes": int(done.meta["index_bytes"]),
        "build_seconds": round(done.seconds, 4),
        "recall_at_10": recall_at_k(done.loaded, products.matrix, sample, RECALL_K, ids=ids),
        "action": done.action,
        "reason": done.reason,
        "n_added": done.n_added,
        "n_removed": done.n_removed,
        "n_changed": done.n_changed,
    }
    log.info(
        f"{model}/{setting}: {done.action} ({done.reason}); {len(products)} items "
        f"(+{done.n_added} -{done.n_removed} ~{done.n_changed}), dim {products.dim}, "
        f"{done.seconds:.2f} s, ef {done.loaded.ef}, recall@10 {row['recall_at_10']:.4f}"
    )
    return row


def build_index_rows(
    log: logging.Logger,
    config: IndexConfig,
    storage: CatretStorage,
    pairs: pl.DataFrame,
    tables: VectorTables,
    models: list[str],
) -> pl.DataFrame:
    """Build, update or keep the index of every (model in ``models``, setting); one row each,
    models in the given order, settings sorted."""
    params, policy = index_params(config)
    rows = [
        index_row(log, config, params, policy, storage, pairs, tables, model, setting)
        for model in models
        for setting in settings_of(pairs)
    ]
    return frame(rows, INDEX_COLUMNS)


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
        return frame([], INDEX_COLUMNS)
    return pl.concat(parts, how="vertical_relaxed").cast(INDEX_COLUMNS)


def recorded_acceptance(df: pl.DataFrame) -> tuple[dict, list[str]]:
    """The acceptance settings (``ACCEPTANCE_COLUMNS``) an ``hnsw_indexes`` table records, and
    a note per setting its rows disagree on (per-model steps configured apart): then the
    highest bound, the first model's sample size and seed. IndexConfig defaults for a setting
    no row records (an empty table, or one written before the columns existed)."""
    out = acceptance_settings(IndexConfig())
    notes = []
    for name in ACCEPTANCE_COLUMNS:
        values = df[name].drop_nulls().to_list() if name in df.columns else []
        if not values:
            continue
        if len(set(values)) > 1:
            notes.append(
                f"hnsw_indexes: per-model index steps ran with different {name} values "
                f"{sorted(set(values))}; the recall check uses "
                + ("the highest" if name == "recall_bound" else "the first model's")
            )
        out[name] = max(values) if name == "recall_bound" else values[0]
    return out, notes
