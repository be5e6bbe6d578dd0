"""Which prompt built ``category_clip_embeddings``: the one recorded in the table's own file,
proven (with the fallbacks) against the stored hashes. Used by ``catret search``, the serving
store and the delivery assets, which encode names outside the tree with the build's prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import polars as pl

from catret_pipeline.storage.table_summary import read_summary
from catret_pipeline.storage.tables import TablePath


def recorded_prompt(path: TablePath) -> str | None:
    """The prompt ``category_clip_embeddings`` at ``path`` was built with, from the summary in
    its own file (``storage.table_summary``); None for a file written without one."""
    try:
        value = read_summary(path).get("prompt")
    except Exception:  # an unreadable footer only means one candidate fewer
        return None
    return value if isinstance(value, str) else None


def recover_prompt(table: pl.DataFrame, candidates: Sequence[str]) -> str | None:
    """The first candidate prompt that reproduces the stored ``content_hash`` of a row.

    ``category_clip_embeddings.content_hash`` is sha1 of the prompt with the name filled in, so a
    candidate is proven right (or wrong) against the table itself.
    """
    rows = table.select("name", "content_hash").drop_nulls().head(20)
    if rows.is_empty():
        return None
    for prompt in dict.fromkeys(candidates):
        if "{name}" not in prompt:
            continue
        if all(
            hashlib.sha1(prompt.replace("{name}", n).encode("utf-8")).hexdigest() == h
            for n, h in rows.iter_rows()
        ):
            return prompt
    return None
