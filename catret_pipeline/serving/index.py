"""Top-k over one setting's whole-catalogue product vectors.

Exact inner product (``retrieval.exact``) by default: at the sample's and the fashion
catalogue's scale (thousands of products, a few hundred dimensions) one query is a
matrix-vector product of well under a millisecond, and exact means no recall to check.
Above :data:`HNSW_FROM` products (or with ``CATRET_SERVE_INDEX=hnsw``) the setting's HNSW graph
from the ``serving_indexes`` asset is loaded, provided it holds the catalogue the snapshot
computed (same model, same products, every vector within the update tolerance); otherwise (an
older build, a head retrained since, files replaced while the tables were read) a graph is built
in memory with the same code (``retrieval.hnsw_index``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catret_pipeline.delivery.rankings import unit_catalogue
from catret_pipeline.retrieval.exact import exact_topk
from catret_pipeline.vectors_math import l2_normalize

#: Exact top-k grows linearly with the catalogue: in ``catret serve`` on 2 cores it took 2.6 ms
#: p50 / 6.4 ms p99 on 7,635 x 768 and 43 / 49 ms on 200,000 x 768, where the saved HNSW graph
#: answered in 1.0 / 1.4 ms (docs/benchmarks.md). The line crosses the 10 ms p99 target near
#: 30,000 products; from 25,000 HNSW serves (recall@10 >= the build's bound, 0.98).
HNSW_FROM = 25_000


@dataclass(frozen=True)
class ProductIndex:
    asins: np.ndarray  # sorted; position i <-> asins[i]
    vectors: np.ndarray  # unit rows, float32
    hnsw: object | None = None  # retrieval.hnsw_index.LoadedIndex over the same rows
    #: Where the top-k comes from: ``exact``, ``serving_indexes`` (the saved graph) or ``built``
    #: (a graph built when the snapshot loaded).
    source: str = "exact"

    @property
    def n(self) -> int:
        return int(self.asins.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @property
    def method(self) -> str:
        return "hnsw" if self.hnsw is not None else "exact"

    def search(self, query: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        if self.n == 0:
            return [], []
        if self.hnsw is not None:
            from catret_pipeline.retrieval.hnsw_search import search

            res = search(self.hnsw, query[None, :], k)
            return res.asins[0].tolist(), res.scores[0].tolist()
        # The vectors were checked once, by unit_catalogue, when the snapshot loaded.
        q = l2_normalize(query[None, :], "query")
        pos, scores = exact_topk(self.vectors, q, k, check_vectors=False)
        return self.asins[pos[0]].tolist(), scores[0].tolist()


def index_method(n: int, asked: str = "auto") -> str:
    """``asked`` (``CatretConfig.serve_index``: auto, exact or hnsw) for ``n`` products."""
    if asked == "auto":
        return "hnsw" if n >= HNSW_FROM else "exact"
    return asked


@dataclass(frozen=True)
class SavedIndex:
    """A ``serving_indexes`` row: the model and the files."""

    model: str
    index_path: Path
    labels_path: Path


def _saved_graph(saved: SavedIndex | None, model: str, labels: np.ndarray, vecs: np.ndarray):
    """The saved graph when it indexes these rows with this model, else None.

    Checked against the files themselves, not the table row: a build may have replaced them
    after this snapshot read its tables."""
    if saved is None or saved.model != model:
        return None
    from catret_pipeline.retrieval.hnsw_params import CHANGE_TOLERANCE
    from catret_pipeline.retrieval.hnsw_store import load_index

    try:
        loaded = load_index(saved.index_path, saved.labels_path)
    except (OSError, ValueError, RuntimeError):
        return None  # damaged or replaced between its two files: build instead
    if loaded.meta.get("model") != model or loaded.n != len(labels):
        return None
    pos = {a: i for i, a in enumerate(labels.tolist())}
    try:
        rows = np.array([pos[a] for a in loaded.labels.tolist()], dtype=np.int64)
    except KeyError:
        return None
    if float(np.max(np.abs(loaded.vectors() - vecs[rows]))) > CHANGE_TOLERANCE:
        return None
    return loaded


def build_product_index(
    asins: list[str],
    vectors: np.ndarray,
    model: str = "",
    saved: SavedIndex | None = None,
    method: str = "auto",
) -> ProductIndex:
    # The order and normalisation category_rankings ranks with, so stored pages equal searches.
    labels, vecs = unit_catalogue(asins, vectors)
    if not len(asins) or index_method(len(asins), method) != "hnsw":
        return ProductIndex(asins=labels, vectors=vecs)
    hnsw = _saved_graph(saved, model, labels, vecs)
    if hnsw is not None:
        return ProductIndex(asins=labels, vectors=vecs, hnsw=hnsw, source="serving_indexes")
    from catret_pipeline.retrieval.hnsw_build import build_index
    from catret_pipeline.retrieval.hnsw_params import HnswParams
    from catret_pipeline.retrieval.hnsw_store import LoadedIndex

    params = HnswParams()
    graph = build_index(vecs, params=params, threads=os.cpu_count() or 1)
    hnsw = LoadedIndex(index=graph, labels=labels, meta={"dim": vecs.shape[1], "ef": params.ef})
    return ProductIndex(asins=labels, vectors=vecs, hnsw=hnsw, source="built")
