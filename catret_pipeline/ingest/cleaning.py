"""Normalisation of validated XMarket records into the ``products`` table.

Pure functions: text normalisation, attribute strings, the image URL choice, content hashes.
:mod:`catret_pipeline.ingest.validation` uses the same functions, so a record that passes
validation always cleans without error.
"""

from __future__ import annotations

import ast
import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

# Invisible marks the Amazon scrape leaves around product-detail keys and values
# ("Manufacturer \u200f : \u200e Sangean"): they would make equal strings hash differently.
_INVISIBLE = dict.fromkeys(
    [0x00AD, 0xFEFF, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065)]
)
# C0/C1 control characters that str.split() does not already treat as whitespace.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x9f]")


def normalise_text(value: str) -> str:
    """NFC, HTML entities decoded once, invisible marks removed, whitespace collapsed."""
    text = html.unescape(value)
    if not text.isascii():
        # NFC and the invisible marks only concern non-ASCII text; skipping them is the fast path.
        text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def normalise_path(categories: Sequence[str]) -> list[str]:
    """Category names normalised like titles (they are the queries, so '&amp;' must go)."""
    return [normalise_text(name) for name in categories]


def attribute_strings(value: Any, key: str | None = None) -> list[str]:
    """Flatten an attribute field into strings: list items, dict entries as ``"Key: Value"``.

    Generic on purpose so any configured field works; ``features`` (list of str) and
    ``productDetails`` (dict of str) are the two the paper's data has.
    """
    out: list[str] = []
    if value is None:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            name = normalise_text(str(k)).rstrip(":").strip()
            out.extend(attribute_strings(v, f"{key}: {name}" if key and name else key or name))
        return out
    if isinstance(value, list | tuple):
        for item in value:
            out.extend(attribute_strings(item, key))
        return out
    text = normalise_text(value if isinstance(value, str) else str(value))
    if not text:
        # "Key: " carries no content; drop the whole entry, not just the value.
        return out
    out.append(f"{key}: {text}" if key else text)
    return out


def extract_attributes(record: dict, fields: Iterable[str], max_attributes: int = 0) -> list[str]:
    """Attribute strings from ``fields`` in order, empty dropped, first occurrence kept."""
    seen: set[str] = set()
    result: list[str] = []
    for field in fields:
        for text in attribute_strings(record.get(field)):
            if text and text not in seen:
                seen.add(text)
                result.append(text)
    if max_attributes > 0:
        result = result[:max_attributes]
    return result


def _size(value: Any, url: str) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in value)
    ):
        return (float(value[0]), float(value[1]))
    raise ValueError(f"size of {url!r} is {value!r}, expected [height, width]")


#: A bare imgUrl string taken as one URL: ``scheme:...`` (RFC 3986) or a path from ``/``.
_URL_LIKE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|/)\S")


def image_candidates(value: Any) -> list[tuple[str, float, float]]:
    """``(url, height, width)`` for every size listed in an ``imgUrl`` value.

    Accepted forms: the XMarket JSON string ``'{"url": [h, w], ...}'``, that dict already
    parsed, a list of URLs or of such dicts, a bare URL string (any scheme, or a path;
    the fetcher decides what it may fetch); ``""``, ``"[]"``, ``[]``,
    ``{}`` and null mean no image. Anything else raises ``ValueError``.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text[0] in "{[":
            try:
                parsed = json.loads(text)
            except ValueError:
                try:
                    parsed = ast.literal_eval(text)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                    raise ValueError(
                        f"imgUrl string is neither JSON nor a literal: {exc}"
                    ) from None
            if isinstance(parsed, str):
                raise ValueError("imgUrl string holds a nested string")
            return image_candidates(parsed)
        if _URL_LIKE.match(text):
            # Any scheme or absolute path, like a dict key: the image fetcher refuses what is
            # not http(s) (a ``refused`` product_images row), so a ``file://`` string costs the
            # product its image, not the product itself, exactly as the dict form does.
            return [(text, 0.0, 0.0)]
        raise ValueError(f"imgUrl string is not a URL or a JSON object: {text[:80]!r}")
    if isinstance(value, dict):
        out = []
        for url, size in value.items():
            if not isinstance(url, str) or not url.strip():
                raise ValueError(f"imgUrl key {url!r} is not a URL")
            h, w = _size(size, url)
            out.append((url.strip(), h, w))
        return out
    if isinstance(value, list | tuple):
        out = []
        for item in value:
            if isinstance(item, str):
                if item.strip():
                    out.append((item.strip(), 0.0, 0.0))
            elif isinstance(item, dict):
                out.extend(image_candidates(item))
            else:
                raise ValueError(f"imgUrl list item {item!r} is neither a URL nor a dict")
        return out
    raise ValueError(f"imgUrl is a {type(value).__name__}")


def largest_image(value: Any) -> str | None:
    """The URL with the largest height x width; ties go to the smallest URL (deterministic)."""
    candidates = image_candidates(value)
    if not candidates:
        return None
    return min(candidates, key=lambda c: (-(c[1] * c[2]), c[0]))[0]


def description_text(value: Any) -> str:
    """A description string or list of strings (joined by a space), normalised; '' if absent."""
    if value is None:
        return ""
    if isinstance(value, str):
        return normalise_text(value)
    if isinstance(value, list | tuple) and all(isinstance(x, str) for x in value):
        return " ".join(t for t in (normalise_text(x) for x in value) if t)
    raise ValueError(f"description is a {type(value).__name__}")


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def attributes_hash(attributes: Sequence[str]) -> str:
    # JSON keeps item boundaries unambiguous (["a b"] vs ["a", "b"]).
    return sha1_hex(json.dumps(list(attributes), ensure_ascii=False))


def clean_record(
    record: dict, attribute_fields: Sequence[str], max_attributes: int = 0
) -> dict[str, Any]:
    """The cleaned columns of one validated record (everything but asin/market/source_file)."""
    title = normalise_text(record["title"])
    attributes = extract_attributes(record, attribute_fields, max_attributes)
    image_url = largest_image(record.get("imgUrl"))
    return {
        "title": title,
        "category_path": normalise_path(record["categories"]),
        "attributes": attributes,
        "image_url": image_url,
        "description": description_text(record.get("description")),
        "title_hash": sha1_hex(title),
        "attributes_hash": attributes_hash(attributes),
        "image_hash": sha1_hex(image_url) if image_url is not None else None,
    }
