"""The ``image_fetcher`` resource: how product images are acquired (mirror, HTTP, limits)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import dagster as dg
from pydantic import Field

from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.fetch import (
    DEFAULT_USER_AGENT,
    FetchOptions,
    FetchResult,
    fetch_one,
    iter_fetch,
)


class ImageFetcher(dg.ConfigurableResource):
    """Acquires product images: local mirror first, then HTTP(S) download of what it lacks.

    The definitions pass ``mirror_dir=CatretConfig.image_mirror`` (env
    ``CATRET_IMAGE_MIRROR``, default the generated sample's image folder); an empty string
    means no mirror. They pass ``allow_hosts=CatretConfig.image_allow_hosts`` (env
    ``CATRET_IMAGE_ALLOW_HOSTS``): downloads reach only public addresses unless listed there.
    """

    mirror_dir: str = Field(
        default="",
        description="Directory of pre-downloaded images, matched by the URL's file name "
        "(last path segment, no query string). Used before any download. Empty: no mirror.",
    )
    download: bool = Field(
        default=True, description="Download over HTTP(S) what the mirror lacks (False: offline)."
    )
    concurrency: int = Field(default=8, description="Downloads in flight at once (threads).")
    timeout_s: float = Field(
        default=10.0,
        description="Socket timeout for connect and each read; a whole transfer must finish "
        "within 3x this.",
    )
    retries: int = Field(
        default=3,
        description="Extra attempts after the first on timeouts, connection errors, 5xx, 408, "
        "429 and short bodies (never on other 4xx).",
    )
    backoff_s: float = Field(
        default=0.5,
        description="Base of the exponential backoff between attempts (x2 each retry, "
        "jittered by a factor in [0.5, 1.5]).",
    )
    max_bytes: int = Field(
        default=10_000_000, description="Largest accepted image file; enforced while streaming."
    )
    max_pixels: int = Field(
        default=40_000_000,
        description="Largest accepted width x height, checked from the header before decoding "
        "(decompression-bomb guard).",
    )
    user_agent: str = Field(default=DEFAULT_USER_AGENT, description="HTTP User-Agent header.")
    allow_hosts: list[str] = Field(
        default=[],
        description="Opt-in for a private image server: host names (exact, case-insensitive) "
        "and IP addresses / CIDR networks (10.0.0.0/8, ::1) that downloads may reach although "
        "they are loopback, private, link-local or otherwise not public. '*' turns the check "
        "off. Empty (default): only public addresses; every other target, redirect hops "
        "included, is a 'refused' row.",
    )

    def options(self) -> FetchOptions:
        if self.concurrency < 1:
            raise ValueError(f"image_fetcher.concurrency must be >= 1 (got {self.concurrency})")
        return FetchOptions(
            mirror_dir=self.mirror_dir,
            download=self.download,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            user_agent=self.user_agent,
            allow=AllowList.parse(self.allow_hosts),
        )

    def fetch(self, url: str | None) -> FetchResult:
        return fetch_one(url, self.options())

    def fetch_many(
        self,
        urls: Iterable[str],
        process: Callable[[FetchResult], FetchResult] | None = None,
    ) -> Iterator[FetchResult]:
        """Results in completion order; see :func:`catret_pipeline.images.fetch.iter_fetch`."""
        return iter_fetch(urls, self.options(), self.concurrency, process)
