"""The read-only store: the current :class:`Snapshot`, its search, and hot reload.

``Store.snapshot`` is one reference; a reload loads a whole new snapshot beside the old one
and then rebinds it, so a request holds one consistent snapshot from start to end (it must take
``store.snapshot`` once and pass it on, which :meth:`Store.search` does).

When to reload: the watcher polls the stamps of the tables the snapshot reads (at most every
``interval`` s). A change is loaded once no ``catret materialize`` holds the data dir's build
lock and the stamps have stayed the same for ``settle`` s, so a build half-way through its
tables is not served as a mix of old and new; a failed load keeps the old snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from catret_pipeline.config import CatretConfig
from catret_pipeline.search import Hit, SearchResults
from catret_pipeline.serving import tables
from catret_pipeline.serving.query import QueryError, clean_name, parse_k
from catret_pipeline.serving.snapshot import SettingView, Snapshot, load_snapshot
from catret_pipeline.storage.locks import BUILD_LOCK

log = logging.getLogger("catret.serving")

DEFAULT_SETTING = "all"
#: Seconds before a data dir whose load failed is tried again (unless it changes first).
RETRY_AFTER_S = 30.0


def build_running(data_dir: Path) -> bool:
    """True while a ``catret materialize`` holds the build lock of ``data_dir``.

    Probed with a shared non-blocking flock, released at once; the lock file is only opened
    for reading and never created.
    """
    try:
        fd = os.open(data_dir / BUILD_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def view_of(snap: Snapshot, setting: str | None) -> SettingView:
    setting = setting or (DEFAULT_SETTING if DEFAULT_SETTING in snap.settings else None)
    setting = setting or next(iter(snap.settings))
    view = snap.settings.get(setting)
    if view is None:
        served = ", ".join(snap.settings)
        why = snap.errors.get(setting)
        raise QueryError(
            f"unknown setting {setting[:40]!r}; served: {served}" + (f" ({why})" if why else "")
        )
    return view


def query_vector(view: SettingView, name: str) -> tuple[np.ndarray, str]:
    vec = view.model.queries.get(name)
    if vec is not None:
        return vec, "precomputed"
    if view.model.encode is None:
        raise QueryError(
            f"{name!r} is not a category of the tree and cannot be encoded: "
            f"{view.model.encode_unavailable}",
            status=422,
        )
    return view.model.encode(name), "encoded"


def _hits(snap: Snapshot, ranked) -> list[Hit]:
    hits = []
    for rank, (asin, score) in enumerate(ranked, start=1):
        p = snap.products.get(asin)
        hits.append(
            Hit(
                rank=rank,
                asin=asin,
                score=float(score),
                title=p.title if p else None,
                category_path=list(p.category_path) if p else [],
                image_path=p.image_path if p else None,
            )
        )
    return hits


def category_page(snap: Snapshot, node, k: int, setting: str | None = None) -> SearchResults:
    """A node's page: its stored ``category_rankings`` rows when fresh and deep enough, else a
    search for its name (the same ranking, computed now)."""
    view = view_of(snap, setting)
    stored = view.pages.get(node.node_id)
    if stored is None or len(stored) < min(k, view.index.n):
        return search(snap, node.name, k, view.choice.setting)
    res = SearchResults(
        node.name,
        view.model.model,
        view.choice.setting,
        _hits(snap, stored[:k]),
        "category_rankings",
        [],
    )
    return res


def search(snap: Snapshot, query: str, k=None, setting: str | None = None) -> SearchResults:
    """Top-``k`` products of the whole catalogue for a category name, in one snapshot."""
    name = clean_name(query)
    k = parse_k(k)
    view = view_of(snap, setting)
    vec, source = query_vector(view, name)
    asins, scores = view.index.search(np.asarray(vec, dtype=np.float32), k)
    hits = _hits(snap, zip(asins, scores, strict=True))
    notes = [] if np.any(vec) else ["the query vector is all zeros: every score is 0"]
    return SearchResults(name, view.model.model, view.choice.setting, hits, source, notes)


class Store:
    """The current snapshot of one data dir, reloaded in the background when it changes."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        interval: float = 1.0,
        settle: float = 2.0,
        override: str | None = None,
        config: CatretConfig | None = None,
    ) -> None:
        """``config`` (default: read from the environment, as ``catret serve`` does) chooses
        the encoders, the table store, the product index and the serving model (``override``
        first); its data dir is replaced by ``data_dir``."""
        self.data_dir = Path(data_dir).resolve()
        base = CatretConfig.from_env() if config is None else config
        self.config = base.with_data_dir(self.data_dir)
        self.interval = interval
        self.settle = settle
        self.override = override if override is not None else self.config.serve_model
        self._snapshot = load_snapshot(self.config, self.override)
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._pending: tuple | None = None
        self._pending_since = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def search(self, query: str, k=None, setting: str | None = None) -> SearchResults:
        return search(self._snapshot, query, k, setting)

    def warm(self) -> None:
        """Load the query encoders now, so the first new name is not the one that pays."""
        for view in self._snapshot.settings.values():
            if view.model.encode is not None:
                with contextlib.suppress(Exception):  # a broken encoder shows on first use
                    view.model.encode("warm up")

    def check(self, now: float | None = None) -> bool:
        """One watcher step; True when a new snapshot was swapped in."""
        with self._lock:
            now = time.monotonic() if now is None else now
            sig = tables.signature(self.data_dir, table_store=self.config.table_store)
            if sig == self._snapshot.signature:
                self._pending = None
                return False
            if sig != self._pending:
                self._pending, self._pending_since = sig, now
                if self.settle > 0:
                    return False
            if now - self._pending_since < self.settle or build_running(self.data_dir):
                return False
            return self.reload()

    def reload(self) -> bool:
        try:
            snap = load_snapshot(self.config, self.override)
        except Exception as exc:  # keep serving the old snapshot; retried on the next change
            self.last_reload_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "reload of %s failed, still serving the old snapshot: %s", self.data_dir, exc
            )
            # A broken build stays broken until rewritten: back off instead of reloading hot.
            self._pending_since = time.monotonic() + RETRY_AFTER_S
            return False
        self._snapshot = snap  # the swap: one reference assignment
        self.reloads += 1
        self.last_reload_error = None
        self._pending = None
        log.info("reloaded %s (snapshot %s)", self.data_dir, snap.version)
        return True

    def start_watching(self) -> None:
        if self._thread is not None or self.interval <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="catret-reload", daemon=True)
        self._thread.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the watcher must outlive any one bad poll
                log.warning("reload check failed: %s", exc)
