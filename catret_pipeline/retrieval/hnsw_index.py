"""HNSW indexes (hnswlib) over L2-normalised vectors: the public API, gathered from its modules.

- ``hnsw_params``: :class:`HnswParams`, :class:`UpdatePolicy` and the option groups that the
  Dagster ``IndexConfig`` derives from (each parameter declared once);
- ``hnsw_build``: :func:`build_index`;
- ``hnsw_store``: :func:`save_index` (atomic), :func:`load_index`, :func:`read_index_meta`,
  :class:`LoadedIndex`; the label map's Parquet metadata (key ``catret.hnsw``) holds what
  hnswlib's file does not (space, dimension, ``ef``) and the binary's size and sha256;
- ``hnsw_search``: :func:`search` (with exact fallback), :func:`recall_at_k`,
  :func:`recall_queries`, :class:`RecallTarget`, :func:`tune_ef`;
- ``hnsw_update``: the in-place refresh of a saved index (:func:`plan_index_update`,
  :func:`apply_index_update`, :func:`refresh_index`).

Cosine similarity is computed as inner product on unit vectors (``space="ip"``, the default;
``"cosine"`` makes hnswlib normalise instead, with the same scores). Scores returned are
similarities, ``1 - hnswlib distance``, i.e. the cosine in [-1, 1]. Once an index has been
updated in place, row ids (= hnswlib labels) need not be 0..n-1: the label map lists only the
live items.
"""

from catret_pipeline.retrieval.hnsw_build import build_index
from catret_pipeline.retrieval.hnsw_params import (
    CHANGE_TOLERANCE,
    Action,
    GraphOptions,
    HnswParams,
    RecallOptions,
    Space,
    UpdateOptions,
    UpdatePolicy,
)
from catret_pipeline.retrieval.hnsw_search import (
    RecallTarget,
    SearchResult,
    per_query_recall,
    recall_at_k,
    recall_lower_bound,
    recall_queries,
    search,
    tune_ef,
)
from catret_pipeline.retrieval.hnsw_store import (
    FORMAT_VERSION,
    META_KEY,
    READABLE_FORMATS,
    LoadedIndex,
    load_index,
    read_index_meta,
    save_index,
)
from catret_pipeline.retrieval.hnsw_update import (
    IndexPlan,
    IndexRefresh,
    apply_index_update,
    plan_index_update,
    refresh_index,
)

__all__ = [
    "CHANGE_TOLERANCE",
    "FORMAT_VERSION",
    "META_KEY",
    "READABLE_FORMATS",
    "Action",
    "GraphOptions",
    "HnswParams",
    "IndexPlan",
    "IndexRefresh",
    "LoadedIndex",
    "RecallOptions",
    "RecallTarget",
    "SearchResult",
    "Space",
    "UpdateOptions",
    "UpdatePolicy",
    "apply_index_update",
    "build_index",
    "load_index",
    "plan_index_update",
    "read_index_meta",
    "per_query_recall",
    "recall_at_k",
    "recall_lower_bound",
    "recall_queries",
    "refresh_index",
    "save_index",
    "search",
    "tune_ef",
]
