"""The ``product_images`` asset through ``dg.materialize``, with a real HTTP server and mirror."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dagster as dg
import polars as pl

from catret_pipeline.images.assets import (
    ASSETS,
    CHECKS,
    acquire_product_images,
    product_images,
    product_images_cache_files_exist,
)
from catret_pipeline.images.cache import PRODUCT_IMAGES_SCHEMA, ImageCache
from catret_pipeline.images.resources import ImageFetcher
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.images.test_fetch import (
    HTML,
    LOOPBACK_HOSTS,
    jpeg_bytes,
    png_bytes,
    serve,
)

PRODUCTS = dg.AssetSpec("products")


def write_products(data_dir: Path, rows: list[tuple[str, str | None]]) -> None:
    path = asset_file(data_dir, ["products"])
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "asin": [a for a, _ in rows],
            "market": ["us"] * len(rows),
            "title": [f"title {a}" for a, _ in rows],
            "image_url": [u for _, u in rows],
        },
        schema={"asin": pl.String, "market": pl.String, "title": pl.String, "image_url": pl.String},
    ).write_parquet(path)


def run(data_dir: Path, fetcher: ImageFetcher, run_config: dict | None = None):
    result = dg.materialize(
        [PRODUCTS, product_images, product_images_cache_files_exist],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
            "image_fetcher": fetcher,
        },
        instance=dg.DagsterInstance.ephemeral(),
        selection=[product_images.key],
        run_config=run_config,
    )
    assert result.success
    table = pl.read_parquet(asset_file(data_dir, ["product_images"]))
    (mat,) = [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == product_images.key
    ]
    meta = {k: v.value for k, v in mat.metadata.items()}
    (check,) = result.get_asset_check_evaluations()
    return table, meta, check


def test_exports():
    assert [product_images] == ASSETS
    assert [product_images_cache_files_exist] == CHECKS
    assert product_images.group_names_by_key[product_images.key] == "images"


def test_materialize_product_images_and_rerun_downloads_nothing(tmp_path):
    data_dir = tmp_path / "data"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    mirror_img = png_bytes(12, 8)
    (mirror / "m1.png").write_bytes(mirror_img)
    with serve() as srv:
        a_img, b_img = jpeg_bytes(40, 30, seed=1), jpeg_bytes(16, 16, seed=2)
        url_a = srv.static("/images/I/a.jpg", a_img)
        url_b = srv.flaky("/images/I/b.jpg", b_img, failures=1)
        url_html = srv.static("/images/I/robot.jpg", HTML, ctype="text/html")
        rows = [
            ("P1", url_a),
            ("P2", url_a + "  "),  # same URL after stripping: fetched once
            ("P3", url_b),
            ("P4", srv.url("/images/I/gone.jpg")),
            ("P5", None),
            ("P6", ""),
            (
                "P7",
                srv.url("/mirror-only/m1.png?x=1"),
            ),  # served by no route: must come from the mirror
            ("P8", url_html),
            ("P9", "file:///etc/passwd"),
        ]
        write_products(data_dir, rows)
        fetcher = ImageFetcher(
            mirror_dir=str(mirror),
            timeout_s=1.0,
            retries=2,
            backoff_s=0.01,
            concurrency=3,
            allow_hosts=LOOPBACK_HOSTS,
        )

        table, meta, check = run(data_dir, fetcher)
        hits_after_first = srv.total_hits()

        assert table.columns == list(PRODUCT_IMAGES_SCHEMA)
        assert table.height == len(rows)
        assert table["asin"].to_list() == [a for a, _ in rows]
        by = {r["asin"]: r for r in table.iter_rows(named=True)}
        assert [by[a]["status"] for a, _ in rows] == [
            "ok", "ok", "ok", "failed", "missing", "missing", "ok", "failed", "refused",
        ]  # fmt: skip
        assert by["P4"]["reason"].startswith("http_404")
        assert by["P5"]["reason"] == by["P6"]["reason"] == "no_url"
        assert by["P8"]["reason"].startswith("not_an_image")
        assert by["P9"]["reason"].startswith("unsafe_url")
        assert by["P1"]["sha256"] == by["P2"]["sha256"] == hashlib.sha256(a_img).hexdigest()
        assert (by["P1"]["width"], by["P1"]["height"], by["P1"]["bytes"]) == (40, 30, len(a_img))
        assert by["P7"]["sha256"] == hashlib.sha256(mirror_img).hexdigest()
        assert by["P7"]["cache_path"].endswith(".png")
        for r in by.values():
            if r["status"] == "ok":
                assert (data_dir / r["cache_path"]).read_bytes() is not None
                assert r["cache_path"].startswith("image_cache/")
            else:
                assert r["cache_path"] is None and r["sha256"] is None
        assert srv.hits["/images/I/a.jpg"] == 1
        assert srv.hits["/images/I/b.jpg"] == 2
        assert srv.hits["/mirror-only/m1.png"] == 0

        assert (meta["n_ok"], meta["n_missing"], meta["n_failed"], meta["n_refused"]) == (
            4,
            2,
            2,
            1,
        )
        assert meta["reason_counts"] == {
            "http_404": 1,
            "no_url": 2,
            "not_an_image": 1,
            "unsafe_url": 1,
        }
        assert (meta["from_mirror"], meta["downloaded"], meta["reused"]) == (1, 2, 0)
        assert meta["bytes_downloaded"] >= len(a_img) + len(b_img)
        assert meta["files_written_to_cache"] == 3
        assert check.passed

        # Second run: ok rows come from the cache index; only the failures are retried.
        table2, meta2, _ = run(data_dir, fetcher)
        assert table2.equals(table)
        assert meta2["reused"] == 3  # distinct ok URLs: a, b, m1
        assert meta2["files_written_to_cache"] == 0
        assert srv.hits["/images/I/a.jpg"] == 1 and srv.hits["/images/I/b.jpg"] == 2
        # the still-failing 404 and HTML URLs were tried again, nothing else
        assert srv.total_hits() == hits_after_first + 2

        # Third run, failures not retried and one cache file deleted: exactly that one comes back
        # over the network. The refused file:// URL is judged again (no I/O): refusals are never
        # kept, so a changed allow-list applies on the next run.
        os.remove(data_dir / by["P1"]["cache_path"])
        cfg = {"ops": {"product_images": {"config": {"retry_failed": False}}}}
        table3, meta3, check3 = run(data_dir, fetcher, cfg)
        assert srv.total_hits() == hits_after_first + 3
        assert srv.hits["/images/I/a.jpg"] == 2
        assert (meta3["reused"], meta3["kept_failed"], meta3["fetched"]) == (2, 2, 2)
        assert table3.equals(table2)
        assert check3.passed


def test_check_flags_a_missing_cache_file(tmp_path):
    data_dir = tmp_path / "data"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.jpg").write_bytes(jpeg_bytes())
    write_products(data_dir, [("P1", "https://img.example/x.jpg")])
    fetcher = ImageFetcher(mirror_dir=str(mirror), download=False)
    table, _meta, _check = run(data_dir, fetcher)
    os.remove(data_dir / table["cache_path"][0])
    result = dg.materialize(
        [PRODUCTS, product_images, product_images_cache_files_exist],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
            "image_fetcher": fetcher,
        },
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.checks(product_images_cache_files_exist),
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed


def test_acquire_without_dagster_offline(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.jpg").write_bytes(jpeg_bytes())
    products = pl.DataFrame(
        {"asin": ["A", "B", "C"], "image_url": ["https://h/x.jpg", "https://h/y.jpg", None]}
    )
    fetcher = ImageFetcher(mirror_dir=str(mirror), download=False)
    logs: list[str] = []
    table, stats = acquire_product_images(
        products, None, fetcher, ImageCache(tmp_path / "d"), log=logs.append
    )
    assert table["status"].to_list() == ["ok", "failed", "missing"]
    assert table["reason"][1].startswith("not_in_mirror")
    assert (stats.fetched, stats.from_mirror, stats.network_bytes) == (2, 1, 0)
    assert any("to fetch" in m for m in logs) and any("fetched 2/2" in m for m in logs)
    empty, _ = acquire_product_images(products.head(0), None, fetcher, ImageCache(tmp_path / "d"))
    assert empty.height == 0 and empty.columns == list(PRODUCT_IMAGES_SCHEMA)


def test_images_of_removed_products_are_pruned_one_refresh_later(tmp_path):
    data_dir = tmp_path / "data"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.png").write_bytes(png_bytes(10, 10))
    (mirror / "b.png").write_bytes(png_bytes(12, 9))
    fetcher = ImageFetcher(mirror_dir=str(mirror))
    url = "https://m.media-amazon.com/images/I/{}.png"
    write_products(data_dir, [("P1", url.format("a")), ("P2", url.format("b"))])
    table, meta, _ = run(data_dir, fetcher)
    files = dict(table.select("asin", "cache_path").iter_rows())
    foreign = data_dir / "image_cache" / "notes.txt"
    foreign.write_text("not a cached image")
    assert meta["pruned_files"] == 0

    write_products(data_dir, [("P1", url.format("a"))])  # P2 removed
    _, meta, _ = run(data_dir, fetcher)
    assert meta["pruned_files"] == 0  # the last good table still refers to b
    assert (data_dir / files["P2"]).exists()

    _, meta, check = run(data_dir, fetcher)
    assert (meta["pruned_files"], meta["pruned_bytes"]) == (1, len(png_bytes(12, 9)))
    assert not (data_dir / files["P2"]).exists()
    assert (data_dir / files["P1"]).exists() and foreign.exists()
    assert check.passed

    # Switched off, nothing is deleted.
    write_products(data_dir, [("P2", url.format("b"))])
    run(data_dir, fetcher)
    write_products(data_dir, [("P3", None)])
    cfg = {"ops": {"product_images": {"config": {"prune_unreferenced": False}}}}
    run(data_dir, fetcher, cfg)
    _, meta, _ = run(data_dir, fetcher, cfg)
    assert "pruned_files" not in meta
    assert (data_dir / files["P2"]).exists() and (data_dir / files["P1"]).exists()
