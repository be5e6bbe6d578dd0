"""Record validation and duplicate-asin resolution.

Rule for every field: null (``None``) is the same as absent; a field that is present must have a
type we can read, else the whole line is quarantined as ``wrong_type:<field>`` (a partly
readable product would silently lose content downstream). Checks run in a fixed order and the
first failure is the reason: asin, title, categories, features, productDetails, imgUrl,
description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from catret_pipeline.ingest.cleaning import image_candidates, normalise_text

OPTIONAL_FIELDS = ("features", "productDetails", "imgUrl", "description")
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class Validation:
    asin: str | None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_optional(field: str, value: Any) -> str | None:
    """None if ``value`` is readable for ``field``, else a detail string."""
    if field == "features":
        if not isinstance(value, list):
            return f"features is a {_type_name(value)}, expected a list of strings"
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if bad:
            return f"features[{bad[0]}] is a {_type_name(value[bad[0]])}"
    elif field == "productDetails":
        if not isinstance(value, dict):
            return f"productDetails is a {_type_name(value)}, expected an object"
        for key, item in value.items():
            if item is not None and not isinstance(item, _SCALAR):
                return f"productDetails[{key!r}] is a {_type_name(item)}"
    elif field == "imgUrl":
        if not isinstance(value, str | dict | list):
            return f"imgUrl is a {_type_name(value)}"
        try:
            image_candidates(value)
        except ValueError as exc:
            return str(exc)
    elif field == "description" and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(x, str) for x in value))
    ):
        # Same rule as cleaning.description_text, without normalising long texts twice.
        return f"description is a {_type_name(value)}, expected a string or list of strings"
    return None


def validate_record(record: dict) -> Validation:
    asin = record.get("asin")
    if asin is None or (isinstance(asin, str) and not asin.strip()):
        return Validation(None, "missing_asin", "asin is absent or empty")
    if not isinstance(asin, str):
        return Validation(None, "wrong_type:asin", f"asin is a {_type_name(asin)}")
    asin = asin.strip()

    title = record.get("title")
    if title is None:
        return Validation(asin, "missing_title", "title is absent")
    if not isinstance(title, str):
        return Validation(asin, "wrong_type:title", f"title is a {_type_name(title)}")
    if not normalise_text(title):
        return Validation(asin, "missing_title", "title is empty after normalisation")

    cats = record.get("categories")
    if cats is None or (isinstance(cats, list) and not cats):
        return Validation(asin, "missing_categories", "categories is absent or empty")
    if not isinstance(cats, list):
        return Validation(asin, "wrong_type:categories", f"categories is a {_type_name(cats)}")
    for level, name in enumerate(cats, start=1):
        if not isinstance(name, str):
            return Validation(
                asin, "wrong_type:categories", f"category at level {level} is a {_type_name(name)}"
            )
        if not normalise_text(name):
            # A blank level would shift every deeper name to the wrong depth.
            return Validation(asin, "missing_categories", f"category at level {level} is empty")

    for field in OPTIONAL_FIELDS:
        value = record.get(field)
        if value is None:
            continue
        problem = _check_optional(field, value)
        if problem is not None:
            return Validation(asin, f"wrong_type:{field}", problem)
    return Validation(asin)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid record competing for its asin."""

    asin: str
    market: str
    source_file: str
    line_no: int


def priority_key(c: Candidate, market_priority: Sequence[str]) -> tuple:
    """Smaller wins: listed markets first in list order, then market name, file, line."""
    rank = market_priority.index(c.market) if c.market in market_priority else len(market_priority)
    return (rank, c.market, c.source_file, c.line_no)


def resolve_duplicates(
    candidates: Sequence[Candidate], market_priority: Sequence[str]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Indices of the kept candidates (input order) and ``(loser, winner)`` index pairs."""
    priority = list(market_priority)

    def key(i: int) -> tuple:
        return priority_key(candidates[i], priority)

    best: dict[str, int] = {}
    losers: list[int] = []
    for i, c in enumerate(candidates):
        j = best.get(c.asin)
        if j is None:
            best[c.asin] = i
        elif key(i) < key(j):
            best[c.asin] = i
            losers.append(j)
        else:
            losers.append(i)
    kept = sorted(best.values())
    pairs = sorted((loser, best[candidates[loser].asin]) for loser in losers)
    return kept, pairs
