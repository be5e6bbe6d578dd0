"""Refreshing a saved HNSW index in place: plan (build, update or keep), apply, save.

Removed items are marked deleted, changed ones get their vector replaced, new ones take fresh
labels (reusing deleted slots). The policy that decides between an in-place update and a
rebuild is :class:`~catret_pipeline.retrieval.hnsw_params.UpdatePolicy`; the files are written
through :func:`~catret_pipeline.retrieval.hnsw_store.save_index`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hnswlib
import numpy as np
import polars as pl

from catret_pipeline.retrieval.hnsw_build import build_index
from catret_pipeline.retrieval.hnsw_params import Action, HnswParams, UpdatePolicy
from catret_pipeline.retrieval.hnsw_search import (
    RecallTarget,
    per_query_recall,
    recall_lower_bound,
    tune_ef,
)
from catret_pipeline.retrieval.hnsw_store import (
    FORMAT_VERSION,
    LoadedIndex,
    load_index,
    read_index_meta,
    save_index,
)
from catret_pipeline.storage.artefacts import as_artefact_path
from catret_pipeline.vectors_math import l2_normalize


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
    path_bin, path_labels = as_artefact_path(path_bin), as_artefact_path(path_labels)
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
        got = per_query_recall(prev.index, vecs, recall.queries, recall.k, ids=ids)
        if recall_lower_bound(got, recall.z) < recall.bound:
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
