"""Markdown tables for Dagster metadata, the report and the benchmark docs (the UI renders
``MetadataValue.md``): the one table writer, so escaping and layout are the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence


def _cell(value: object) -> str:
    # A raw '|' or newline in a cell (e.g. a quarantined line's detail) would break the table.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(
    df,
    *,
    rows: int | None = None,
    float_digits: int | None = None,
    max_chars: int | None = None,
) -> str:
    """A polars DataFrame (anything with ``columns``, ``head`` and ``iter_rows``) as a table.

    ``rows`` keeps the first rows only; ``float_digits`` writes floats with that many decimals;
    ``max_chars`` cuts longer cells to that length, ending in an ellipsis, so one long value
    (an error message, a vector) cannot widen the table past reading.
    """
    if rows is not None:
        df = df.head(rows)

    def fmt(value: object) -> object:
        if float_digits is not None and isinstance(value, float):
            value = f"{value:.{float_digits}f}"
        if max_chars is not None:
            text = str(value)
            value = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
        return value

    return markdown_table(df.columns, [[fmt(v) for v in row] for row in df.iter_rows()])
