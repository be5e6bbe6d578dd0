"""Markdown tables for Dagster metadata and the report (the UI renders ``MetadataValue.md``)."""

from __future__ import annotations

from collections.abc import Sequence


def _cell(value: object) -> str:
    # A raw '|' or newline in a cell (e.g. a quarantined line's detail) would break the table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
