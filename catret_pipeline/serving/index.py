"""Top-k over one setting's whole-catalogue product vectors.

Exact inner product (``retrieval.exact``) by default: at the sample's and the fashion
catalogue's scale (thousands of products, a few hundred dimensions) one query is a
matrix-vector product of well under a millisecond, and exact means no recall to check.
Above :data:`HNSW_FROM` products (or with ``CATRET_SERVE_INDEX=hnsw``) an in-memory HNSW graph is
built with the evaluation indexes' code (``retrieval.hnsw_index``) when the snapshot loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from catret_pipeline.delivery.rankings import unit_catalogue
from catret_pipeline.retrieval.exact import exact_topk, l2_normalize

HNSW_FROM = 200_000
ENV_SERVE_INDEX = "CATRET_SERVE_INDEX"


@dataclass(frozen=True)
class ProductIndex:
    asins: np.ndarray  # sorted; position i <-> asins[i]
    vectors: np.ndarray  # unit rows, float32
    hnsw: object | None = None  # retrieval.hnsw_index.LoadedIndex over the same rows

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
            from catret_pipeline.retrieval.hnsw_index import search

            res = search(self.hnsw, query[None, :], k)
            return res.asins[0].tolist(), res.scores[0].tolist()
        pos, scores = exact_topk(self.vectors, l2_normalize(query[None, :], "query"), k)
        return self.asins[pos[0]].tolist(), scores[0].tolist()


def index_method(n: int) -> str:
    asked = (os.environ.get(ENV_SERVE_INDEX) or "auto").strip().lower()
    if asked not in ("auto", "exact", "hnsw"):
        raise ValueError(f"{ENV_SERVE_INDEX} must be auto, exact or hnsw, got {asked!r}")
    if asked == "auto":
        return "hnsw" if n >= HNSW_FROM else "exact"
    return asked


def build_product_index(asins: list[str], vectors: np.ndarray) -> ProductIndex:
    # The order and normalisation category_rankings ranks with, so stored pages equal searches.
    labels, vecs = unit_catalogue(asins, vectors)
    hnsw = None
    if len(asins) and index_method(len(asins)) == "hnsw":
        from catret_pipeline.retrieval.hnsw_index import HnswParams, LoadedIndex, build_index

        params = HnswParams()
        graph = build_index(vecs, params=params, threads=os.cpu_count() or 1)
        hnsw = LoadedIndex(index=graph, labels=labels, meta={"dim": vecs.shape[1], "ef": params.ef})
    return ProductIndex(asins=labels, vectors=vecs, hnsw=hnsw)
