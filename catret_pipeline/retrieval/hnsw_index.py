"""HNSW indexes (hnswlib) over L2-normalised vectors: build, atomic save, load, search, recall.

Cosine similarity is computed as inner product on unit vectors (``space="ip"``, the default;
``"cosine"`` makes hnswlib normalise instead, with the same scores). Scores returned are
similarities, ``1 - hnswlib distance``, i.e. the cosine in [-1, 1].

hnswlib's file does not hold the space, the dimension or ``ef``; they live in the label map's
Parquet schema metadata (key ``catret.hnsw``), so :func:`load_index` needs only the two paths.

A saved index can be refreshed in place (:func:`plan_index_update`, :func:`apply_index_update`,
:func:`refresh_index`): removed items are marked deleted, changed ones get their vector
replaced, new ones take fresh labels (reusing deleted slots). The label map lists only the live
items, so row ids (= hnswlib labels) need not be 0..n-1 once an index has been updated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hnswlib
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from catret_pipeline.retrieval.exact import exact_topk
from catret_pipeline.storage.atomic import atomic_path, write_parquet_table
from catret_pipeline.storage.hashing import sha256_file
from catret_pipeline.vectors_math import l2_normalize

META_KEY = b"catret.hnsw"
#: 2: row ids may have gaps and the binary may hold deleted (tombstoned) elements.
FORMAT_VERSION = 2
#: Formats :func:`load_index` reads (1 is 2 without updates); only the current one is updated.
READABLE_FORMATS = (1, 2)
#: Max abs difference between a stored and a new unit vector still read as "the same vector".
CHANGE_TOLERANCE = 1e-6

Space = Literal["ip", "cosine"]
Action = Literal["built", "updated", "unchanged"]


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


def _hnswlib_version() -> str:
    try:
        return importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _deleted_labels(index: hnswlib.Index, live: np.ndarray) -> np.ndarray:
    """Labels the index holds besides ``live``; raises unless every one is marked deleted."""
    all_ids = np.asarray(index.get_ids_list(), dtype=np.int64)
    others = np.setdiff1d(all_ids, live)
    for label in others.tolist():
        # hnswlib exposes no "is deleted" query: get_items refuses exactly the deleted labels.
        try:
            index.get_items([label])
        except RuntimeError:
            continue
        raise ValueError(f"index label {label} is live but not in labels_df")
    return others


def save_index(
    index: hnswlib.Index,
    path_bin: str | os.PathLike,
    labels_df: pl.DataFrame,
    path_labels: str | os.PathLike,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the index binary and its ``row_id -> asin`` map, each atomically.

    ``labels_df`` lists the live items only; every other label in the index must be marked
    deleted. Both files are written to temporary siblings first and renamed back to back at the
    end (binary first), so a failure before that leaves the previous pair untouched, and a kill
    between the two renames leaves a pair that :func:`load_index` refuses (the label map records
    the binary's size and sha256). ``extra`` (model, setting, seed, ...) is stored in the
    sidecar metadata. Returns it.
    """
    path_bin, path_labels = Path(path_bin), Path(path_labels)
    if set(labels_df.columns) < {"row_id", "asin"}:
        raise ValueError(f"labels_df needs columns row_id, asin; got {labels_df.columns}")
    table = labels_df.select(pl.col("row_id").cast(pl.Int64), pl.col("asin").cast(pl.String)).sort(
        "row_id"
    )
    live = table["row_id"].to_numpy()
    if np.unique(live).size != live.size or table["asin"].n_unique() != table.height:
        raise ValueError("labels_df has a repeated row_id or asin")
    if table["asin"].null_count():
        raise ValueError("labels_df has a null asin")
    all_ids = np.asarray(index.get_ids_list(), dtype=np.int64)
    if not np.isin(live, all_ids).all():
        raise ValueError("labels_df row_id values differ from the index's labels")
    try:
        deleted = _deleted_labels(index, live)
    except ValueError as exc:
        raise ValueError(
            f"labels_df has {table.height} rows but the index holds more live items: {exc}"
        ) from exc

    with contextlib.ExitStack() as stack:
        # Entered labels first so that the binary is renamed first on exit.
        tmp_labels = stack.enter_context(atomic_path(path_labels))
        tmp_bin = stack.enter_context(atomic_path(path_bin))
        # hnswlib writes to a path of its own choosing: give it a temp sibling.
        index.save_index(str(tmp_bin))
        size = tmp_bin.stat().st_size
        digest = sha256_file(tmp_bin)
        meta = {
            "format_version": FORMAT_VERSION,
            "space": index.space,
            "dim": int(index.dim),
            "M": int(index.M),
            "ef_construction": int(index.ef_construction),
            "ef": int(index.ef),
            "n_items": int(table.height),
            "n_deleted": int(deleted.size),
            "index_file": path_bin.name,
            "index_bytes": int(size),
            "index_sha256": digest,
            "hnswlib_version": _hnswlib_version(),
            **dict(extra or {}),
        }
        arrow = table.to_arrow()
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
        )
        write_parquet_table(arrow, tmp_labels)
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
    """An index with its label map; position i <-> ``labels[i]`` (asin) <-> ``row_ids[i]``.

    Positions follow asin order (for a fresh build row id == position). ``row_ids`` are the
    hnswlib labels; they have gaps after an in-place update removed items.
    """

    index: hnswlib.Index
    labels: np.ndarray  # asin per position, sorted
    meta: dict[str, Any]
    row_ids: np.ndarray | None = None  # hnswlib label per position; None: 0..n-1
    _vectors: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.row_ids is None:
            self.row_ids = np.arange(self.labels.shape[0], dtype=np.int64)
        self.row_ids = np.asarray(self.row_ids, dtype=np.int64)
        if self.row_ids.shape != self.labels.shape:
            raise ValueError("row_ids and labels differ in length")
        self._order = np.argsort(self.row_ids, kind="stable")
        self._sorted_ids = self.row_ids[self._order]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def ef(self) -> int:
        return int(self.meta["ef"])

    def positions(self, row_ids) -> np.ndarray:
        """Positions of hnswlib labels; an unknown label means the label map is stale."""
        ids = np.asarray(row_ids, dtype=np.int64)
        at = np.searchsorted(self._sorted_ids, ids)
        at = np.minimum(at, max(self.n - 1, 0))
        if self.n == 0 or not np.array_equal(self._sorted_ids[at], ids):
            raise ValueError("the index returned a label its label map does not list")
        return self._order[at]

    def vectors(self) -> np.ndarray:
        """The stored (unit) vectors in position (asin) order, for exact search over the same
        data; deleted elements are not included."""
        if self._vectors is None:
            self._vectors = np.asarray(
                self.index.get_items(self.row_ids, return_type="numpy"), dtype=np.float32
            ).reshape(self.n, self.dim)
        return self._vectors


def _check_readable(meta: Mapping[str, Any], path_labels: Path) -> None:
    if meta.get("format_version") not in READABLE_FORMATS:
        raise ValueError(f"{path_labels}: unsupported format_version {meta.get('format_version')}")


def load_index(
    path_bin: str | os.PathLike,
    path_labels: str | os.PathLike,
    *,
    ef: int | None = None,
    verify: bool = True,
) -> LoadedIndex:
    """Load an index saved by :func:`save_index`; ``ef`` defaults to the one it was built with.

    ``verify`` checks the binary against the sha256 its label map records before hnswlib reads
    it: a damaged file or one from another save (same size after an update that removed as
    many items as it added) is refused instead of mislabelling results or crashing hnswlib.
    """
    path_bin, path_labels = Path(path_bin), Path(path_labels)
    for p in (path_bin, path_labels):
        if not p.exists():
            raise FileNotFoundError(f"HNSW index file missing: {p}")
    meta = read_index_meta(path_labels)
    _check_readable(meta, path_labels)
    size = path_bin.stat().st_size
    if size != meta["index_bytes"]:
        raise ValueError(
            f"{path_bin} is {size} bytes but its label map records {meta['index_bytes']}: "
            "the two files come from different builds; rebuild the index"
        )
    if verify and "index_sha256" in meta and sha256_file(path_bin) != meta["index_sha256"]:
        raise ValueError(
            f"{path_bin} does not match the sha256 its label map records: the file is damaged "
            "or the two files come from different builds; rebuild the index"
        )
    labels_df = pl.read_parquet(path_labels).sort("asin")
    n = labels_df.height
    row_ids = labels_df["row_id"].cast(pl.Int64).to_numpy()
    if n == 0 or np.unique(row_ids).size != n or (row_ids < 0).any():
        raise ValueError(f"{path_labels}: row_id must be unique non-negative integers")
    if labels_df["asin"].null_count() or labels_df["asin"].n_unique() != n:
        raise ValueError(f"{path_labels}: asin must be unique and not null")
    index = hnswlib.Index(space=meta["space"], dim=int(meta["dim"]))
    # max_elements=0 keeps the capacity stored in the file (it may exceed the live count).
    index.load_index(str(path_bin), max_elements=0, allow_replace_deleted=True)
    n_deleted = int(meta.get("n_deleted", 0))
    if index.element_count != n + n_deleted:
        raise ValueError(
            f"{path_bin} holds {index.element_count} items, labels {n} (+{n_deleted} deleted)"
        )
    if not np.isin(row_ids, np.asarray(index.get_ids_list(), dtype=np.int64)).all():
        raise ValueError(f"{path_labels} lists row ids the index does not hold")
    meta = {**meta, "ef": int(ef if ef is not None else meta["ef"])}
    # ef is not part of hnswlib's file: without this it would silently be 10.
    index.set_ef(meta["ef"])
    return LoadedIndex(index=index, labels=labels_df["asin"].to_numpy(), meta=meta, row_ids=row_ids)


@dataclass
class SearchResult:
    row_ids: list[np.ndarray]  # per query, best first
    scores: list[np.ndarray]  # cosine similarity per result
    method: list[str]  # per query: 'hnsw' or 'exact'
    asins: list[np.ndarray] = dataclasses.field(default_factory=list)


def _sorted_by_score_then_pos(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pos, -scores))
    return pos[order], scores[order]


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
    happens for large k on small or badly connected graphs, or next to deleted elements) that
    query is answered by exact search over the index's own live vectors (``method ==
    'exact'``); with ``fallback=False`` it is returned empty instead. Ties are ordered by asin
    (= row id for a freshly built index), so an updated index ranks like a fresh build.
    """
    qs = l2_normalize(queries, "queries")
    if qs.shape[0] and qs.shape[1] != loaded.dim:
        raise ValueError(f"query dimension {qs.shape[1]} != index dimension {loaded.dim}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k_eff = min(k, loaded.n)
    nq = qs.shape[0]
    out_pos: list[np.ndarray] = [np.zeros(0, np.int64)] * nq
    out_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * nq
    method = ["hnsw"] * nq
    if nq == 0:
        return SearchResult(out_pos, out_scores, method, [])

    batch = _hnsw_knn(loaded.index, qs, k_eff, loaded.ef)
    failed: list[int] = []
    if batch is not None:
        for i in range(nq):
            out_pos[i], out_scores[i] = _sorted_by_score_then_pos(
                loaded.positions(batch[0][i]), batch[1][i]
            )
    else:
        # One query in the batch failing fails them all in hnswlib: retry one by one.
        for i in range(nq):
            single = _hnsw_knn(loaded.index, qs[i : i + 1], k_eff, loaded.ef)
            if single is None:
                failed.append(i)
            else:
                out_pos[i], out_scores[i] = _sorted_by_score_then_pos(
                    loaded.positions(single[0][0]), single[1][0]
                )
    if failed:
        if fallback:
            pos, scores = exact_topk(loaded.vectors(), qs[failed], k_eff)
            for j, i in enumerate(failed):
                out_pos[i], out_scores[i] = pos[j], scores[j]
                method[i] = "exact"
        else:
            for i in failed:
                method[i] = "failed"
    row_ids = [loaded.row_ids[p] for p in out_pos]
    asins = [loaded.labels[p] for p in out_pos]
    return SearchResult(row_ids, out_scores, method, asins)


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
    ``ids`` default to a :class:`LoadedIndex`'s ``row_ids`` (``vectors`` in its position
    order, as :meth:`LoadedIndex.vectors` returns them), else to 0..n-1.
    """
    raw = index.index if isinstance(index, LoadedIndex) else index
    if ids is None and isinstance(index, LoadedIndex):
        ids = index.row_ids
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


# ---------------------------------------------------------------------------------------------
# In-place refresh of a saved index


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


@dataclass(frozen=True)
class RecallTarget:
    """Raise the search ``ef`` of a built or updated index until it meets ``bound``.

    Why: the right ef depends on the data, not only on its size. On vectors whose similarities
    to a query are all close (the pooled features of an image-only tower, scored against a text
    tower it was never aligned with) ef=100 gave recall@10 0.94 on 7k items, where text vectors
    reach 0.99 at ef 40. ``queries`` should not be the sample the recall check uses, so that the
    check stays an independent measurement.
    """

    queries: np.ndarray
    bound: float
    k: int = 10
    ef_max: int = 1000


def tune_ef(index: hnswlib.Index, vectors, ids, target: RecallTarget) -> tuple[int, float]:
    """Double the index's ef (from its current one, up to ``target.ef_max``) until recall@k on
    ``target.queries`` reaches the bound; leaves the index at that ef. Returns (ef, recall)."""
    ef = int(index.ef)
    recall = recall_at_k(index, vectors, target.queries, target.k, ids=ids)
    while recall < target.bound and ef < target.ef_max:
        ef = min(2 * ef, target.ef_max)
        index.set_ef(ef)
        recall = recall_at_k(index, vectors, target.queries, target.k, ids=ids)
    return ef, recall


@dataclass(frozen=True)
class UpdatePolicy:
    """When a saved index is updated in place and when it is rebuilt (docs/retrieval.md).

    ``rebuild_fraction``: rebuild when added + removed + changed items exceed this share of the
    previous live count (a retrained model moves every vector; a mostly rewritten graph is
    better built afresh). ``max_deleted_fraction``: rebuild when deleted slots left after the
    update would exceed this share of the graph's slots (tombstones are still traversed by
    every search). ``tolerance``: max abs difference under which a unit vector is unchanged.
    """

    rebuild_fraction: float = 0.5
    max_deleted_fraction: float = 0.25
    tolerance: float = CHANGE_TOLERANCE
    force_rebuild: bool = False

    def __post_init__(self) -> None:
        if self.rebuild_fraction < 0 or not 0 <= self.max_deleted_fraction <= 1:
            raise ValueError(
                "need rebuild_fraction >= 0 and 0 <= max_deleted_fraction <= 1; got "
                f"{self.rebuild_fraction}, {self.max_deleted_fraction}"
            )
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")


@dataclass
class IndexPlan:
    """What :func:`apply_index_update` will do: ``built`` (from scratch), ``updated`` (in place)
    or ``unchanged`` (files kept as they are). Asin lists are sorted."""

    action: Action
    reason: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    n_unchanged: int = 0
    #: The previous index loaded from disk (``updated`` / ``unchanged``); updated in place.
    previous: LoadedIndex | None = field(default=None, repr=False)

    @property
    def n_delta(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


def _new_items(asins: Sequence[str], vectors) -> tuple[list[str], np.ndarray]:
    """Asins and unit vectors sorted by asin; refuses repeats and length mismatches."""
    keys = [str(a) for a in asins]
    vecs = l2_normalize(vectors, "vectors")
    if len(keys) != vecs.shape[0]:
        raise ValueError(f"{len(keys)} asins but {vecs.shape[0]} vectors")
    if not keys:
        raise ValueError("cannot index zero items")
    if len(set(keys)) != len(keys):
        raise ValueError("asins must be unique")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[i] for i in order], vecs[order]


def _param_changes(meta: Mapping[str, Any], params: HnswParams, dim: int) -> list[str]:
    wanted = {
        "space": params.space,
        "dim": dim,
        "M": params.M,
        "ef_construction": params.ef_construction,
        "seed": params.seed,
    }
    return [f"{k} {meta.get(k)!r} -> {v!r}" for k, v in wanted.items() if meta.get(k) != v]


def plan_index_update(
    path_bin: str | os.PathLike,
    path_labels: str | os.PathLike,
    asins: Sequence[str],
    vectors,
    params: HnswParams | None = None,
    policy: UpdatePolicy | None = None,
) -> IndexPlan:
    """Compare the saved index (loaded back from disk, as a user would) with the new items.

    Rebuild when there is no readable previous index (missing, damaged, older format), the
    graph parameters or the dimension differ, too much changed (``policy.rebuild_fraction``),
    too many deleted slots would remain (``policy.max_deleted_fraction``) or on
    ``policy.force_rebuild``; otherwise update in place, or keep the files when nothing changed.
    """
    params = params or HnswParams()
    policy = policy or UpdatePolicy()
    keys, vecs = _new_items(asins, vectors)
    path_bin, path_labels = Path(path_bin), Path(path_labels)
    if policy.force_rebuild:
        return IndexPlan("built", "forced (force_rebuild)", added=keys)
    missing = [p.name for p in (path_bin, path_labels) if not p.exists()]
    if len(missing) == 2:
        return IndexPlan("built", "no previous index", added=keys)
    if missing:
        return IndexPlan("built", f"previous index incomplete: {missing[0]} missing", added=keys)
    try:
        meta = read_index_meta(path_labels)
    except Exception as exc:  # unreadable Parquet, foreign file: anything means "rebuild"
        return IndexPlan("built", f"previous label map unreadable: {exc}", added=keys)
    if meta.get("format_version") != FORMAT_VERSION:
        return IndexPlan(
            "built",
            f"previous index has format {meta.get('format_version')}, current {FORMAT_VERSION}",
            added=keys,
        )
    changes = _param_changes(meta, params, int(vecs.shape[1]))
    if changes:
        return IndexPlan("built", "parameters changed: " + ", ".join(changes), added=keys)
    try:
        prev = load_index(path_bin, path_labels, verify=True)
        old_vecs = prev.vectors()
    except Exception as exc:  # a damaged previous index is a reason to rebuild, not to fail
        return IndexPlan("built", f"previous index unreadable: {exc}", added=keys)

    old_pos = {a: i for i, a in enumerate(prev.labels.tolist())}
    new_pos = {a: i for i, a in enumerate(keys)}
    added = [a for a in keys if a not in old_pos]
    removed = sorted(a for a in old_pos if a not in new_pos)
    common = [a for a in keys if a in old_pos]
    changed: list[str] = []
    if common:
        a_rows = np.array([new_pos[a] for a in common])
        b_rows = np.array([old_pos[a] for a in common])
        diff = np.abs(vecs[a_rows] - old_vecs[b_rows]).max(axis=1)
        changed = [a for a, d in zip(common, diff, strict=True) if d > policy.tolerance]
    plan = IndexPlan(
        "updated",
        "",
        added=added,
        removed=removed,
        changed=changed,
        n_unchanged=len(common) - len(changed),
        previous=prev,
    )
    share = plan.n_delta / prev.n
    if share > policy.rebuild_fraction:
        return dataclasses.replace(
            plan,
            action="built",
            reason=f"{plan.n_delta} of {prev.n} items differ ({share:.0%} > rebuild_fraction "
            f"{policy.rebuild_fraction:.0%})",
            previous=None,
        )
    deleted_before = int(prev.meta.get("n_deleted", 0))
    free = deleted_before + len(removed)
    deleted_after = max(0, free - len(added))
    slots_after = prev.n + deleted_before + max(0, len(added) - free)
    if deleted_after / slots_after > policy.max_deleted_fraction:
        return dataclasses.replace(
            plan,
            action="built",
            reason=f"{deleted_after} of {slots_after} slots would be deleted "
            f"(> max_deleted_fraction {policy.max_deleted_fraction:.0%})",
            previous=None,
        )
    if plan.n_delta:
        plan.reason = f"{len(added)} added, {len(removed)} removed, {len(changed)} changed"
    elif int(prev.meta.get("ef_requested", prev.ef)) != params.ef:
        plan.reason = (
            f"ef {prev.meta.get('ef_requested', prev.ef)} -> {params.ef} (no item changed)"
        )
    else:
        plan.action, plan.reason = "unchanged", "no change"
    return plan


def apply_index_update(
    plan: IndexPlan,
    asins: Sequence[str],
    vectors,
    params: HnswParams | None = None,
    threads: int = 1,
) -> tuple[hnswlib.Index, pl.DataFrame]:
    """The index and live label map ``(row_id, asin)`` the plan leads to (nothing is saved).

    ``built``: a fresh index, row ids = asin order. ``updated``: ``plan.previous`` in place -
    removed items are marked deleted; a changed item keeps its label and gets its vector
    replaced by ``add_items`` on that label (hnswlib re-links it where it now lies; no
    tombstone, no label churn); added items get fresh labels above every label the index holds
    (live or deleted) and are inserted with ``replace_deleted=True``, so they reuse deleted
    slots before the index grows. ``unchanged``: the previous index as loaded.
    """
    params = params or HnswParams()
    keys, vecs = _new_items(asins, vectors)
    if plan.action == "built":
        index = build_index(vecs, None, params, threads=threads)
        return index, pl.DataFrame({"row_id": np.arange(len(keys), dtype=np.int64), "asin": keys})
    prev = plan.previous
    if prev is None:
        raise ValueError(f"an {plan.action!r} plan needs the previous index")
    index = prev.index
    label_of = dict(zip(prev.labels.tolist(), prev.row_ids.tolist(), strict=True))
    new_pos = {a: i for i, a in enumerate(keys)}
    n_threads = max(1, threads)
    for asin in plan.removed:
        index.mark_deleted(label_of.pop(asin))
    if plan.changed:
        # The label exists and is live: hnswlib updates the element in place.
        index.add_items(
            vecs[[new_pos[a] for a in plan.changed]],
            np.array([label_of[a] for a in plan.changed], dtype=np.int64),
            num_threads=n_threads,
        )
    if plan.added:
        all_ids = np.asarray(index.get_ids_list(), dtype=np.int64)
        free = index.element_count - len(label_of)  # deleted slots, reused first
        grow = len(plan.added) - free
        if grow > 0 and index.element_count + grow > index.max_elements:
            index.resize_index(index.element_count + grow)
        first = int(all_ids.max()) + 1 if all_ids.size else 0
        fresh = np.arange(first, first + len(plan.added), dtype=np.int64)
        index.add_items(
            vecs[[new_pos[a] for a in plan.added]],
            fresh,
            num_threads=n_threads,
            replace_deleted=True,
        )
        label_of.update(zip(plan.added, fresh.tolist(), strict=True))
    index.set_ef(params.ef)
    if set(label_of) != set(keys):
        raise ValueError("the plan does not lead to the new item set; plan it again")
    labels = pl.DataFrame(
        {"row_id": [label_of[a] for a in keys], "asin": keys},
        schema={"row_id": pl.Int64, "asin": pl.String},
    )
    return index, labels


@dataclass
class IndexRefresh:
    """Outcome of :func:`refresh_index`: what was done and the index now on disk, in memory."""

    action: Action
    reason: str
    n_added: int
    n_removed: int
    n_changed: int
    loaded: LoadedIndex
    meta: dict[str, Any]
    seconds: float


def refresh_index(
    path_bin: str | os.PathLike,
    path_labels: str | os.PathLike,
    asins: Sequence[str],
    vectors,
    params: HnswParams | None = None,
    policy: UpdatePolicy | None = None,
    *,
    threads: int = 1,
    extra: Mapping[str, Any] | None = None,
    recall: RecallTarget | None = None,
) -> IndexRefresh:
    """Bring the index at the two paths to ``(asins, vectors)``: build, update or keep it.

    The result is saved through :func:`save_index` (temp files + renames; the previous pair is
    never modified in place), except when nothing changed: then no file is written at all.
    ``extra`` goes into the label map metadata, with ``seed`` and ``updates_since_build``.
    With ``recall``, a built or updated index gets the ef :func:`tune_ef` finds (at least
    ``params.ef``) before it is saved; the sidecar keeps both (``ef``, ``ef_requested``).
    """
    params = params or HnswParams()
    started = time.perf_counter()
    plan = plan_index_update(path_bin, path_labels, asins, vectors, params, policy)
    counts = (len(plan.added), len(plan.removed), len(plan.changed))
    if plan.action == "unchanged" and recall is not None and len(recall.queries):
        prev = plan.previous
        keys, vecs = _new_items(asins, vectors)
        row_of = dict(zip(prev.labels.tolist(), prev.row_ids.tolist(), strict=True))
        ids = np.array([row_of[a] for a in keys], dtype=np.int64)
        if recall_at_k(prev.index, vecs, recall.queries, recall.k, ids=ids) < recall.bound:
            # Saved before ef was tuned (or the bound was raised): same items, new ef.
            plan.action, plan.reason = "updated", f"ef {prev.ef} below recall_bound"
    if plan.action == "unchanged":
        prev = plan.previous
        assert prev is not None
        return IndexRefresh(
            plan.action, plan.reason, *counts, prev, prev.meta, time.perf_counter() - started
        )
    updates = (
        0 if plan.action == "built" else int(plan.previous.meta.get("updates_since_build", 0)) + 1
    )
    index, labels = apply_index_update(plan, asins, vectors, params, threads=threads)
    if recall is not None and len(recall.queries):
        row_of = dict(zip(labels["asin"].to_list(), labels["row_id"].to_list(), strict=True))
        keys, vecs = _new_items(asins, vectors)
        tune_ef(index, vecs, np.array([row_of[a] for a in keys], dtype=np.int64), recall)
    meta = save_index(
        index,
        path_bin,
        labels,
        path_labels,
        extra={
            **dict(extra or {}),
            "seed": params.seed,
            "updates_since_build": updates,
            "ef_requested": params.ef,
        },
    )
    labels = labels.sort("asin")
    loaded = LoadedIndex(
        index=index,
        labels=labels["asin"].to_numpy(),
        meta=meta,
        row_ids=labels["row_id"].to_numpy(),
    )
    return IndexRefresh(
        plan.action, plan.reason, *counts, loaded, meta, time.perf_counter() - started
    )
