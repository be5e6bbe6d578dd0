"""Editing an XMarket-layout catalogue in place: read and rewrite its metadata files and add
mirror images. Used to simulate catalogue changes (the refresh test and benchmark)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np


def read_raw(raw: Path) -> dict[str, list[dict]]:
    """Every ``metadata_*.json.gz`` under ``raw``: relative POSIX path -> parsed lines."""
    return {
        f.relative_to(raw).as_posix(): [
            json.loads(line) for line in gzip.decompress(f.read_bytes()).splitlines() if line
        ]
        for f in sorted(raw.rglob("metadata_*.json.gz"))
    }


def write_raw(raw: Path, files: dict[str, list[dict]]) -> None:
    """Write ``files`` back (gzip mtime 0: same records, same bytes)."""
    for rel, records in files.items():
        path = raw / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
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
