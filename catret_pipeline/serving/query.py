"""Validating what a client asks, before anything is looked up or encoded."""

from __future__ import annotations

import unicodedata

MAX_QUERY_CHARS = 200
MAX_K = 200
DEFAULT_K = 10


class QueryError(ValueError):
    """A request that cannot be answered as asked; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def clean_name(raw: str | None) -> str:
    """The category name to search for, or :class:`QueryError` saying what is wrong with it."""
    name = (raw or "").strip()
    if not name:
        raise QueryError("the query is empty: give a category name (q=...)")
    if len(name) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(name)} characters long; at most {MAX_QUERY_CHARS}")
    # Control and format characters (NUL, escapes, bidi overrides) are never part of a name and
    # would end up in logs and pages verbatim.
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")]
    if bad:
        raise QueryError(f"the query contains control characters ({', '.join(map(repr, bad[:3]))})")
    return name


def parse_k(raw: str | int | None, default: int = DEFAULT_K) -> int:
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise QueryError(f"k must be an integer, got {str(raw)[:20]!r}") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return k
