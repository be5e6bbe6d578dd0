"""Saving and loading an HNSW index with its label map, and the integrity checks between them.

hnswlib's file does not hold the space, the dimension or ``ef``; they live in the label map's
Parquet schema metadata (key ``catret.hnsw``), together with the binary's size and sha256, so
:func:`load_index` needs only the two paths and refuses a pair that does not belong together.
The label map lists only the live items, so row ids (= hnswlib labels) need not be 0..n-1 once
an index has been updated in place (``hnsw_update``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from catret_pipeline.storage.artefacts import as_artefact_path, staged_input
from catret_pipeline.storage.artefacts import is_remote as is_remote_artefact
from catret_pipeline.storage.atomic import atomic_path, write_parquet_table
from catret_pipeline.storage.hashing import sha256_file

META_KEY = b"catret.hnsw"
#: 2: row ids may have gaps and the binary may hold deleted (tombstoned) elements.
FORMAT_VERSION = 2
#: Formats :func:`load_index` reads (1 is 2 without updates); only the current one is updated.
READABLE_FORMATS = (1, 2)


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
    path_bin, path_labels = as_artefact_path(path_bin), as_artefact_path(path_labels)
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
    path_labels = as_artefact_path(path_labels)
    if is_remote_artefact(path_labels):
        with path_labels.open("rb") as fh:
            schema_meta = pq.read_schema(fh).metadata or {}
    else:
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
    path_bin, path_labels = as_artefact_path(path_bin), as_artefact_path(path_labels)
    for p in (path_bin, path_labels):
        if not p.exists():
            raise FileNotFoundError(f"HNSW index file missing: {p}")
    if is_remote_artefact(path_bin) or is_remote_artefact(path_labels):
        # hnswlib reads only local files: both halves are downloaded, then checked as a pair.
        with staged_input(path_bin) as local_bin, staged_input(path_labels) as local_labels:
            return load_index(local_bin, local_labels, ef=ef, verify=verify)
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
