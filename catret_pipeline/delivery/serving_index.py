"""The whole-catalogue serving index of one setting: every product, the serving model's vectors.

Pure (no Dagster): the ``serving_indexes`` asset calls :func:`refresh_serving_index` once per
setting and :func:`check_serving_index` is its recall check. The index holds the same rows, in
the same order and normalisation, as the server's exact top-k and ``category_rankings``
(:func:`delivery.rankings.unit_catalogue`); the server uses the saved graph only when its model,
items and vectors are those it computed from the tables it loaded, so a stale index is never
served.

It is brought up to date with the evaluation indexes' code (``retrieval.hnsw_index``): updated in
place when few products changed, rebuilt when many did, and always rebuilt when the serving
model changed (another model's vectors are a different space, whatever their count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from catret_pipeline.retrieval.hnsw_params import HnswParams, UpdatePolicy
from catret_pipeline.retrieval.hnsw_search import RecallTarget, recall_at_k, recall_queries
from catret_pipeline.retrieval.hnsw_store import load_index, read_index_meta
from catret_pipeline.retrieval.hnsw_update import refresh_index
from catret_pipeline.storage.artefacts import ArtefactPath, artefact_path

RECALL_K = 10
#: Folder (under the data dir) of the serving indexes: ``<setting>.bin`` + ``.labels.parquet``.
INDEX_DIR = "serving_indexes"

SERVING_INDEX_SCHEMA = {
    "setting": pl.String,
    "model": pl.String,
    "n_items": pl.Int64,
    "dim": pl.Int64,
    "M": pl.Int64,
    "ef_construction": pl.Int64,
    "ef": pl.Int64,
    "index_path": pl.String,
    "labels_path": pl.String,
    "bytes": pl.Int64,
    "recall_at_10": pl.Float64,
    "recall_bound": pl.Float64,
    "recall_sample_queries": pl.Int64,
    "seed": pl.Int64,
    "build_seconds": pl.Float64,
    "action": pl.String,
    "reason": pl.String,
    "n_added": pl.Int64,
    "n_removed": pl.Int64,
    "n_changed": pl.Int64,
}


@dataclass(frozen=True)
class RecallSettings:
    bound: float
    sample_queries: int
    seed: int
    ef_max: int


def index_paths(setting: str) -> tuple[str, str]:
    """The index binary and label map of a setting, relative to the data dir."""
    return f"{INDEX_DIR}/{setting}.bin", f"{INDEX_DIR}/{setting}.labels.parquet"


def _model_changed(path_labels: ArtefactPath, model: str) -> bool:
    if not path_labels.exists():
        return False
    try:
        return read_index_meta(path_labels).get("model") != model
    except Exception:  # noqa: BLE001 - an unreadable map is rebuilt by refresh_index anyway
        return False


def refresh_serving_index(
    root: ArtefactPath,
    setting: str,
    model: str,
    labels: np.ndarray,
    unit: np.ndarray,
    categories: np.ndarray,
    params: HnswParams,
    policy: UpdatePolicy,
    recall: RecallSettings,
    threads: int = 1,
) -> dict:
    """Build, update or keep ``setting``'s index over ``(labels, unit)``; its table row.

    ``labels`` / ``unit`` are :func:`unit_catalogue`'s output; ``categories`` the unit query
    vectors of the tree's nodes (half of the recall sample, as users query with them).
    """
    row: dict = dict.fromkeys(SERVING_INDEX_SCHEMA)
    row |= {"setting": setting, "model": model, "n_items": len(labels), "M": params.M}
    row |= {"ef_construction": params.ef_construction, "ef": params.ef}
    row |= {"recall_bound": recall.bound, "recall_sample_queries": recall.sample_queries}
    row |= {"seed": recall.seed}
    if len(labels) == 0:
        row["reason"] = "no product vectors"
        return row
    rel_bin, rel_labels = index_paths(setting)
    path_bin, path_labels = artefact_path(root, rel_bin), artefact_path(root, rel_labels)
    if _model_changed(path_labels, model):
        policy = UpdatePolicy(
            rebuild_fraction=policy.rebuild_fraction,
            max_deleted_fraction=policy.max_deleted_fraction,
            tolerance=policy.tolerance,
            force_rebuild=True,
        )
    n = max(1, recall.sample_queries)
    # ef is tuned on another draw than the one recall is reported on (as the evaluation indexes).
    tuning = RecallTarget(
        recall_queries(unit, categories, n, recall.seed + 1),
        recall.bound,
        RECALL_K,
        max(recall.ef_max, params.ef),
    )
    done = refresh_index(
        path_bin,
        path_labels,
        labels.tolist(),
        unit,
        params,
        policy,
        threads=threads,
        extra={"model": model, "setting": setting},
        recall=tuning,
    )
    row_id_of = dict(zip(done.loaded.labels.tolist(), done.loaded.row_ids.tolist(), strict=True))
    ids = np.array([row_id_of[a] for a in labels.tolist()], dtype=np.int64)
    sample = recall_queries(unit, categories, n, recall.seed)
    row |= {
        "dim": int(unit.shape[1]),
        "ef": done.loaded.ef,
        "index_path": rel_bin,
        "labels_path": rel_labels,
        "bytes": int(done.meta["index_bytes"]),
        "recall_at_10": recall_at_k(done.loaded, unit, sample, RECALL_K, ids=ids),
        "build_seconds": round(done.seconds, 4),
        "action": done.action,
        "reason": done.reason,
        "n_added": done.n_added,
        "n_removed": done.n_removed,
        "n_changed": done.n_changed,
    }
    return row


def check_serving_index(root: ArtefactPath, row: dict) -> dict:
    """Load a saved index back and measure it on its own; ``problem`` says what is wrong when
    its files are not the model and item count its row names, or recall@10 on a product sample
    drawn with another seed than the build's is below the row's bound."""
    loaded = load_index(
        artefact_path(root, row["index_path"]), artefact_path(root, row["labels_path"])
    )
    vecs = loaded.vectors()
    out = {"setting": row["setting"], "model": row["model"], "n_items": loaded.n}
    empty = np.zeros((0, loaded.dim), np.float32)
    n = max(1, int(row["recall_sample_queries"]))
    sample = recall_queries(vecs, empty, n, int(row["seed"]) + 2)
    out["recall_at_10"] = recall_at_k(loaded, vecs, sample, RECALL_K)
    problems = []
    if loaded.meta.get("model") != row["model"] or loaded.n != row["n_items"]:
        problems.append(
            f"its files hold {loaded.n} items of {loaded.meta.get('model')!r}, the table row "
            f"{row['n_items']} of {row['model']!r}"
        )
    if out["recall_at_10"] < row["recall_bound"]:
        problems.append(f"recall@10 {out['recall_at_10']:.4f} < {row['recall_bound']}")
    out["problem"] = "; ".join(problems) or None
    return out
