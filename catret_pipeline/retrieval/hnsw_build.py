"""Building an HNSW index (hnswlib) over L2-normalised vectors.

Cosine similarity is computed as inner product on unit vectors (``space="ip"``, the default;
``"cosine"`` makes hnswlib normalise instead, with the same scores).
"""

from __future__ import annotations

import hnswlib
import numpy as np

from catret_pipeline.retrieval.hnsw_params import HnswParams
from catret_pipeline.vectors_math import l2_normalize


def build_index(
    vectors,
    ids=None,
    params: HnswParams | None = None,
    threads: int = 1,
) -> hnswlib.Index:
    """An index over ``vectors`` (normalised here) labelled by integer ``ids`` (default 0..n-1).

    ``threads=1`` inserts in a fixed order, so with a fixed ``seed`` the graph is the same on
    every run; more threads build faster but the graph (not its recall) varies between runs.
    """
    params = params or HnswParams()
    vecs = l2_normalize(vectors, "vectors")
    n, dim = vecs.shape
    if n == 0:
        raise ValueError("cannot build an HNSW index over zero vectors")
    labels = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"ids has shape {labels.shape}, expected ({n},)")
    if np.unique(labels).size != n or (labels < 0).any():
        raise ValueError("ids must be unique non-negative integers")
    index = hnswlib.Index(space=params.space, dim=dim)
    # allow_replace_deleted only adds an in-memory free list (the file is byte-identical);
    # it lets a later in-place update put new items into the slots of deleted ones.
    index.init_index(
        max_elements=n,
        ef_construction=params.ef_construction,
        M=params.M,
        random_seed=params.seed,
        allow_replace_deleted=True,
    )
    index.add_items(vecs, labels, num_threads=max(1, threads))
    index.set_ef(params.ef)
    return index
