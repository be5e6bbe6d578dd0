"""``product_images``: one row per product saying whether its image is in the cache, and why not."""

# No `from __future__ import annotations`: Dagster resolves the Config parameter from the real
# annotation object, and a postponed string annotation is not resolved.
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import dagster as dg
import polars as pl
from pydantic import Field

from catret_pipeline.images.cache import (
    PRODUCT_IMAGES_SCHEMA,
    ImageCache,
    previous_index,
)
from catret_pipeline.images.fetch import FetchResult, normalise_url
from catret_pipeline.images.resources import ImageFetcher
from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.tables import DamagedTable


class ProductImagesConfig(dg.Config):
    reuse_previous: bool = Field(
        default=True,
        description="Reuse ok rows of the last materialisation whose URL is unchanged and whose "
        "cache file still exists (one stat each). False re-acquires and re-validates everything.",
    )
    retry_failed: bool = Field(
        default=True,
        description="Try again URLs that failed last time. False keeps their failed rows as-is "
        "(saves time on catalogues with many dead links).",
    )
    progress_every_s: float = Field(
        default=15.0, description="Seconds between progress log lines while fetching."
    )
    prune_unreferenced: bool = Field(
        default=True,
        description="Delete cached images that neither this table nor the previous one refers "
        "to (images of products removed at least one refresh ago), so a daily-changing "
        "catalogue does not grow the cache for ever.",
    )


@dataclass
class AcquireStats:
    products: int = 0
    distinct_urls: int = 0
    reused: int = 0
    kept_failed: int = 0
    fetched: int = 0
    from_mirror: int = 0
    downloaded: int = 0
    network_bytes: int = 0
    bytes_written: int = 0
    files_written: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """URLs acquired (fetched, not reused) per second of this run."""
        return self.fetched / self.seconds if self.seconds > 0 else 0.0


def _row(asin: str, url: str | None, result: FetchResult | dict) -> dict:
    if isinstance(result, dict):  # a reused previous row
        return {**result, "asin": asin, "image_url": url}
    return {
        "asin": asin,
        "image_url": url,
        "status": result.status,
        "reason": result.reason_text,
        "cache_path": result.cache_path,
        "sha256": result.sha256 if result.status == "ok" else None,
        "bytes": result.bytes if result.status == "ok" else None,
        "width": result.width if result.status == "ok" else None,
        "height": result.height if result.status == "ok" else None,
    }


def acquire_product_images(
    products: pl.DataFrame,
    previous: pl.DataFrame | None,
    fetcher: ImageFetcher,
    cache: ImageCache,
    *,
    reuse_previous: bool = True,
    retry_failed: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
    progress_every_s: float = 15.0,
) -> tuple[pl.DataFrame, AcquireStats]:
    """Build the ``product_images`` table for ``products`` (columns ``asin``, ``image_url``).

    Each distinct URL is acquired once, however many products share it; products keep their
    input order and count.
    """
    started = time.monotonic()
    stats = AcquireStats(products=products.height)
    asins = products.get_column("asin").to_list()
    urls = [normalise_url(u) for u in products.get_column("image_url").to_list()]
    distinct = list(dict.fromkeys(u for u in urls if u is not None))
    stats.distinct_urls = len(distinct)

    known: dict[str, dict | FetchResult] = {}
    if reuse_previous:
        index, notes = previous_index(previous, cache, include_failed=not retry_failed)
        stats.notes.extend(notes)
        for url in distinct:
            row = index.get(url)
            if row is not None:
                known[url] = {
                    c: row[c] for c in PRODUCT_IMAGES_SCHEMA if c not in ("asin", "image_url")
                }
                if row["status"] == "ok":
                    stats.reused += 1
                else:
                    stats.kept_failed += 1
    todo = [u for u in distinct if u not in known]
    log(
        f"product_images: {stats.products} products, {len(distinct)} distinct URLs, "
        f"{stats.reused} reused from the cache, {stats.kept_failed} failures kept, {len(todo)} to fetch"
    )

    written = Counter()
    written_lock = threading.Lock()

    def store(result: FetchResult) -> FetchResult:
        # Runs in the worker thread: the bytes go to disk and are dropped right away.
        if result.status != "ok" or result.data is None:
            return replace(result, data=None)
        _sha, rel, wrote = cache.put(result.data, result.ext)
        if wrote:
            with written_lock:
                written["files"] += 1
                written["bytes"] += len(result.data)
        return replace(result, data=None, cache_path=rel)

    counts: Counter = Counter()
    last_log = time.monotonic()
    for i, result in enumerate(fetcher.fetch_many(todo, process=store), start=1):
        known[result.url] = result
        counts[result.status] += 1
        stats.network_bytes += result.network_bytes
        if result.status == "ok":
            if result.source == "mirror":
                stats.from_mirror += 1
            else:
                stats.downloaded += 1
        now = time.monotonic()
        if now - last_log >= progress_every_s or i == len(todo):
            elapsed = now - started
            log(
                f"product_images: fetched {i}/{len(todo)} ({counts['ok']} ok, {counts['failed']} failed, "
                f"{counts['refused']} refused), "
                f"{stats.network_bytes / 1e6:.1f} MB downloaded, {i / max(elapsed, 1e-9):.1f} URLs/s"
            )
            last_log = now
    stats.fetched = len(todo)
    stats.files_written = written["files"]
    stats.bytes_written = written["bytes"]

    rows = []
    for asin, url in zip(asins, urls, strict=True):
        if url is None:
            rows.append(_row(asin, None, FetchResult(url=None, status="missing", reason="no_url")))
        else:
            rows.append(_row(asin, url, known[url]))
    table = (
        pl.DataFrame(rows, schema=PRODUCT_IMAGES_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=PRODUCT_IMAGES_SCHEMA)
    )
    stats.seconds = time.monotonic() - started
    return table, stats


def reason_code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0]


def _summary_metadata(table: pl.DataFrame, stats: AcquireStats, cache: ImageCache) -> dict:
    status_counts = dict(Counter(table.get_column("status").to_list()))
    reasons = Counter(reason_code(r) for r in table.get_column("reason").to_list() if r is not None)
    reason_md = markdown_table(["reason", "products"], reasons.most_common())
    n = max(table.height, 1)
    meta = {
        "n_ok": dg.MetadataValue.int(status_counts.get("ok", 0)),
        "n_missing": dg.MetadataValue.int(status_counts.get("missing", 0)),
        "n_failed": dg.MetadataValue.int(status_counts.get("failed", 0)),
        # Not fetched on principle (unsafe scheme, non-public address): see docs/operations.md.
        "n_refused": dg.MetadataValue.int(status_counts.get("refused", 0)),
        "ok_fraction": dg.MetadataValue.float(status_counts.get("ok", 0) / n),
        "reasons": dg.MetadataValue.md(reason_md if reasons else "no failures or missing images"),
        "reason_counts": dg.MetadataValue.json(dict(reasons)),
        "distinct_urls": dg.MetadataValue.int(stats.distinct_urls),
        "reused": dg.MetadataValue.int(stats.reused),
        "kept_failed": dg.MetadataValue.int(stats.kept_failed),
        "fetched": dg.MetadataValue.int(stats.fetched),
        "from_mirror": dg.MetadataValue.int(stats.from_mirror),
        "downloaded": dg.MetadataValue.int(stats.downloaded),
        "bytes_downloaded": dg.MetadataValue.int(stats.network_bytes),
        "bytes_written_to_cache": dg.MetadataValue.int(stats.bytes_written),
        "files_written_to_cache": dg.MetadataValue.int(stats.files_written),
        "fetch_rate_per_s": dg.MetadataValue.float(round(stats.rate, 3)),
        "seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
        "cache_dir": dg.MetadataValue.path(str(cache.root)),
    }
    if stats.notes:
        meta["notes"] = dg.MetadataValue.text("; ".join(stats.notes))
    return meta


@dg.asset(
    group_name="images",
    kinds={"python", "parquet"},
    description="One row per product: image status (ok / missing / refused / failed), reason, and the "
    "content-addressed cache file (image_cache/<sha[:2]>/<sha>.<ext>). Incremental: unchanged "
    "URLs with a cached file are reused without I/O beyond a stat.",
)
def product_images(
    context: dg.AssetExecutionContext,
    config: ProductImagesConfig,
    products: pl.LazyFrame,
    storage: CatretStorage,
    image_fetcher: ImageFetcher,
) -> dg.Output[pl.DataFrame]:
    cache = ImageCache.from_storage(storage)
    wanted = products.select("asin", "image_url").collect()
    previous, damage = None, None
    if config.reuse_previous:
        try:
            previous = storage.read_previous("product_images")
        except DamagedTable as exc:  # re-fetch (the image cache still saves the downloads)
            context.log.warning(f"product_images: previous table not reused: {exc}")
            damage = str(exc)
    table, stats = acquire_product_images(
        wanted,
        previous,
        image_fetcher,
        cache,
        reuse_previous=config.reuse_previous,
        retry_failed=config.retry_failed,
        log=context.log.info,
        progress_every_s=config.progress_every_s,
    )
    for note in stats.notes:
        context.log.warning(note)
    if table.height != wanted.height:  # pragma: no cover - guarded by construction
        raise RuntimeError(f"product_images has {table.height} rows for {wanted.height} products")
    metadata = _summary_metadata(table, stats, cache)
    if damage:
        metadata["previous_unreadable"] = dg.MetadataValue.text(damage)
    if config.prune_unreferenced:
        # The previous table's files are kept too: until this table is written, the last good
        # one (and whatever reads it, e.g. `catret search --sheet`) may still need them.
        keep = set(table["cache_path"].drop_nulls().to_list())
        try:
            if damage:
                raise RuntimeError(damage)
            last = previous if previous is not None else storage.read_previous("product_images")
        except Exception as exc:  # unknown references: deleting anything could lose images
            context.log.warning(f"product_images: previous table unreadable, no pruning: {exc}")
        else:
            if last is not None and "cache_path" in last.columns:
                keep |= set(last["cache_path"].drop_nulls().to_list())
            files, size = cache.prune(keep)
            if files:
                context.log.info(f"product_images: pruned {files} unreferenced files ({size} B)")
            metadata["pruned_files"] = dg.MetadataValue.int(files)
            metadata["pruned_bytes"] = dg.MetadataValue.int(size)
    return dg.Output(table, metadata=metadata)


@dg.asset_check(
    asset=product_images,
    description="Every ok row points at an existing cache file of the recorded size.",
)
def product_images_cache_files_exist(
    product_images: pl.DataFrame, storage: CatretStorage
) -> dg.AssetCheckResult:
    cache = ImageCache.from_storage(storage)
    ok = product_images.filter(pl.col("status") == "ok")
    broken = [
        rel
        for rel, size in zip(
            ok.get_column("cache_path").to_list(), ok.get_column("bytes").to_list(), strict=True
        )
        if not cache.has(rel, size)
    ]
    return dg.AssetCheckResult(
        passed=not broken,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "n_ok": dg.MetadataValue.int(ok.height),
            "n_broken": dg.MetadataValue.int(len(broken)),
            "examples": dg.MetadataValue.text(", ".join(broken[:5]) or "-"),
        },
    )


ASSETS: list = [product_images]
CHECKS: list = [product_images_cache_files_exist]
