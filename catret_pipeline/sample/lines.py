"""One metadata line and one metadata file: JSON encoding, XMarket path, deterministic gzip."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Line:
    """One line of a metadata file, with what the generator knows about it."""

    data: bytes
    asin: str | None
    record: dict[str, Any] | None = None
    #: a valid product line (first copies and repeats alike)
    valid: bool = True
    #: left alone when picking lines to break or duplicate
    protected: bool = False
    #: its ``broken_lines.json`` entry, for a broken line
    entry: dict[str, Any] | None = None


def dumps(record: dict[str, Any]) -> bytes:
    """A record as one JSON line (no newline), UTF-8, non-ASCII kept as is."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def rel_file(market: str, file_name: str) -> str:
    """A metadata file's path under ``xmarket/``, as the XMarket release lays it out."""
    return f"{market}/{file_name}/metadata_{market}_{file_name}.json.gz"


def gzip_bytes(data: bytes) -> bytes:
    """``data`` gzipped so that the bytes depend only on the content."""
    # mtime=0 and no file name in the header.
    return gzip.compress(data, compresslevel=6, mtime=0)
