"""URL checks and the local mirror lookup: what may be fetched, and where a mirror holds it.

The mirror is consulted by file name only and opens no connection, so the address policy
(:mod:`.addresses`) applies to downloads alone.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from catret_pipeline.images.fetch_types import FetchError

_MAX_URL_CHARS = 4096
_SAFE_SCHEMES = frozenset({"http", "https"})


def normalise_url(url: object) -> str | None:
    """The URL as a stripped string, or ``None`` when there is none (null, NaN, blank)."""
    if url is None or not isinstance(url, str):
        return None
    url = url.strip()
    return url or None


def check_url(url: str) -> None:
    """Raise ``unsafe_url`` unless ``url`` is a plain http(s) URL with a host."""
    if len(url) > _MAX_URL_CHARS:
        raise FetchError("unsafe_url", f"URL longer than {_MAX_URL_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise FetchError("unsafe_url", "control character in URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FetchError("unsafe_url", f"unparseable URL: {exc}") from None
    if parts.scheme.lower() not in _SAFE_SCHEMES:
        raise FetchError("unsafe_url", f"scheme {parts.scheme or '(none)'!r} is not http(s)")
    if not parts.hostname:
        raise FetchError("unsafe_url", "URL has no host")


def mirror_file_name(url: str) -> str | None:
    """The file name a mirror would hold ``url`` under: its last path segment, unquoted.

    ``None`` when that segment is empty or could name anything but a plain file inside the
    mirror (``.``, ``..``, a separator after unquoting, a NUL byte).
    """
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return None
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\x00")):
        return None
    return name


def mirror_lookup(mirror_dir: str | Path, url: str) -> Path | None:
    """The mirror file for ``url``, or ``None``; never a path outside ``mirror_dir``.

    Symbolic links are followed only when their target is still inside the mirror.
    """
    if not mirror_dir:
        return None
    name = mirror_file_name(url)
    if name is None:
        return None
    try:
        root = Path(mirror_dir).resolve()
        resolved = (root / name).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if root not in resolved.parents or not resolved.is_file():
        return None
    return resolved
