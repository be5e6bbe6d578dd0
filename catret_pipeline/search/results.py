"""What a search returns: hits, results and the error a search that cannot run raises."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

BM25_MODEL = "bm25"
SETTINGS = ("all", "general", "specific")
MATERIALIZE_HINT = "run `catret materialize` first"


class SearchError(Exception):
    """A search that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Hit:
    rank: int
    asin: str
    score: float
    title: str | None
    category_path: list[str]
    #: ``product_images.cache_path`` (relative to the data dir) of an ``ok`` image, else None.
    image_path: str | None


@dataclass
class SearchResults:
    """Ranked hits plus how the query was answered; iterates over the hits."""

    query: str
    model: str
    setting: str
    hits: list[Hit]
    #: ``precomputed`` (a category of the tree), ``encoded`` (on the fly) or ``bm25``.
    query_source: str
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]
