"""Symbolic links in the raw root: links out of it are quarantined unread, links inside are read.

Real symlinks to real files through ``dg.materialize`` of the ingest assets; the secret must
appear in no output table, whichever way the link points out (file link, directory link).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import dagster as dg
import polars as pl

from catret_pipeline.ingest.assets import ASSETS as INGEST_ASSETS
from catret_pipeline.ingest.reader import SourceFile, iter_metadata_lines
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

SECRET = "TOP-SECRET-3f9c1e-do-not-leak"


def record(asin: str, title: str = "A product") -> bytes:
    return json.dumps({"asin": asin, "title": title, "categories": ["Root", "Leaf"]}).encode()


def meta(root: Path, market: str, cat: str) -> Path:
    path = root / market / cat / f"metadata_{market}_{cat}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build(tmp_path: Path) -> tuple[Path, Path]:
    """A raw root with one real file, an inside link and three kinds of outside links."""
    root, outside = tmp_path / "xmarket", tmp_path / "outside"
    outside.mkdir()
    plain = outside / "secret.txt"
    plain.write_text(f"{SECRET}\nroot:x:0:0\n")
    gzipped = outside / "metadata_us_Stolen.json.gz"
    gzipped.write_bytes(gzip.compress(record("LEAK1", title=SECRET) + b"\n"))
    (outside / "Stolen").mkdir()
    (outside / "Stolen" / "metadata_us_Stolen.json.gz").write_bytes(gzipped.read_bytes())

    meta(root, "us", "Good").write_bytes(gzip.compress(record("G1") + b"\n" + record("G2") + b"\n"))
    # Inside link: another category's file pointing at a file inside the root.
    os.symlink(root / "us" / "Good" / "metadata_us_Good.json.gz", meta(root, "us", "Alias"))
    # File links out of the root: to plain text (would land in raw_text) and to gzip (would
    # become a product titled with the secret).
    os.symlink(plain, meta(root, "us", "Text"))
    os.symlink(gzipped, meta(root, "us", "Gz"))
    # A relative link climbing out.
    os.symlink(os.path.relpath(plain, meta(root, "us", "Rel").parent), meta(root, "us", "Rel"))
    # A category directory that is itself a link out of the root.
    os.symlink(outside / "Stolen", root / "us" / "Stolen", target_is_directory=True)
    return root, tmp_path / "data"


OUTSIDE = {
    "us/Text/metadata_us_Text.json.gz",
    "us/Gz/metadata_us_Gz.json.gz",
    "us/Rel/metadata_us_Rel.json.gz",
    "us/Stolen/metadata_us_Stolen.json.gz",
}


def test_links_out_of_the_raw_root_are_quarantined_unread(tmp_path):
    root, data = build(tmp_path)
    result = dg.materialize(
        INGEST_ASSETS,
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data)),
            "storage": CatretStorage(data_dir=str(data)),
            "xmarket": XMarketSource(root=str(root), market_priority=["us"]),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success

    tables = sorted((data / "assets").rglob("*.parquet"))
    assert tables
    for path in tables:
        # Every cell, lists included, as JSON text: parquet bytes may be compressed.
        assert SECRET not in pl.read_parquet(path).write_ndjson(), path.name

    q = pl.read_parquet(data / "assets" / "quarantine.parquet")
    links = q.filter(pl.col("reason") == "outside_raw_root")
    assert set(links["source_file"]) == OUTSIDE
    assert (links["line_no"] == 0).all() and (links["raw_text"] == "").all()
    assert links["detail"].str.contains("outside the raw root").all()

    raw = pl.read_parquet(data / "assets" / "raw_products.parquet")
    assert "LEAK1" not in set(raw["asin"])
    # The inside link is read: each asin comes from both files, one copy kept.
    dup = q.filter(pl.col("reason") == "duplicate_asin")
    both = {"us/Alias/metadata_us_Alias.json.gz", "us/Good/metadata_us_Good.json.gz"}
    assert dup.height == 2 and set(raw["source_file"]) | set(dup["source_file"]) == both
    assert set(raw["asin"]) == {"G1", "G2"}

    (mat,) = result.asset_materializations_for_node("ingest_raw")[:1]
    assert mat.metadata["lines_read"].value == raw.height + q.height


def test_reader_refuses_a_link_out_even_without_the_resource(tmp_path):
    root, _data = build(tmp_path)
    link = meta(root, "us", "Text")
    items = list(iter_metadata_lines(link, root=root))
    assert [(i.line_no, i.reason, i.raw_text) for i in items] == [(0, "outside_raw_root", "")]
    # The root is implied by the relative name, so a SourceFile alone is enough to check.
    sf = SourceFile(link, "us/Text/metadata_us_Text.json.gz", "us")
    assert sf.root == root
