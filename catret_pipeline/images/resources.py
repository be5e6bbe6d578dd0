"""The ``image_fetcher`` resource: how product images are acquired (mirror, HTTP, limits)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import dagster as dg
from pydantic import Field

from catret_pipeline.config_fields import dataclass_values, declared_fields, fields_model
from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.fetch import (
    FetchOptions,
    FetchResult,
    fetch_one,
    iter_fetch,
)

#: The fetch options the resource declares (all but ``allow``, which it takes as host names).
FETCH_FIELDS = declared_fields(FetchOptions)
FetchFields = fields_model("FetchFields", FetchOptions, FETCH_FIELDS, __name__)


class ImageFetcher(dg.ConfigurableResource, FetchFields):
    """Acquires product images: local mirror first, then HTTP(S) download of what it lacks.

    The definitions pass ``mirror_dir=CatretConfig.image_mirror`` (env
    ``CATRET_IMAGE_MIRROR``, default the generated sample's image folder); an empty string
    means no mirror. They pass ``allow_hosts=CatretConfig.image_allow_hosts`` (env
    ``CATRET_IMAGE_ALLOW_HOSTS``): downloads reach only public addresses unless listed there.
    """

    concurrency: int = Field(default=8, description="Downloads in flight at once (threads).")
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
            **dataclass_values(self, FETCH_FIELDS), allow=AllowList.parse(self.allow_hosts)
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
