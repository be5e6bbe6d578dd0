"""Reads of a table see one version of its file (issue #12 item 4): a concurrent atomic
rename (what every build does) must give the reader the old or the new table, never a mix."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl

from catret_pipeline.storage.tables import read_tables


def _versions(tmp: Path) -> list[Path]:
    # Different sizes and page layouts, so mixing the footer of one with the pages of the
    # other fails (or gives rows of neither).
    small = pl.DataFrame({"id": list(range(10)), "v": ["a"] * 10})
    big = pl.DataFrame({"id": list(range(50_000)), "v": [f"b{i}" for i in range(50_000)]})
    paths = [tmp / "small.parquet", tmp / "big.parquet"]
    small.write_parquet(paths[0], row_group_size=5)
    big.write_parquet(paths[1], row_group_size=4096)
    return paths


def test_reads_during_renames_see_one_version(tmp_path):
    small, big = _versions(tmp_path)
    target = tmp_path / "t.parquet"
    target.write_bytes(small.read_bytes())
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            src = (small, big)[i % 2]
            tmp = tmp_path / f".t.{i}.tmp"
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, target)
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        for _ in range(600):
            for lazy in (False, True):
                frame = read_tables([target], lazy=lazy)
                df = frame.collect() if lazy else frame
                assert df.height in (10, 50_000)
    finally:
        stop.set()
        t.join()
