"""Content-addressed cache, URL index and mirror lookup, including hostile names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catret_pipeline.images.cache import (
    PRODUCT_IMAGES_SCHEMA,
    ImageCache,
    parse_cache_path,
    previous_index,
    relative_cache_path,
)
from catret_pipeline.images.fetch import (
    FetchOptions,
    fetch_one,
    iter_fetch,
    mirror_file_name,
    mirror_lookup,
)
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.images.test_fetch import (
    HTML,
    LOOPBACK,
    closed_port,
    jpeg_bytes,
    serve,
)

SHA = "ab" + "0" * 62


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- layout


def test_layout_and_put_is_idempotent(tmp_path):
    cache = ImageCache.from_storage(CatretStorage(data_dir=str(tmp_path)))
    body = jpeg_bytes()
    sha = hashlib.sha256(body).hexdigest()
    got_sha, rel, wrote = cache.put(body, "jpg")
    assert (got_sha, rel, wrote) == (sha, f"image_cache/{sha[:2]}/{sha}.jpg", True)
    assert (tmp_path / rel).read_bytes() == body
    assert cache.put(body, "jpg") == (sha, rel, False)
    assert all_files(tmp_path) == {rel}, "no temp files left behind"
    assert cache.has(rel, len(body)) and not cache.has(rel, len(body) + 1)
    assert [cache.rel(p) for p in cache.files()] == [rel]


def test_put_rewrites_a_damaged_file(tmp_path):
    cache = ImageCache(tmp_path)
    body = jpeg_bytes()
    _sha, rel, _ = cache.put(body, "jpg")
    (tmp_path / rel).write_bytes(body[:10])
    assert cache.put(body, "jpg")[2] is True
    assert (tmp_path / rel).read_bytes() == body


@pytest.mark.parametrize(
    ("sha", "ext"),
    [
        ("../" + "a" * 61, "jpg"),
        (SHA.upper(), "jpg"),
        (SHA, "exe"),
        (SHA, "jpg/../../x"),
        ("", "jpg"),
    ],
)
def test_cache_keys_are_validated(sha, ext):
    with pytest.raises(ValueError):
        relative_cache_path(sha, ext)


@pytest.mark.parametrize(
    "rel",
    [
        f"image_cache/ab/{SHA}.jpg/../../../etc/passwd",
        f"/image_cache/ab/{SHA}.jpg",
        f"image_cache/cd/{SHA}.jpg",  # prefix does not match the hash
        f"image_cache/ab/{SHA}.exe",
        f"image_cache\\ab\\{SHA}.jpg",
        f"../image_cache/ab/{SHA}.jpg",
        None,
        42,
    ],
)
def test_parse_cache_path_rejects_anything_unusual(rel):
    assert parse_cache_path(rel) is None


def test_parse_cache_path_roundtrip():
    assert parse_cache_path(relative_cache_path(SHA, "png")) == (SHA, "png")


# --------------------------------------------------------------------------- mirror


def test_mirror_file_name_uses_last_segment_without_query():
    assert mirror_file_name("https://m.media-amazon.com/images/I/71-Xm._AC_SX569_.jpg?x=1#f") == (
        "71-Xm._AC_SX569_.jpg"
    )
    assert mirror_file_name("https://h/a/b%20c.jpg") == "b c.jpg"
    assert mirror_file_name("https://h/a/../../secret.jpg") == "secret.jpg"
    for hostile in (
        "https://h/..%2F..%2Fsecret.jpg",
        "https://h/%2Fetc%2Fpasswd",
        "https://h/..",
        "https://h/a/%2E%2E",
        "https://h/",
        "https://h/a%00.jpg",
        "https://h/..%5C..%5Cwin.jpg",
    ):
        assert mirror_file_name(hostile) is None, hostile


@settings(max_examples=120, deadline=None)
@given(st.text(max_size=60))
def test_mirror_file_name_is_always_a_plain_name(tail):
    name = mirror_file_name("https://h/" + tail)
    assert name is None or (name not in (".", "..") and not any(c in name for c in "/\\\x00"))


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    (root / "b c.jpg").write_bytes(jpeg_bytes(seed=2))
    (root / "ünï.jpg").write_bytes(jpeg_bytes(seed=3))
    (root / "page.jpg").write_bytes(HTML)
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(seed=4))  # outside the mirror
    (root / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "inside.jpg").symlink_to(root / "a.jpg")
    (root / "sub").mkdir()
    return root


def test_mirror_lookup_never_leaves_the_mirror(mirror, tmp_path):
    secret = (tmp_path / "secret.jpg").resolve()
    for url in (
        "https://h/..%2Fsecret.jpg",
        "https://h/x/../secret.jpg",
        "https://h/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
        "https://h/escape.jpg",  # symlink pointing outside
        "https://h/sub",  # a directory
        "https://h/" + "x" * 300 + ".jpg",  # name too long for the file system
    ):
        found = mirror_lookup(mirror, url)
        assert found is None, (url, found)
    assert (
        mirror_lookup(mirror, "https://h/i/a.jpg?size=../../secret.jpg")
        == (mirror / "a.jpg").resolve()
    )
    assert mirror_lookup(mirror, "https://h/b%20c.jpg") == (mirror / "b c.jpg").resolve()
    assert mirror_lookup(mirror, "https://h/%C3%BCn%C3%AF.jpg") == (mirror / "ünï.jpg").resolve()
    assert mirror_lookup(mirror, "https://h/inside.jpg") == (mirror / "a.jpg").resolve()
    assert mirror_lookup("", "https://h/a.jpg") is None


def test_mirror_hit_needs_no_network(mirror):
    dead = f"http://127.0.0.1:{closed_port()}"
    offline = FetchOptions(mirror_dir=str(mirror), download=False)
    r = fetch_one(f"{dead}/images/I/a.jpg?v=2", offline)
    assert (r.status, r.source, r.network_bytes) == ("ok", "mirror", 0)
    assert r.sha256 == hashlib.sha256((mirror / "a.jpg").read_bytes()).hexdigest()
    miss = fetch_one(f"{dead}/images/I/zzz.jpg", offline)
    assert (miss.status, miss.reason) == ("failed", "not_in_mirror")
    escaped = fetch_one(f"{dead}/..%2Fsecret.jpg", offline)
    assert (escaped.status, escaped.reason) == ("failed", "not_in_mirror")
    bad = fetch_one(f"{dead}/page.jpg", offline)
    assert (bad.status, bad.reason) == ("failed", "not_an_image")
    # unsafe schemes are refused before the mirror is consulted
    assert fetch_one("file:///x/a.jpg", offline).reason == "unsafe_url"


def test_bad_mirror_copy_falls_back_to_download(mirror):
    with serve() as srv:
        body = jpeg_bytes(seed=9)
        url = srv.static("/p/page.jpg", body)
        r = fetch_one(
            url, FetchOptions(mirror_dir=str(mirror), timeout_s=1, retries=0, allow=LOOPBACK)
        )
        assert (r.status, r.source) == ("ok", "download")
        assert r.sha256 == hashlib.sha256(body).hexdigest()


# --------------------------------------------------------------------------- hostile URLs end to end


def test_hostile_urls_only_ever_write_hash_names_inside_the_cache(tmp_path):
    data_dir = tmp_path / "data"
    cache = ImageCache.from_storage(CatretStorage(data_dir=str(data_dir)))
    with serve() as srv:
        body = jpeg_bytes(seed=5)
        srv.routes["*"] = lambda h, _hit: h.send_body(body)
        urls = [
            srv.url("/..%2F..%2F..%2Fevil.jpg"),
            srv.url("/a/../../../../tmp/evil.jpg"),
            srv.url("/%2Fetc%2Fcron.d%2Fevil"),
            srv.url("/img/x.jpg?name=../../../evil.sh&ext=/etc/passwd"),
            srv.url("/img/%00%0a%20weird%E2%80%AE.gpj"),
            srv.url("/"),
        ]

        def store(result):
            _sha, rel, _ = cache.put(result.data, result.ext)
            result.cache_path, result.data = rel, None
            return result

        results = list(
            iter_fetch(urls, FetchOptions(timeout_s=1, retries=0, allow=LOOPBACK), 3, store)
        )
    assert {r.status for r in results} == {"ok"}
    sha = hashlib.sha256(body).hexdigest()
    assert all_files(tmp_path) == {f"data/image_cache/{sha[:2]}/{sha}.jpg"}


# --------------------------------------------------------------------------- URL index


def _previous(tmp_path, rows):
    return pl.DataFrame(rows, schema=PRODUCT_IMAGES_SCHEMA, orient="row")


def test_previous_index_reuses_only_verified_rows(tmp_path):
    cache = ImageCache(tmp_path)
    good, gone, resized = jpeg_bytes(seed=1), jpeg_bytes(seed=2), jpeg_bytes(seed=3)
    sg, rg, _ = cache.put(good, "jpg")
    s2, r2, _ = cache.put(gone, "jpg")
    s3, r3, _ = cache.put(resized, "jpg")
    os.remove(tmp_path / r2)
    outside = tmp_path.parent / "outside.jpg"
    outside.write_bytes(good)
    prev = _previous(
        tmp_path,
        [
            ("A", "u/good", "ok", None, rg, sg, len(good), 32, 24),
            ("B", "u/gone", "ok", None, r2, s2, len(gone), 32, 24),
            ("C", "u/resized", "ok", None, r3, s3, len(resized) + 1, 32, 24),
            ("D", "u/tamper", "ok", None, "../outside.jpg", sg, len(good), 32, 24),
            ("E", "u/wrongsha", "ok", None, rg, s3, len(good), 32, 24),
            ("F", "u/dead", "failed", "http_404: Not Found", None, None, None, None, None),
            ("G", None, "missing", "no_url", None, None, None, None, None),
        ],
    )
    index, notes = previous_index(prev, cache)
    assert set(index) == {"u/good"}
    assert "4 previous ok URLs not reused" in notes[0]
    index, _ = previous_index(prev, cache, include_failed=True)
    assert set(index) == {"u/good", "u/dead"}


def test_previous_index_ignores_an_older_schema(tmp_path):
    index, notes = previous_index(
        pl.DataFrame({"asin": ["A"], "image_url": ["u"]}), ImageCache(tmp_path)
    )
    assert index == {} and "lacks columns" in notes[0]
    assert previous_index(None, ImageCache(tmp_path)) == ({}, [])
