"""Category pages: the top-K products of every tree node, and what decides a node is unchanged.

Pure numpy / polars, no Dagster. Scoring is the server's own: unit product vectors sorted by
asin, unit query vectors, exact inner product with ties by row (``retrieval.exact.exact_topk``),
so a stored page equals what ``/api/search`` answers for the node's name.

A node's fingerprint covers everything its page depends on: its name, its query vector, the
serving model, K and the fingerprint of the whole catalogue's product vectors. Any product
change (a new product, a new title vector, a retrained head) changes the catalogue fingerprint
and with it every node: that is deliberate, one product can enter every page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import polars as pl

from catret_pipeline.retrieval.exact import exact_topk
from catret_pipeline.vectors_math import l2_normalize

#: Vectors are rounded before hashing: a recomputed head may differ in the last float bits
#: between processes (thread count), which must not count as a change.
HASH_DECIMALS = 4

#: What is kept of a page between builds; titles and image paths are joined afresh each build.
RANKED_SCHEMA = {
    "setting": pl.String,
    "node_id": pl.String,
    "node_name": pl.String,
    "rank": pl.Int64,
    "score": pl.Float64,
    "asin": pl.String,
    "model": pl.String,
    "node_fingerprint": pl.String,
    "catalogue_fingerprint": pl.String,
}
#: The ``category_rankings`` table.
RANKINGS_SCHEMA = {
    **{k: v for k, v in RANKED_SCHEMA.items() if k not in ("node_fingerprint",)},
    "title": pl.String,
    "image_path": pl.String,
    "node_fingerprint": pl.String,
}


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:32]


def _vec_bytes(v: np.ndarray) -> bytes:
    return np.round(np.asarray(v, dtype=np.float64), HASH_DECIMALS).astype(np.float32).tobytes()


def unit_catalogue(asins: list[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Asins sorted, with their unit vectors (the server's index order)."""
    order = np.argsort(np.asarray(asins, dtype=object), kind="stable")
    labels = np.asarray(asins, dtype=object)[order]
    vecs = l2_normalize(np.asarray(vectors)[order], "product vectors") if len(asins) else vectors
    return labels, vecs


def catalogue_fingerprint(labels: np.ndarray, unit_vectors: np.ndarray) -> str:
    return _digest([*(str(a).encode() for a in labels), _vec_bytes(unit_vectors)])


def node_fingerprint(name: str, query: np.ndarray, model: str, k: int, catalogue_fp: str) -> str:
    return _digest(
        [name.encode(), _vec_bytes(query), model.encode(), str(k).encode(), catalogue_fp.encode()]
    )


def reusable(
    previous: pl.DataFrame | None, setting: str, fingerprints: dict[str, str]
) -> pl.DataFrame:
    """Previous rows of ``setting`` whose node fingerprint is still the node's."""
    if previous is None or "node_fingerprint" not in previous.columns:
        return pl.DataFrame(schema=RANKED_SCHEMA)
    fp = pl.DataFrame(
        {"node_id": list(fingerprints), "node_fingerprint": list(fingerprints.values())},
        schema={"node_id": pl.String, "node_fingerprint": pl.String},
    )
    rows = previous.filter(pl.col("setting") == setting).select(list(RANKED_SCHEMA))
    return rows.join(fp, on=["node_id", "node_fingerprint"], how="semi")


def rank_nodes(
    setting: str,
    model: str,
    labels: np.ndarray,
    unit_vectors: np.ndarray,
    nodes: list[tuple[str, str, np.ndarray, str]],
    k: int,
    catalogue_fp: str,
    chunk: int = 1024,
) -> pl.DataFrame:
    """Top-``k`` of every ``(node_id, name, query, fingerprint)``, ``chunk`` nodes per matrix
    product (bounded memory: chunk x n scores)."""
    out: dict[str, list] = {c: [] for c in RANKED_SCHEMA}
    for start in range(0, len(nodes), chunk):
        part = nodes[start : start + chunk]
        queries = l2_normalize(np.stack([q for _, _, q, _ in part]), "queries")
        ids, scores = exact_topk(unit_vectors, queries, k)
        for (node_id, name, _, fp), row_ids, row_scores in zip(part, ids, scores, strict=True):
            n = len(row_ids)
            out["setting"] += [setting] * n
            out["node_id"] += [node_id] * n
            out["node_name"] += [name] * n
            out["rank"] += list(range(1, n + 1))
            out["score"] += row_scores.astype(np.float64).tolist()
            out["asin"] += labels[row_ids].tolist()
            out["model"] += [model] * n
            out["node_fingerprint"] += [fp] * n
            out["catalogue_fingerprint"] += [catalogue_fp] * n
    return pl.DataFrame(out, schema=RANKED_SCHEMA)


def with_display(ranked: pl.DataFrame, titles: pl.DataFrame, images: pl.DataFrame) -> pl.DataFrame:
    """Join the current title (``asin, title``) and image cache path (``asin, image_path``)."""
    return (
        ranked.join(titles, on="asin", how="left")
        .join(images, on="asin", how="left")
        .select(list(RANKINGS_SCHEMA))
        .sort("setting", "node_id", "rank")
    )
