"""Parse one metadata line into a record dict, or say why it cannot be parsed.

Order: size limit, strict UTF-8, ``json.loads``, then ``ast.literal_eval`` (the XMarket page
writes lines with Python's ``str(dict)`` and reads them with ``eval``; ``literal_eval`` accepts
the same literals and never runs code). The record is re-serialised as JSON here, so a value
JSON cannot hold (a set, bytes) is caught at parse time rather than when writing Parquet.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_LINE_BYTES = 1_000_000
RAW_TEXT_CHARS = 500

# What ast.literal_eval raises on malformed, hostile or deeply nested input.
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)
_ASIN_HINT = re.compile(r"""["']asin["']\s*:\s*["']([^"'\\]{1,64})["']""")


@dataclass(frozen=True, slots=True)
class ParseResult:
    """``record`` + ``json_text`` on success, else ``reason`` (a quarantine code) + ``detail``."""

    record: dict | None = None
    json_text: str | None = None
    via: str | None = None  # "json" or "python_literal"
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def raw_preview(raw: bytes, limit: int = RAW_TEXT_CHARS) -> str:
    """Readable, lossless-enough text for the quarantine table (bad bytes shown as \\xNN)."""
    return raw[: limit * 4].decode("utf-8", errors="backslashreplace")[:limit]


def asin_hint(text: str) -> str | None:
    """Best-effort asin of an unparseable line, so a quarantined row can be traced."""
    m = _ASIN_HINT.search(text[:2000])
    if m is None:
        return None
    return m.group(1).strip() or None


def _finite(value: Any) -> Any:
    # JSON NaN/Infinity (accepted by json.loads) are not valid JSON to write back: null them.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _to_json(record: dict) -> tuple[str, bool]:
    """The JSON text and whether it differs in content from ``record`` (non-finite floats)."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False), False
    except ValueError:
        return json.dumps(_finite(record), ensure_ascii=False, allow_nan=False), True


def parse_line(
    raw: bytes, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, total_bytes: int | None = None
) -> ParseResult:
    """Parse one line (without its newline). ``total_bytes``: the true length if ``raw`` was cut."""
    size = len(raw) if total_bytes is None else max(total_bytes, len(raw))
    if size > max_line_bytes:
        return ParseResult(
            reason="line_too_long", detail=f"{size} bytes > max_line_bytes={max_line_bytes}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseResult(
            reason="invalid_utf8",
            detail=f"byte {exc.start}: {raw[exc.start : exc.start + 4]!r} ({exc.reason})",
        )
    text = text.lstrip("\ufeff").strip()
    via = "json"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as json_exc:
        via = "python_literal"
        try:
            record = ast.literal_eval(text)
        except _LITERAL_ERRORS as lit_exc:
            return ParseResult(
                reason="invalid_json",
                detail=f"json: {json_exc}; python literal: {type(lit_exc).__name__}: {lit_exc}"[
                    :300
                ],
            )
    if not isinstance(record, dict):
        return ParseResult(
            reason="invalid_json", detail=f"top level is a {type(record).__name__}, not an object"
        )
    try:
        json_text, changed = _to_json(record)
    except (TypeError, ValueError, RecursionError) as exc:
        return ParseResult(reason="invalid_json", detail=f"not representable as JSON: {exc}")
    if changed or via == "python_literal":
        # Round-trip so the record holds exactly what a JSON reader of raw_products sees
        # (tuples become lists, int keys become strings).
        record = json.loads(json_text)
    return ParseResult(record=record, json_text=json_text, via=via)
