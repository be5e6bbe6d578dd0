"""Editing an XMarket-layout catalogue in place: read and rewrite its metadata files and add
mirror images. Used to simulate catalogue changes (the refresh test and benchmark)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np


def read_raw(raw: Path) -> dict[str, list]:
    """Every readable ``metadata_*.json.gz`` under ``raw``: relative POSIX path -> its lines,
    parsed, or the line's bytes where it is not JSON. A generated sample's deliberately broken
    lines are kept that way through an edit, and its damaged gzip files are left out (so
    :func:`write_raw` leaves them as they are)."""
    files = {}
    for f in sorted(raw.rglob("metadata_*.json.gz")):
        try:
            body = gzip.decompress(f.read_bytes())
        except (OSError, EOFError):  # BadGzipFile is an OSError; a truncated stream, EOFError
            continue
        files[f.relative_to(raw).as_posix()] = [_parse(line) for line in body.splitlines() if line]
    return files


def _parse(line: bytes):
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return line


def write_raw(raw: Path, files: dict[str, list]) -> None:
    """Write ``files`` back (gzip mtime 0: same records, same bytes); unparsed lines verbatim."""
    for rel, records in files.items():
        path = raw / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = b"".join(
            (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
        )
        path.write_bytes(gzip.compress(body, mtime=0))


def add_mirror_image(mirror: Path, image_id: str, seed: int, size: int = 32) -> str:
    """A seeded noise JPEG in the mirror; returns the ``imgUrl`` value that points at it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    name = f"{image_id}._AC_SY355_.jpg"
    (mirror / name).write_bytes(buf.getvalue())
    return json.dumps({f"https://m.media-amazon.com/images/I/{name}": [size, size]})
