"""Content-addressed image cache: ``<data_dir>/image_cache/<sha256[:2]>/<sha256>.<ext>``.

File names come only from the SHA-256 of the bytes and the extension of the *decoded* format,
never from a URL or a server-supplied name, so a hostile URL cannot steer a write anywhere.
Identical images behind different URLs (or different sizes of a product listing pointing at
one file) are stored once.

The URL -> sha256 index is the previous ``product_images`` table: an ``ok`` row whose URL is
unchanged and whose cache file still exists with the recorded size is reused after one
``stat``, with no download and no decode.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import polars as pl

from catret_pipeline.images.fetch import ALLOWED_FORMATS
from catret_pipeline.storage.artefacts import ArtefactPath, relative_key
from catret_pipeline.storage.atomic import atomic_write_bytes

CACHE_DIR = "image_cache"
CACHE_EXTENSIONS = frozenset(ALLOWED_FORMATS.values())

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_REL_RE = re.compile(rf"^{CACHE_DIR}/([0-9a-f]{{2}})/([0-9a-f]{{64}})\.([a-z0-9]+)$")

#: Columns of the ``product_images`` table, in order (docs/architecture.md).
PRODUCT_IMAGES_SCHEMA: dict[str, pl.DataType] = {
    "asin": pl.String,
    "image_url": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "cache_path": pl.String,
    "sha256": pl.String,
    "bytes": pl.Int64,
    "width": pl.Int64,
    "height": pl.Int64,
}


def _check_key(sha256: str, ext: str) -> None:
    if not isinstance(sha256, str) or not _SHA_RE.match(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    if ext not in CACHE_EXTENSIONS:
        raise ValueError(f"extension {ext!r} not one of {sorted(CACHE_EXTENSIONS)}")


def relative_cache_path(sha256: str, ext: str) -> str:
    """The path stored in ``cache_path``: POSIX, relative to the data directory."""
    _check_key(sha256, ext)
    return f"{CACHE_DIR}/{sha256[:2]}/{sha256}.{ext}"


def parse_cache_path(rel: object) -> tuple[str, str] | None:
    """(sha256, ext) when ``rel`` is exactly a cache path this module would write, else None."""
    if not isinstance(rel, str):
        return None
    m = _REL_RE.match(rel)
    if m is None or m.group(1) != m.group(2)[:2] or m.group(3) not in CACHE_EXTENSIONS:
        return None
    return m.group(2), m.group(3)


@dataclass(frozen=True)
class ImageCache:
    """The cache under one artefact root (``CatretStorage.artefact_root``: the data dir, or
    the artefact store's URL)."""

    data_dir: ArtefactPath

    @classmethod
    def from_storage(cls, storage) -> ImageCache:
        # storage.path() refuses anything escaping the artefact root; resolve once here.
        storage.path(CACHE_DIR)
        return cls(storage.artefact_root)

    @property
    def root(self) -> ArtefactPath:
        return self.data_dir / CACHE_DIR

    def path(self, sha256: str, ext: str) -> ArtefactPath:
        return self.data_dir / relative_cache_path(sha256, ext)

    def put(self, data: bytes, ext: str) -> tuple[str, str, bool]:
        """Store ``data``; return (sha256, relative path, whether a file was written).

        An existing file of the right size is trusted (same name = same content), so a re-run
        or a second URL for the same image writes nothing.
        """
        sha = hashlib.sha256(data).hexdigest()
        rel = relative_cache_path(sha, ext)
        target = self.data_dir / rel
        try:
            if target.stat().st_size == len(data):
                return sha, rel, False
        except FileNotFoundError:
            pass
        atomic_write_bytes(target, data)
        return sha, rel, True

    def has(self, rel: str, size: int | None = None) -> bool:
        """Whether ``rel`` is a well-formed cache path whose file exists (with ``size`` bytes)."""
        if parse_cache_path(rel) is None:
            return False
        try:
            st = (self.data_dir / rel).stat()
        except OSError:
            return False
        return size is None or st.st_size == size

    def files(self) -> list[ArtefactPath]:
        """Every cached image file (temp files excluded)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.glob("??/*")
            if p.is_file() and parse_cache_path(self.rel(p)) is not None
        )

    def rel(self, path: ArtefactPath) -> str:
        return relative_key(self.data_dir, path)

    def prune(self, keep: set[str], dry_run: bool = False) -> tuple[int, int]:
        """Delete cached images whose relative path is not in ``keep``; (files, bytes) removed.

        Only files named like this cache's own (``??/<sha256>.<ext>``) are candidates, so
        anything else a user put under the directory is never touched.
        """
        files = removed_bytes = 0
        for path in self.files():
            if self.rel(path) in keep:
                continue
            try:
                size = path.stat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            files += 1
            removed_bytes += size
        return files, removed_bytes


def previous_index(
    previous: pl.DataFrame | None, cache: ImageCache, *, include_failed: bool = False
) -> tuple[dict[str, dict], list[str]]:
    """URL -> previous row usable as-is, plus notes on why the previous table was ignored.

    ``ok`` rows are usable when their ``cache_path`` is a well-formed cache path matching their
    ``sha256`` and the file exists with the recorded size (one ``stat``). ``failed`` rows are
    usable only with ``include_failed`` (the caller chose not to retry failures). A previous
    table with a different schema (an older version) is ignored as a whole, never half-trusted.
    """
    notes: list[str] = []
    if previous is None or previous.height == 0:
        return {}, notes
    missing = [c for c in PRODUCT_IMAGES_SCHEMA if c not in previous.columns]
    if missing:
        notes.append(f"previous product_images lacks columns {missing}; not reused")
        return {}, notes
    index: dict[str, dict] = {}
    stale: set[str] = set()
    for row in previous.select(list(PRODUCT_IMAGES_SCHEMA)).iter_rows(named=True):
        url = row["image_url"]
        if not isinstance(url, str) or not url or url in index:
            continue
        if row["status"] == "ok":
            key = parse_cache_path(row["cache_path"])
            if (
                key is None
                or key[0] != row["sha256"]
                or not cache.has(row["cache_path"], row["bytes"])
            ):
                stale.add(url)
                continue
            index[url] = row
        elif row["status"] == "failed" and include_failed:
            index[url] = row
    stale -= index.keys()
    if stale:
        notes.append(f"{len(stale)} previous ok URLs not reused (cache file missing or changed)")
    return index, notes
