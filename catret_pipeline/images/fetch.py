"""Acquire one product image: local mirror first, else HTTP(S) with retries; always decode-validated.

Nothing here trusts its input. URLs may use other schemes (``file://``), carry control
characters, or name files like ``..%2F..%2Fetc%2Fpasswd``; servers may hang, reset, send HTML,
send fewer bytes than announced, or a tiny PNG that declares a ten-gigapixel canvas. Each of
these ends as a :class:`FetchResult` with a short reason code, never as an exception escaping
to the caller.

Statuses and reason codes are listed in :mod:`.fetch_types`. The parts: :mod:`.urls` (URL
checks, mirror lookup), :mod:`.download` (HTTP with limits and retries), :mod:`.decode`
(decode validation); this module puts them together and runs many URLs at once. The names
below are its public API, re-exported from where they live.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from catret_pipeline.images.decode import decode_image
from catret_pipeline.images.download import TRANSFER_DEADLINE_FACTOR, download
from catret_pipeline.images.fetch_types import (
    ALLOWED_FORMATS,
    DEFAULT_USER_AGENT,
    REFUSED_REASONS,
    FetchError,
    FetchOptions,
    FetchResult,
    clip,
)
from catret_pipeline.images.urls import check_url, mirror_file_name, mirror_lookup, normalise_url

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_USER_AGENT",
    "REFUSED_REASONS",
    "TRANSFER_DEADLINE_FACTOR",
    "FetchError",
    "FetchOptions",
    "FetchResult",
    "check_url",
    "decode_image",
    "fetch_one",
    "iter_fetch",
    "mirror_file_name",
    "mirror_lookup",
    "normalise_url",
]


def _ok(url: str, data: bytes, opts: FetchOptions, **extra) -> FetchResult:
    fmt, width, height = decode_image(data, opts.max_pixels)
    return FetchResult(
        url=url,
        status="ok",
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        width=width,
        height=height,
        format=fmt,
        data=data,
        **extra,
    )


def _from_mirror(path: Path, url: str, opts: FetchOptions) -> FetchResult:
    size = path.stat().st_size
    if size > opts.max_bytes:
        raise FetchError("too_large", f"mirror file {size} bytes > max_bytes {opts.max_bytes}")
    return _ok(url, path.read_bytes(), opts, source="mirror")


def fetch_one(
    url: object, options: FetchOptions | None = None, *, rng: random.Random | None = None
) -> FetchResult:
    """Acquire and validate one image. Never raises for bad input or network trouble."""
    opts = options or FetchOptions()
    clean = normalise_url(url)
    if clean is None:
        return FetchResult(url=None, status="missing", reason="no_url")
    try:
        return _fetch_checked(clean, opts, rng or random.Random())
    except FetchError as exc:
        return FetchResult(
            url=clean,
            status="refused" if exc.reason in REFUSED_REASONS else "failed",
            reason=exc.reason,
            detail=exc.detail,
            attempts=getattr(exc, "attempts", 0),
            network_bytes=getattr(exc, "network_bytes", 0),
        )
    except Exception as exc:  # a decoder or library bug must not stop a 40k-image run
        return FetchResult(
            url=clean,
            status="failed",
            reason="internal_error",
            detail=clip(f"{type(exc).__name__}: {exc}"),
        )


def _fetch_checked(url: str, opts: FetchOptions, rng: random.Random) -> FetchResult:
    check_url(url)
    mirror_failure: FetchError | None = None
    mirror_path = mirror_lookup(opts.mirror_dir, url)
    if mirror_path is not None:
        try:
            return _from_mirror(mirror_path, url, opts)
        except (FetchError, OSError) as exc:
            mirror_failure = (
                exc
                if isinstance(exc, FetchError)
                else FetchError("corrupt", f"mirror read failed: {exc}")
            )
            if not opts.download:
                raise mirror_failure from None
    if not opts.download:
        raise FetchError("not_in_mirror", "download disabled and no mirror file")
    try:
        data, attempts, network = download(url, opts, rng)
    except FetchError as exc:
        if mirror_failure is not None:
            exc.detail = clip(f"{exc.detail} (mirror copy: {mirror_failure.reason})")
        raise
    try:
        return _ok(url, data, opts, source="download", attempts=attempts, network_bytes=network)
    except FetchError as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        exc.network_bytes = network  # type: ignore[attr-defined]
        raise


def iter_fetch(
    urls: Iterable[str],
    options: FetchOptions,
    concurrency: int = 8,
    process: Callable[[FetchResult], FetchResult] | None = None,
    *,
    seed: int | None = None,
) -> Iterator[FetchResult]:
    """Fetch ``urls`` with at most ``concurrency`` in flight, yielding results as they finish.

    ``process`` runs in the worker thread on each result (e.g. write to the cache and drop
    ``data``), so decoded bytes never pile up in the caller. Submission is windowed, so a
    40k-URL run holds a few dozen futures, not 40k.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 (got {concurrency})")
    master = random.Random(seed)

    def work(url: str, rng_seed: int) -> FetchResult:
        result = fetch_one(url, options, rng=random.Random(rng_seed))
        if process is not None:
            try:
                result = process(result)
            except Exception as exc:  # e.g. disk full while caching: record, do not abort
                result = replace(
                    result,
                    status="failed",
                    reason="internal_error",
                    detail=clip(f"storing failed: {type(exc).__name__}: {exc}"),
                    data=None,
                )
        return result

    window = concurrency * 4
    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="catret-img") as pool:
        for url in urls:
            pending.add(pool.submit(work, url, master.getrandbits(32)))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
