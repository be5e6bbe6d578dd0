"""Hostile raw catalogue end to end: every broken file and line kind plus hostile image URLs
through ``dg.materialize`` of the ingest, catalogue and image assets. The run completes, every
line is a product or a quarantine row with a reason, and nothing is written outside the cache."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tracemalloc
import zlib
from pathlib import Path

import dagster as dg
import polars as pl

from catret_pipeline.catalogue.assets import ASSETS as CATALOGUE_ASSETS
from catret_pipeline.catalogue.assets import CHECKS as CATALOGUE_CHECKS
from catret_pipeline.images.assets import ASSETS as IMAGE_ASSETS
from catret_pipeline.images.assets import CHECKS as IMAGE_CHECKS
from catret_pipeline.images.resources import ImageFetcher
from catret_pipeline.ingest.assets import ASSETS as INGEST_ASSETS
from catret_pipeline.ingest.reader import iter_metadata_lines
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.images.test_fetch import (
    HTML,
    LOOPBACK_HOSTS,
    jpeg_bytes,
    png_declaring,
    serve,
)

LEAVES = [["Electronics", "Audio", "Speakers"], ["Electronics", "Cables", "USB"]]


def good(i: int, img: str | None = None) -> dict:
    rec = {
        "asin": f"G{i:03d}",
        "title": f"Good product {i}",
        "categories": LEAVES[i % 2],
        "features": [f"feature {i}"],
    }
    if img is not None:
        rec["imgUrl"] = json.dumps({img: [100, 100]})
    return rec


def jl(obj) -> bytes:
    return json.dumps(obj).encode()


def gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def meta_file(root: Path, market: str, cat: str) -> Path:
    return root / market / cat / f"metadata_{market}_{cat}.json.gz"


def bomb(expanded_mib: int, before: list[bytes], after: list[bytes]) -> bytes:
    """A gzip stream of ``expanded_mib`` MiB of one byte with no newline, between good lines."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(b"\n".join(before) + b"\n")]
    block = b"x" * (1 << 20)
    parts += [c.compress(block) for _ in range(expanded_mib)]
    parts += [c.compress(b"\n" + b"\n".join(after) + b"\n"), c.flush()]
    return b"".join(parts)


# (asin hint or None, line bytes, expected reason or None when it must become a product)
WRONG_TYPES = [
    ({"asin": 123, "title": "t", "categories": ["A"]}, "wrong_type:asin"),
    ({"asin": "WT1", "title": ["t"], "categories": ["A"]}, "wrong_type:title"),
    ({"asin": "WT2", "title": "t", "categories": "A > B"}, "wrong_type:categories"),
    ({"asin": "WT3", "title": "t", "categories": ["A", 3]}, "wrong_type:categories"),
    ({"asin": "WT4", "title": "t", "categories": ["A"], "features": "f"}, "wrong_type:features"),
    (
        {"asin": "WT5", "title": "t", "categories": ["A"], "productDetails": [1]},
        "wrong_type:productDetails",
    ),
    ({"asin": "WT6", "title": "t", "categories": ["A"], "imgUrl": 5}, "wrong_type:imgUrl"),
    (
        {"asin": "WT7", "title": "t", "categories": ["A"], "description": {"a": 1}},
        "wrong_type:description",
    ),
]


def write_hostile(root: Path, urls: dict[str, str]) -> dict[tuple[str, int], str]:
    """Writes the catalogue; returns ``{(file, line_no): reason}`` of every line to quarantine."""
    expected: dict[tuple[str, int], str] = {}
    lines: list[bytes] = []

    def add(data: bytes, reason: str | None) -> None:
        lines.append(data)
        if reason:
            expected[("us/Electronics/metadata_us_Electronics.json.gz", len(lines))] = reason

    for i in range(12):
        add(jl(good(i)), None)
    for j, (name, url) in enumerate(urls.items()):
        rec = good(100 + j, url)
        rec["asin"] = f"IMG_{name}"
        add(jl(rec), None)
    for rec, reason in WRONG_TYPES:
        add(jl(rec), reason)
    add(b'{"asin": "NU1", "title": "caf\xe9", "categories": ["A"]}', "invalid_utf8")
    add(b'{"asin": "NU2", "title": "\xff\xfe\x00", "categories": ["A"]}', "invalid_utf8")
    add(b'{"asin": "NUL", "title": "a\x00b", "categories": ["A"]}', "invalid_json")
    add(jl({**good(200), "description": "y" * 1_100_000}), "line_too_long")
    add(b"[" * 100_000 + b"]" * 100_000, "invalid_json")  # nesting deeper than any parser
    add(b"{'asin': __import__('os').system('touch /tmp/catret-pwned')}", "invalid_json")
    add(b"\xef\xbb\xbf" + jl(good(201)), None)  # a BOM is tolerated
    add(str(good(202)).encode(), None)  # Python literal, as XMarket writes it
    add(b"", None)  # blank: skipped, not counted
    add(jl(good(0)), "duplicate_asin")
    gz(meta_file(root, "us", "Electronics"), gzip.compress(b"\n".join(lines) + b"\n"))

    # A cut-off stream: its complete lines are kept, the break is one row.
    cut = gzip.compress(b"\n".join(jl(good(300 + i)) for i in range(50)) + b"\n")
    gz(meta_file(root, "us", "Books"), cut[: len(cut) * 2 // 3])
    # Not gzip at all, and an empty file.
    gz(meta_file(root, "us", "Toys"), jl(good(400)) + b"\n")
    expected[("us/Toys/metadata_us_Toys.json.gz", 0)] = "not_gzip"
    gz(meta_file(root, "uk", "Toys"), b"")
    expected[("uk/Toys/metadata_uk_Toys.json.gz", 0)] = "not_gzip"
    # A decompression bomb: 48 MiB of one line from ~50 KiB, between two good lines.
    gz(meta_file(root, "uk", "Garden"), bomb(48, [jl(good(500))], [jl(good(501))]))
    expected[("uk/Garden/metadata_uk_Garden.json.gz", 2)] = "line_too_long"
    return expected


def _snapshot(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and skip not in p.parents}


def test_hostile_catalogue_completes_and_reconciles(tmp_path):
    root, data, mirror = tmp_path / "xmarket", tmp_path / "data", tmp_path / "mirror"
    mirror.mkdir()
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(8, 8, seed=9))
    with serve() as srv:
        ok = jpeg_bytes(24, 24, seed=3)
        srv.routes["*"] = lambda h, _hit: h.send_body(ok)  # any other path: a real image
        urls = {
            "ok": srv.static("/images/I/ok.jpg", jpeg_bytes(20, 20, seed=1)),
            "hang": srv.hang("/images/I/hang.jpg"),
            "reset": srv.reset("/images/I/reset.jpg"),
            "html": srv.static("/images/I/captcha.jpg", HTML, ctype="text/html"),
            "pixel_bomb": srv.static(
                "/images/I/bomb.png", png_declaring(100_000, 100_000), ctype="image/png"
            ),
            "traversal": srv.url("/images/../../../../../tmp/evil.jpg"),
            "encoded_traversal": srv.url("/images/I/..%2F..%2F..%2Fsecret.jpg"),
            "query": srv.url("/images/I/q.jpg?name=../../../evil.sh&path=/etc/passwd"),
            "absolute": "/etc/passwd",
            "file": "file:///etc/passwd",
        }
        expected = write_hostile(root, urls)
        before = _snapshot(tmp_path, data)
        fetcher = ImageFetcher(
            mirror_dir=str(mirror),
            timeout_s=0.5,
            retries=1,
            backoff_s=0.01,
            concurrency=4,
            allow_hosts=LOOPBACK_HOSTS,
        )
        result = dg.materialize(
            [*INGEST_ASSETS, *CATALOGUE_ASSETS, *CATALOGUE_CHECKS, *IMAGE_ASSETS, *IMAGE_CHECKS],
            resources={
                "io_manager": ParquetIOManager(data_dir=str(data)),
                "storage": CatretStorage(data_dir=str(data)),
                "xmarket": XMarketSource(root=str(root)),
                "image_fetcher": fetcher,
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())

    raw = pl.read_parquet(data / "assets" / "raw_products.parquet")
    q = pl.read_parquet(data / "assets" / "quarantine.parquet")
    mat = result.asset_materializations_for_node("ingest_raw")[0]
    lines_read = mat.metadata["lines_read"].value
    assert lines_read == raw.height + q.height
    got = {(r["source_file"], r["line_no"]): r["reason"] for r in q.iter_rows(named=True)}
    for key, reason in expected.items():
        assert got.get(key) == reason, key
    books = q.filter(pl.col("source_file") == "us/Books/metadata_us_Books.json.gz")
    assert books["reason"].to_list() == ["corrupt_gzip"]
    assert set(got.values()) - {r for r in expected.values()} == {"corrupt_gzip"}
    assert q["detail"].null_count() == 0 and (q["raw_text"].str.len_chars() <= 500).all()
    asins = set(raw["asin"])
    assert {"G201", "G202", "G500", "G501", "G300"} <= asins
    assert not Path("/tmp/catret-pwned").exists()

    products = pl.read_parquet(data / "assets" / "products.parquet")
    assert products.height == raw.height
    images = pl.read_parquet(data / "assets" / "product_images.parquet")
    assert images.height == products.height
    by = {r["asin"]: r for r in images.iter_rows(named=True)}
    assert by["IMG_ok"]["status"] == "ok"
    for name in ("hang", "reset", "html", "pixel_bomb"):
        row = by[f"IMG_{name}"]
        assert row["status"] == "failed" and row["reason"], name
    for name in ("absolute", "file"):  # never fetched: not http(s)
        row = by[f"IMG_{name}"]
        assert row["status"] == "refused" and row["reason"].startswith("unsafe_url"), name
    assert by["IMG_pixel_bomb"]["reason"].startswith("decompression_bomb")
    assert by["IMG_html"]["reason"].startswith("not_an_image")
    # Traversal and query-string URLs may download, but only into hash-named cache files.
    for r in images.filter(pl.col("status") == "ok").iter_rows(named=True):
        rel = Path(r["cache_path"])
        assert rel.parts[0] == "image_cache" and ".." not in rel.parts
        assert rel.stem == r["sha256"]
        assert (data / rel).resolve().is_relative_to((data / "image_cache").resolve())
    # The mirror never serves a file outside itself (secret.jpg sits beside it).
    secret = hashlib.sha256((tmp_path / "secret.jpg").read_bytes()).hexdigest()
    assert secret not in set(images["sha256"].drop_nulls())
    # Nothing new anywhere outside the data dir, nothing in it but tables, cache and indexes.
    assert _snapshot(tmp_path, data) == before
    for p in data.rglob("*"):
        if p.is_file():
            assert p.relative_to(data).parts[0] in {"assets", "image_cache", "dagster_home"}, p


def test_gzip_bomb_is_read_in_bounded_memory(tmp_path):
    """256 MiB of one line from ~250 KiB of gzip: the line is cut to the limit as it streams."""
    f = tmp_path / "bomb.json.gz"
    f.write_bytes(bomb(256, [jl(good(1))], [jl(good(2))]))
    assert f.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        items = [(i.line_no, i.n_bytes, len(i.data), i.reason) for i in iter_metadata_lines(f)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert items[1] == (2, 256 << 20, 1_000_001, None)
    assert [i[0] for i in items] == [1, 2, 3] and items[2][3] is None
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_many_blank_lines_bomb_counts_nothing(tmp_path):
    """A stream of newlines expands a lot but holds no line: nothing to count, nothing kept."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = c.compress(b"\n" * (4 << 20)) + c.compress(jl(good(7)) + b"\n") + c.flush()
    f = tmp_path / "blank.json.gz"
    f.write_bytes(body)
    items = list(iter_metadata_lines(f))
    assert len(items) == 1 and items[0].line_no == (4 << 20) + 1
    assert os.path.getsize(f) < 100_000
