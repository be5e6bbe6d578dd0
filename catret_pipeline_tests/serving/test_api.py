"""The HTTP contract of ``catret serve``, over real HTTP against uvicorn on loopback."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse

import polars as pl
import pytest

from catret_pipeline_tests.serving.conftest import http_get


def _search(base: str, **params) -> tuple[int, dict]:
    r = http_get(f"{base}/api/search?{urllib.parse.urlencode(params)}")
    assert r.headers["content-type"].startswith("application/json")
    return r.status, r.json()


def test_health_names_the_serving_model_per_setting(base_url):
    r = http_get(f"{base_url}/health")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["settings"]) == {"all", "general", "specific"}
    for s in body["settings"].values():
        # No trained head in the tiny dir: the documented fallback, the text baseline.
        assert s["reason"] == "fallback"
        assert s["model"] == "minilm"
        assert s["products_indexed"] == 48
        assert s["index"] == "exact"


def test_tree_category_uses_its_precomputed_vector_over_the_whole_catalogue(base_url, tiny_dir):
    status, body = _search(base_url, q="Boots", k=8, setting="specific")
    assert status == 200
    assert body["query"] == "Boots"
    assert body["setting"] == "specific"
    assert body["model"] == "minilm"
    assert body["query_source"] == "precomputed"
    hits = body["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 9))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert set(hits[0]) == {"rank", "asin", "title", "score", "category_path", "image_url"}
    # Every product is searchable, not only the setting's test split (issue 14 acceptance).
    splits = dict(
        pl.read_parquet(tiny_dir / "assets" / "evaluation_pairs.parquet")
        .select("asin", "split")
        .unique("asin")
        .iter_rows()
    )
    assert {splits[h["asin"]] for h in hits} - {"test"}
    assert hits[0]["category_path"][-1] == "Boots"


def test_new_name_is_encoded_once_loaded(base_url):
    status, body = _search(base_url, q="winter footwear for hiking", k=3)
    assert status == 200
    assert body["query_source"] == "encoded"
    assert body["seen_in_train"] is False
    assert len(body["hits"]) == 3


def test_image_urls_serve_the_cached_bytes(base_url, tiny_dir):
    _, body = _search(base_url, q="Lamps", k=20)
    urls = [h["image_url"] for h in body["hits"] if h["image_url"]]
    assert urls and all(u.startswith("/images/image_cache/") for u in urls)
    r = http_get(base_url + urls[0])
    assert r.status == 200
    assert r.headers["content-type"] == "image/png"
    assert "immutable" in r.headers["cache-control"]
    assert r.body[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.body == (tiny_dir / urllib.parse.unquote(urls[0][len("/images/") :])).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/images/../assets/products.parquet",
        "/images/%2e%2e/assets/products.parquet",
        "/images/image_cache/..%2f..%2fassets%2fproducts.parquet",
        "/images//etc/passwd",
        "/images/assets/products.parquet",
        "/images/image_cache/00/" + "0" * 64 + ".png",
    ],
)
def test_images_outside_product_images_are_refused(base_url, path):
    r = http_get(base_url + path)
    assert r.status == 404
    assert b"PAR1" not in r.body and b"root:" not in r.body


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"q": ""}, 400, "empty"),
        ({}, 400, "empty"),
        ({"q": "   "}, 400, "empty"),
        ({"q": "x" * 10_000}, 400, "at most"),
        ({"q": "Boots\x00"}, 400, "control"),
        ({"q": "Bo\u202eots"}, 400, "control"),
        ({"q": "Boots", "setting": "nope"}, 400, "unknown setting"),
        ({"q": "Boots", "k": "0"}, 400, "between"),
        ({"q": "Boots", "k": "100000"}, 400, "between"),
        ({"q": "Boots", "k": "ten"}, 400, "integer"),
    ],
)
def test_bad_input_gets_a_clear_4xx(base_url, params, status, needle):
    got, body = _search(base_url, **params)
    assert got == status
    assert needle in body["error"]
    assert "Traceback" not in body["error"]


def test_categories_list_the_tree_with_seen_flags(base_url, tiny_dir):
    r = http_get(f"{base_url}/api/categories?setting=specific")
    assert r.status == 200
    nodes = r.json()["nodes"]
    tree = pl.read_parquet(tiny_dir / "assets" / "category_tree.parquet")
    assert {n["node_id"] for n in nodes} == set(tree["node_id"])
    pairs = pl.read_parquet(tiny_dir / "assets" / "evaluation_pairs.parquet").filter(
        (pl.col("setting") == "specific") & (pl.col("split") == "train")
    )
    trained = set(pairs["category_name"])
    assert {n["name"] for n in nodes if n["seen_in_train"]} == trained
    # Roots are never a specific-setting pair: the badge must say "not seen".
    assert not any(n["seen_in_train"] for n in nodes if n["depth"] == 1)


def test_category_page_ranks_the_node(base_url):
    nodes = http_get(f"{base_url}/api/categories").json()["nodes"]
    shoes = next(n for n in nodes if n["name"] == "Shoes")
    r = http_get(f"{base_url}/api/categories/{shoes['node_id']}")
    assert r.status == 200
    page = r.json()
    assert page["node"]["path"] == ["Clothing", "Shoes"]
    assert {c["name"] for c in page["children"]} == {"Boots", "Sandals"}
    assert len(page["hits"]) == 48  # k defaults to 50, clipped to the catalogue
    assert page["query_source"] == "precomputed"


def test_unknown_node_is_404_json(base_url):
    r = http_get(f"{base_url}/api/categories/ffffffffffffffff")
    assert r.status == 404
    assert "unknown category node" in r.json()["error"]


def test_unknown_route_is_json_not_html(base_url):
    r = http_get(f"{base_url}/nope")
    assert r.status == 404
    assert r.json()["status"] == 404


def test_page_and_openapi(base_url):
    r = http_get(base_url + "/")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/html")
    assert b"<datalist" in r.body
    assert "default-src 'none'" in r.headers["content-security-policy"]
    doc = http_get(base_url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/search", "/api/categories", "/api/categories/{node_id}"} <= set(doc["paths"])


def test_importing_the_app_imports_what_file_responses_use():
    # The first image response imported anyio's file module lazily in a request thread, and
    # two threads compiling at once failed one image request with CPython 3.11's "AST
    # constructor recursion depth mismatch" (suite run under pytest-xdist, 2026-12-07).
    code = (
        "import sys; import catret_pipeline.serving.app; "
        "print('anyio._core._fileio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
