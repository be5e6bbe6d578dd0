"""The deliberately broken lines and the cut-off gzip file: ground truth for ingestion tests.

Each kind in :data:`BROKEN_KINDS` maps to the quarantine reason ingestion should give it. All
but ``corrupt_gzip`` are single lines put into (or rewritten in) a metadata file; the
``corrupt_gzip`` file is the one small file of :data:`CORRUPT_ROOT`, cut off a few lines
before its end.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from catret_pipeline.sample import vocabulary as V
from catret_pipeline.sample.lines import Line, dumps, rel_file
from catret_pipeline.sample.products import Product, ProductBuilder

#: Broken-line kind -> the quarantine reason the ingestion should give it (None: the line is
#: a valid product that only a tolerant parser reads).
BROKEN_KINDS: dict[str, str | None] = {
    "truncated_json": "invalid_json",
    "python_literal": None,
    "missing_title": "missing_title",
    "missing_categories": "missing_categories",
    "wrong_type_categories": "wrong_type:categories",
    "wrong_type_title": "wrong_type:title",
    "invalid_utf8": "invalid_utf8",
    "duplicate_asin": "duplicate_asin",
    "missing_asin": "missing_asin",
    "corrupt_gzip": "corrupt_gzip",
}

#: The root whose single small file carries the cut-off gzip stream.
CORRUPT_ROOT = "Office Products"
#: Lines of that file lost after the cut (drawn, never readable).
LOST_TAIL_LINES = 3


def break_lines(builder: ProductBuilder, files: dict[tuple[str, str], list[Line]]) -> None:
    """One broken line of each line kind, spread over the (market, file name) ``files``."""
    keys = sorted(files)
    kinds = [k for k in BROKEN_KINDS if k != "corrupt_gzip"]
    for k, kind in enumerate(kinds):
        market, file_name = keys[(k * 5) % len(keys)]
        break_line(builder, kind, market, file_name, files[(market, file_name)])


def break_line(
    builder: ProductBuilder,
    kind: str,
    market: str,
    file_name: str,
    lines: list[Line],
) -> None:
    """Insert (or, for ``python_literal``, rewrite) one broken line in ``lines``."""
    rng = builder.rng
    rel = rel_file(market, file_name)
    entry: dict[str, Any] = {
        "market": market,
        "file": rel,
        "line_no": None,
        "kind": kind,
        "expected_reason": BROKEN_KINDS[kind],
        "asin": None,
        "detail": "",
    }
    eligible = [i for i, line in enumerate(lines) if line.valid and not line.protected]
    if kind == "python_literal":
        i = rng.choice(eligible)
        line = lines[i]
        assert line.record is not None
        line.data = repr(line.record).encode("utf-8")
        line.protected = True
        line.entry = entry
        entry.update(asin=line.asin, detail="single-quoted Python dict; valid via ast.literal_eval")
        return
    if kind == "duplicate_asin":
        i = rng.choice(eligible)
        original = lines[i]
        original.protected = True
        assert original.record is not None
        record = json.loads(json.dumps(original.record))
        record["title"] = record["title"] + " (Renewed)"
        entry.update(asin=original.asin, detail="same asin as an earlier line of this file")
        lines.insert(
            rng.randint(i + 1, len(lines)),
            Line(dumps(record), original.asin, record, valid=False, protected=True, entry=entry),
        )
        return
    root = next(r for r, v in V.ROOTS.items() if v.file_name == file_name)
    leaf = rng.choice(builder.by_root[root])
    product = builder.make_product(leaf, leaf.path, market)
    builder.broken_products.append(product)
    record = product.record
    asin: str | None = record["asin"]
    if kind == "truncated_json":
        text = json.dumps(record, ensure_ascii=False)
        data = text[: int(len(text) * rng.uniform(0.3, 0.8))].encode("utf-8")
        detail = "JSON object cut off mid-line"
    elif kind == "invalid_utf8":
        record["title"] = "Café " + record["title"]
        data = dumps(record).replace("é".encode(), "é".encode("latin-1"))
        detail = "latin-1 encoded é in an otherwise valid JSON line"
    else:
        if kind == "missing_title":
            del record["title"]
            detail = "no title field"
        elif kind == "missing_categories":
            del record["categories"]
            detail = "no categories field"
        elif kind == "wrong_type_categories":
            record["categories"] = " > ".join(leaf.path)
            detail = "categories is a string, not a list"
        elif kind == "wrong_type_title":
            record["title"] = rng.randint(10_000, 99_999)
            detail = "title is a number"
        elif kind == "missing_asin":
            del record["asin"]
            asin = None
            detail = "no asin field"
        else:
            raise ValueError(f"unknown broken-line kind {kind!r}")
        data = dumps(record)
    entry.update(asin=asin, detail=detail)
    lines.insert(
        rng.randint(0, len(lines)),
        Line(data, asin, None, valid=False, protected=True, entry=entry),
    )


def cut_gzip(good: bytes, lost: bytes) -> bytes:
    """A gzip stream holding ``good`` intact, then cut a few bytes into the next deflate block.

    A full flush after ``good`` makes every good line decodable; the stream then ends inside
    the following block's header, so readers get ``good`` and then an "ended before the
    end-of-stream marker" error, with no partial line in between.
    """
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = comp.compress(good) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(lost) + comp.flush()
    for keep in (5, 0):
        blob = head + tail[:keep]
        dec = zlib.decompressobj(31)
        if dec.decompress(blob) == good and not dec.eof:
            return blob
    raise AssertionError("could not build a cleanly cut gzip stream")  # pragma: no cover


def cut_office_file(
    builder: ProductBuilder, office: list[Product], market: str, rel: str, good: bytes
) -> tuple[bytes, dict[str, Any]]:
    """The ``CORRUPT_ROOT`` file ``rel``: ``good`` and then a cut-off tail; and its entry."""
    lost_products = [
        builder.make_product(leaf, leaf.path, market)
        for leaf in builder.rng.choices(builder.by_root[CORRUPT_ROOT], k=LOST_TAIL_LINES)
    ]
    lost = b"".join(dumps(p.record) + b"\n" for p in lost_products)
    entry = {
        "market": market,
        "file": rel,
        "line_no": len(office) + 1,
        "kind": "corrupt_gzip",
        "expected_reason": BROKEN_KINDS["corrupt_gzip"],
        "asin": None,
        "detail": f"gzip stream cut off after {len(office)} complete lines "
        f"({LOST_TAIL_LINES} lines lost)",
    }
    return cut_gzip(good, lost), entry
