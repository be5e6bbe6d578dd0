"""Binary artefacts on an ``artefact_store`` URL: a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from upath import UPath

from catret_pipeline.images.cache import ImageCache
from catret_pipeline.retrieval.hnsw_build import build_index
from catret_pipeline.retrieval.hnsw_params import HnswParams
from catret_pipeline.retrieval.hnsw_store import load_index, save_index
from catret_pipeline.storage.artefacts import (
    artefact_path,
    artefact_root,
    is_remote,
    relative_key,
    remove_tree,
    staged_input,
)
from catret_pipeline.storage.atomic import atomic_path, atomic_write_bytes
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.object_store import s3_server


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture()
def store(s3, monkeypatch, request):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    bucket = s3.bucket(request.node.name.replace("_", "-")[:50].strip("-").lower())
    return UPath(f"{bucket}/run")


def test_roots_and_keys(tmp_path):
    assert artefact_root(tmp_path) == tmp_path.resolve()
    assert artefact_root(tmp_path, f"file://{tmp_path}/x") == (tmp_path / "x").resolve()
    with pytest.raises(ValueError, match="absolute"):
        artefact_root(tmp_path, "relative/x")
    remote = artefact_root(tmp_path, "s3://bucket/prefix")
    assert is_remote(remote) and remote.path.endswith("bucket/prefix")
    key = artefact_path(remote, "indexes", "clip", "all.bin")
    assert relative_key(remote, key) == "indexes/clip/all.bin"
    for bad in (("..", "x"), ("/etc", "passwd"), ("a/../../b",)):
        with pytest.raises(ValueError, match="escapes"):
            artefact_path(remote, *bad)
        with pytest.raises(ValueError, match="escapes"):
            artefact_path(tmp_path.resolve(), *bad)


def test_storage_resource_puts_artefacts_on_the_store_and_the_catalogue_local(tmp_path, store):
    storage = CatretStorage(data_dir=str(tmp_path), artefact_store=str(store))
    assert storage.path("models", "m", "all.pt") == store / "models" / "m" / "all.pt"
    assert storage.local_path("catret.duckdb") == tmp_path.resolve() / "catret.duckdb"
    assert CatretStorage(data_dir=str(tmp_path)).path("x") == tmp_path.resolve() / "x"


def test_failed_write_keeps_the_previous_object(store):
    target = store / "models" / "m" / "all.pt"
    atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new one")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"


def test_hnsw_index_round_trip_through_the_store(store):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(64, 8)).astype(np.float32)
    index = build_index(vectors, None, HnswParams())
    labels = pl.DataFrame({"row_id": np.arange(64), "asin": [f"A{i:03d}" for i in range(64)]})
    bin_path, lab_path = (
        store / "indexes" / "m" / "all.bin",
        store / "indexes" / "m" / "all.labels.parquet",
    )
    meta = save_index(index, bin_path, labels, lab_path, extra={"model": "m"})
    assert bin_path.stat().st_size == meta["index_bytes"]
    loaded = load_index(bin_path, lab_path)
    assert loaded.n == 64 and loaded.meta["model"] == "m"
    np.testing.assert_allclose(
        loaded.vectors()[5], vectors[5] / np.linalg.norm(vectors[5]), atol=1e-6
    )
    # A binary from another save is refused, as locally.
    other = build_index(vectors[:, ::-1].copy(), None, HnswParams())
    with staged_input(bin_path) as local:
        other.save_index(str(local))
        bin_path.fs.put_file(str(local), bin_path.path)
    with pytest.raises(ValueError, match="sha256|bytes"):
        load_index(bin_path, lab_path)


def test_staged_input_cleans_up(store, tmp_path):
    target = store / "a.bin"
    target.write_bytes(b"payload")
    with staged_input(target) as local:
        assert local.read_bytes() == b"payload"
        staged = local
    assert not staged.exists()
    # A local path is yielded unchanged.
    with staged_input(tmp_path) as same:
        assert same == tmp_path


def test_image_cache_on_the_store(store):
    cache = ImageCache(store)
    sha, rel, wrote = cache.put(b"\xff\xd8jpeg-bytes", "jpg")
    assert wrote and rel.startswith("image_cache/") and cache.has(rel, 12)
    assert cache.put(b"\xff\xd8jpeg-bytes", "jpg")[2] is False  # same content: nothing written
    _, other, _ = cache.put(b"\x89PNG-bytes", "png")
    assert sorted(cache.rel(p) for p in cache.files()) == sorted([rel, other])
    assert cache.prune({rel}) == (1, 10)
    assert not cache.has(other) and cache.has(rel)


def test_remove_tree_on_the_store(store):
    (store / "checkpoints" / "t" / "part-1.parquet").write_bytes(b"x")
    (store / "checkpoints" / "t" / "part-2.parquet").write_bytes(b"y")
    remove_tree(store / "checkpoints" / "t")
    assert not (store / "checkpoints" / "t" / "part-1.parquet").exists()
    remove_tree(store / "checkpoints" / "t")  # already gone: fine
