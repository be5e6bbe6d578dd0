"""HNSW indexes (hnswlib) over L2-normalised vectors: build, atomic save, load, search, recall.

Cosine similarity is computed as inner product on unit vectors (``space="ip"``, the default;
``"cosine"`` makes hnswlib normalise instead, with the same scores). Scores returned are
similarities, ``1 - hnswlib distance``, i.e. the cosine in [-1, 1].

hnswlib's file does not hold the space, the dimension or ``ef``; they live in the label map's
Parquet schema metadata (key ``catret.hnsw``), so :func:`load_index` needs only the two paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hnswlib
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from catret_pipeline.retrieval.exact import exact_topk, l2_normalize
from catret_pipeline.storage.atomic import atomic_path, atomic_write_parquet

META_KEY = b"catret.hnsw"
FORMAT_VERSION = 1

Space = Literal["ip", "cosine"]


@dataclass(frozen=True)
class HnswParams:
    """Graph and search parameters.

    Defaults (hnswlib 0.8, 512-d unit vectors, docs/retrieval.md): M=16 and ef_construction=200
    gave recall@10 0.996 at ef 40 and 0.9999 at ef 80 on 100k clustered vectors (0.988 at ef 80
    on 1M), so ef=100 leaves margin at our collection sizes. ``ef`` is raised to k by
    :func:`search` whenever a deeper list is asked for.
    """

    M: int = 16
    ef_construction: int = 200
    ef: int = 100
    space: Space = "ip"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.space not in ("ip", "cosine"):
            raise ValueError(f"space must be 'ip' or 'cosine', got {self.space!r}")
        if self.M < 2 or self.ef_construction < 1 or self.ef < 1:
            raise ValueError(f"need M >= 2, ef_construction >= 1, ef >= 1; got {self}")


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
    index.init_index(
        max_elements=n,
        ef_construction=params.ef_construction,
        M=params.M,
        random_seed=params.seed,
    )
    index.add_items(vecs, labels, num_threads=max(1, threads))
    index.set_ef(params.ef)
    return index


def _hnswlib_version() -> str:
    try:
        return importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_index(
    index: hnswlib.Index,
    path_bin: str | os.PathLike,
    labels_df: pl.DataFrame,
    path_labels: str | os.PathLike,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the index binary and its ``row_id -> asin`` map, each atomically.

    The binary goes first: a crash between the two renames leaves a new binary beside the old
    label map, which :func:`load_index` detects by the recorded byte size and item count.
    ``extra`` (model, setting, seed, ...) is stored in the sidecar metadata. Returns it.
    """
    path_bin, path_labels = Path(path_bin), Path(path_labels)
    if set(labels_df.columns) < {"row_id", "asin"}:
        raise ValueError(f"labels_df needs columns row_id, asin; got {labels_df.columns}")
    if labels_df.height != index.element_count:
        raise ValueError(
            f"labels_df has {labels_df.height} rows, the index {index.element_count} items"
        )
    index_ids = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
    label_ids = np.sort(labels_df["row_id"].cast(pl.Int64).to_numpy())
    if not np.array_equal(index_ids, label_ids):
        raise ValueError("labels_df row_id values differ from the index's labels")

    # hnswlib writes to a path of its own choosing: give it a temp sibling, rename on success.
    with atomic_path(path_bin) as tmp:
        index.save_index(str(tmp))
        size = tmp.stat().st_size
        digest = _sha256(tmp)

    meta = {
        "format_version": FORMAT_VERSION,
        "space": index.space,
        "dim": int(index.dim),
        "M": int(index.M),
        "ef_construction": int(index.ef_construction),
        "ef": int(index.ef),
        "n_items": int(index.element_count),
        "index_file": path_bin.name,
        "index_bytes": int(size),
        "index_sha256": digest,
        "hnswlib_version": _hnswlib_version(),
        **dict(extra or {}),
    }
    table = labels_df.select(pl.col("row_id").cast(pl.Int64), pl.col("asin").cast(pl.String)).sort(
        "row_id"
    )
    arrow = table.to_arrow()
    arrow = arrow.replace_schema_metadata(
        {**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
    )
    atomic_write_parquet(arrow, path_labels)
    return meta


def read_index_meta(path_labels: str | os.PathLike) -> dict[str, Any]:
    schema_meta = pq.read_schema(path_labels).metadata or {}
    if META_KEY not in schema_meta:
        raise ValueError(
            f"{path_labels} has no {META_KEY.decode()} metadata: not a catret label map"
        )
    return json.loads(schema_meta[META_KEY])


@dataclass
class LoadedIndex:
    index: hnswlib.Index
    labels: np.ndarray  # asin per row id; row ids are 0..n-1
    meta: dict[str, Any]
    _vectors: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def ef(self) -> int:
        return int(self.meta["ef"])

    def vectors(self) -> np.ndarray:
        """The stored (unit) vectors in row-id order, for exact search over the same data."""
        if self._vectors is None:
            self._vectors = np.asarray(
                self.index.get_items(np.arange(self.n), return_type="numpy"), dtype=np.float32
            )
        return self._vectors


def load_index(
    path_bin: str | os.PathLike,
    path_labels: str | os.PathLike,
    *,
    ef: int | None = None,
) -> LoadedIndex:
    """Load an index saved by :func:`save_index`; ``ef`` defaults to the one it was built with."""
    path_bin, path_labels = Path(path_bin), Path(path_labels)
    for p in (path_bin, path_labels):
        if not p.exists():
            raise FileNotFoundError(f"HNSW index file missing: {p}")
    meta = read_index_meta(path_labels)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path_labels}: unsupported format_version {meta.get('format_version')}")
    size = path_bin.stat().st_size
    if size != meta["index_bytes"]:
        raise ValueError(
            f"{path_bin} is {size} bytes but its label map records {meta['index_bytes']}: "
            "the two files come from different builds; rebuild the index"
        )
    labels_df = pl.read_parquet(path_labels).sort("row_id")
    n = labels_df.height
    if not np.array_equal(labels_df["row_id"].to_numpy(), np.arange(n)):
        raise ValueError(f"{path_labels}: row_id must be 0..n-1")
    index = hnswlib.Index(space=meta["space"], dim=int(meta["dim"]))
    index.load_index(str(path_bin), max_elements=n)
    if index.element_count != n:
        raise ValueError(f"{path_bin} holds {index.element_count} items, labels {n}")
    meta = {**meta, "ef": int(ef if ef is not None else meta["ef"])}
    # ef is not part of hnswlib's file: without this it would silently be 10.
    index.set_ef(meta["ef"])
    return LoadedIndex(index=index, labels=labels_df["asin"].to_numpy(), meta=meta)


@dataclass
class SearchResult:
    row_ids: list[np.ndarray]  # per query, best first
    scores: list[np.ndarray]  # cosine similarity per result
    method: list[str]  # per query: 'hnsw' or 'exact'
    asins: list[np.ndarray] = dataclasses.field(default_factory=list)


def _sorted_by_score_then_id(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def _hnsw_knn(index: hnswlib.Index, qs: np.ndarray, k: int, base_ef: int):
    """knn_query with ef >= k; None when hnswlib cannot fill k results for the batch."""
    index.set_ef(max(base_ef, k))
    try:
        labels, dist = index.knn_query(qs, k=k, num_threads=1)
    except RuntimeError:
        return None
    finally:
        index.set_ef(base_ef)
    return labels.astype(np.int64), (1.0 - dist).astype(np.float32)


def search(loaded: LoadedIndex, queries, k: int, *, fallback: bool = True) -> SearchResult:
    """Top-``k`` per query; ``k`` is clipped to the collection size and ``ef`` raised to ``k``.

    When hnswlib cannot return ``k`` results for a query (its graph search found fewer, which
    happens for large k on small or badly connected graphs) that query is answered by exact
    search over the index's own vectors (``method == 'exact'``); with ``fallback=False`` it is
    returned empty instead. Ties are ordered by row id.
    """
    qs = l2_normalize(queries, "queries")
    if qs.shape[0] and qs.shape[1] != loaded.dim:
        raise ValueError(f"query dimension {qs.shape[1]} != index dimension {loaded.dim}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k_eff = min(k, loaded.n)
    nq = qs.shape[0]
    out_ids: list[np.ndarray] = [np.zeros(0, np.int64)] * nq
    out_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * nq
    method = ["hnsw"] * nq
    if nq == 0:
        return SearchResult(out_ids, out_scores, method, [])

    batch = _hnsw_knn(loaded.index, qs, k_eff, loaded.ef)
    failed: list[int] = []
    if batch is not None:
        for i in range(nq):
            out_ids[i], out_scores[i] = _sorted_by_score_then_id(batch[0][i], batch[1][i])
    else:
        # One query in the batch failing fails them all in hnswlib: retry one by one.
        for i in range(nq):
            single = _hnsw_knn(loaded.index, qs[i : i + 1], k_eff, loaded.ef)
            if single is None:
                failed.append(i)
            else:
                out_ids[i], out_scores[i] = _sorted_by_score_then_id(single[0][0], single[1][0])
    if failed:
        if fallback:
            ids, scores = exact_topk(loaded.vectors(), qs[failed], k_eff)
            for j, i in enumerate(failed):
                out_ids[i], out_scores[i] = ids[j], scores[j]
                method[i] = "exact"
        else:
            for i in failed:
                method[i] = "failed"
    asins = [loaded.labels[ids] for ids in out_ids]
    return SearchResult(out_ids, out_scores, method, asins)


def recall_at_k(
    index: hnswlib.Index | LoadedIndex,
    vectors,
    queries,
    k: int = 10,
    *,
    ids=None,
    tolerance: float = 1e-5,
) -> float:
    """Mean recall@k of the index against exact search over ``vectors`` (labelled ``ids``).

    Tie-aware: a returned item counts as a hit when its true similarity reaches the exact k-th
    best (minus ``tolerance``), so duplicate vectors (shared product images) do not read as
    misses. Without ties this equals the usual |hnsw ∩ exact| / k. The index's current ``ef``
    is used (raised to k if smaller); a query hnswlib cannot answer in full scores 0.
    """
    raw = index.index if isinstance(index, LoadedIndex) else index
    vecs = l2_normalize(vectors, "vectors")
    qs = l2_normalize(queries, "queries")
    n = vecs.shape[0]
    if qs.shape[0] == 0 or n == 0:
        raise ValueError("recall needs at least one query and one vector")
    labels = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    pos = {int(lab): i for i, lab in enumerate(labels)}
    k_eff = min(k, n)
    _, exact_scores = exact_topk(vecs, qs, k_eff)
    kth = exact_scores[:, -1]
    base_ef = int(raw.ef)
    got = _hnsw_knn(raw, qs, k_eff, base_ef)
    per_query = (
        [(got[0][i], i) for i in range(qs.shape[0])]
        if got is not None
        else [
            (single[0][0], i)
            for i in range(qs.shape[0])
            if (single := _hnsw_knn(raw, qs[i : i + 1], k_eff, base_ef)) is not None
        ]
    )
    hits = 0
    for found, i in per_query:
        rows = np.array([pos[int(lab)] for lab in found], dtype=np.int64)
        true_scores = vecs[rows] @ qs[i]
        hits += int((true_scores >= kth[i] - tolerance).sum())
    return hits / (qs.shape[0] * k_eff)
