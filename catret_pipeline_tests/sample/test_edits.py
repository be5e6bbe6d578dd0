"""Editing a generated catalogue in place (what the refresh benchmarks and tests do)."""

from __future__ import annotations

import gzip
import json

from catret_pipeline.sample.edits import read_raw, write_raw
from catret_pipeline.sample.generator import generate_sample


def test_edits_keep_the_samples_broken_lines(tmp_path):
    # Before: read_raw raised JSONDecodeError on the default sample's broken lines, so a
    # refresh could not be simulated on it (bench_paper_scale.py's refresh failed at 10,000).
    sample = generate_sample(tmp_path / "s", n_products=50, image_size=8)
    raw = sample.out_dir / "xmarket"
    files = read_raw(raw)
    before = {f: gzip.decompress((raw / f).read_bytes()) for f in files}
    damaged = {f: f.read_bytes() for f in raw.rglob("metadata_*.json.gz")}
    damaged = {f: b for f, b in damaged.items() if f.relative_to(raw).as_posix() not in files}
    unparsed = [r for recs in files.values() for r in recs if isinstance(r, bytes)]
    assert unparsed, "the default sample has lines that are not JSON"
    write_raw(raw, files)
    for f, body in before.items():
        after = gzip.decompress((raw / f).read_bytes())
        for line in body.splitlines():
            try:
                json.loads(line)
            except ValueError:
                assert line in after.splitlines(), line  # kept byte for byte
    assert all(f.read_bytes() == b for f, b in damaged.items())  # unreadable files untouched
    # the parsed records come back as written
    assert read_raw(raw) == files
