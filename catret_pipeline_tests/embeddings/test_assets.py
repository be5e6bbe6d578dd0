"""The embedding assets through `dg.materialize` on a tiny catalogue: incremental across runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from catret_pipeline.embeddings.assets import ASSETS, DEFAULT_CATEGORY_PROMPT
from catret_pipeline.embeddings.category_assets import sha1_text
from catret_pipeline.embeddings.config import EmbeddingConfig
from catret_pipeline.embeddings.encoding import Encoded
from catret_pipeline.embeddings.runner import EmbeddingJob, run_incremental
from catret_pipeline.encoders.openclip import TINY_MODEL
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

UPSTREAM = [dg.AssetSpec("products"), dg.AssetSpec("product_images"), dg.AssetSpec("category_tree")]
NAMES = [a.key.to_user_string() for a in ASSETS]


def _sha1(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


def write_products(data: Path, titles: dict[str, str]) -> None:
    attrs = {
        "A1": ["Material: leather", "Colour: red"],
        "A2": ["Material: wool"],
        "A3": [],
        "A4": ["Colour: red", "Size: XL"],
    }
    rows = [
        {
            "asin": asin,
            "title": title,
            "attributes": attrs[asin],
            "title_hash": _sha1(title),
            "attributes_hash": _sha1("\x1f".join(attrs[asin])),
            "image_hash": None,
        }
        for asin, title in titles.items()
    ]
    schema = {
        "asin": pl.String,
        "title": pl.String,
        "attributes": pl.List(pl.String),
        "title_hash": pl.String,
        "attributes_hash": pl.String,
        "image_hash": pl.String,
    }
    atomic_write_parquet(pl.DataFrame(rows, schema=schema), data / "assets" / "products.parquet")


def write_images(data: Path) -> None:
    rows = []
    for i, asin in enumerate(["A1", "A2", "A3", "A4"]):
        rng = np.random.default_rng(i)
        img = Image.fromarray((rng.random((48, 40, 3)) * 255).astype("uint8"))
        rel = f"image_cache/{i:02d}/{asin}.png"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(data / rel)
        sha = hashlib.sha256((data / rel).read_bytes()).hexdigest()
        status = "missing" if asin == "A3" else "ok"
        rows.append(
            {
                "asin": asin,
                "status": status,
                "cache_path": rel if status == "ok" else None,
                "sha256": sha,
            }
        )
    # A4's cached file is corrupt: must be reported, not crash the run
    (data / rows[3]["cache_path"]).write_bytes(b"garbage")
    atomic_write_parquet(pl.DataFrame(rows), data / "assets" / "product_images.parquet")


def write_tree(data: Path) -> None:
    tree = pl.DataFrame(
        {
            "node_id": ["n1", "n2", "n3"],
            "name": ["Clothing", "Shoes", "Scarves"],
            "parent_id": [None, "n1", "n1"],
            "depth": [1, 2, 2],
        }
    )
    atomic_write_parquet(tree, data / "assets" / "category_tree.parquet")


TITLES = {"A1": "red leather shoe", "A2": "wool scarf", "A3": "phone case", "A4": "xl t-shirt"}


@pytest.fixture(scope="module")
def encoders():
    clip = OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", batch_size=2)
    text = TextEncoder(
        model_name_or_path="bundled:all-MiniLM-L6-v2", precision="fp32", batch_size=4
    )
    clip.model()
    text.model()
    return clip, text


def materialize(data: Path, encoders, clip=None, run_config=None) -> dict[str, dict]:
    tiny_clip, text = encoders
    result = dg.materialize(
        [*UPSTREAM, *ASSETS],
        selection=NAMES,
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data)),
            "storage": CatretStorage(data_dir=str(data)),
            "clip": clip or tiny_clip,
            "text_encoder": text,
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config,
    )
    assert result.success
    meta = {}
    for name in NAMES:
        mats = result.asset_materializations_for_node(name)
        meta[name] = {k: v.value for k, v in mats[0].metadata.items()}
    return meta


def read(data: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(data / "assets" / f"{name}.parquet")


def test_materialize_twice_second_run_encodes_nothing(tmp_path, encoders):
    data = tmp_path / "data"
    write_products(data, TITLES)
    write_images(data)
    write_tree(data)

    first = materialize(data, encoders)
    assert first["image_embeddings"]["encoded"] == 2  # A1, A2; A3 missing, A4 corrupt
    assert first["image_embeddings"]["failed"] == 1
    assert "A4" in first["image_embeddings"]["failures"]
    assert first["title_embeddings"]["encoded"] == 4
    assert first["category_clip_embeddings"]["encoded"] == 3
    assert first["title_embeddings"]["dim"] == 384 and first["title_clip_embeddings"]["dim"] == 128

    images = read(data, "image_embeddings")
    assert images["asin"].to_list() == ["A1", "A2"]
    assert images.schema["embedding"] == pl.Array(pl.Float32, 128)
    attrs = read(data, "attribute_embeddings")
    assert attrs["has_attributes"].to_list() == [True, True, False, True]
    emb = np.stack(attrs["embedding"].to_numpy())
    assert not emb[2].any()
    np.testing.assert_allclose(np.linalg.norm(emb[[0, 1, 3]], axis=1), 1.0, atol=1e-5)
    cats = read(data, "category_clip_embeddings")
    assert cats.columns[:2] == ["node_id", "name"]
    assert cats["content_hash"][0] == sha1_text(
        DEFAULT_CATEGORY_PROMPT.replace("{name}", "Clothing")
    )
    titles = read(data, "title_embeddings")
    assert set(titles["model_id"]) == {encoders[1].model_id}

    second = materialize(data, encoders)
    for name in NAMES:
        assert second[name]["encoded"] == 0, name
    assert second["title_embeddings"]["reused"] == 4
    # the corrupt image is retried (and fails again) rather than silently forgotten
    assert second["image_embeddings"]["failed"] == 1
    assert read(data, "title_embeddings").equals(titles)
    assert not (data / "checkpoints").exists() or not any((data / "checkpoints").rglob("*.parquet"))

    # one title edited, one product removed: exactly that row re-encoded, one dropped
    changed = {"A1": "red leather shoe", "A2": "merino wool scarf", "A3": "phone case"}
    write_products(data, changed)
    third = materialize(data, encoders)
    assert (third["title_embeddings"]["encoded"], third["title_embeddings"]["dropped"]) == (1, 1)
    assert third["title_clip_embeddings"]["encoded"] == 1
    assert third["attribute_embeddings"]["encoded"] == 0
    assert third["image_embeddings"]["encoded"] == 0 and third["image_embeddings"]["failed"] == 0

    # another model: everything it feeds is re-encoded
    fourth = materialize(
        data, encoders, clip=OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", seed=1)
    )
    assert fourth["image_embeddings"]["encoded"] == 2
    assert fourth["title_clip_embeddings"]["encoded"] == 3
    assert fourth["title_embeddings"]["encoded"] == 0


def test_resumes_from_checkpoint_parts(tmp_path, encoders):
    data = tmp_path / "data"
    write_products(data, TITLES)
    write_images(data)
    write_tree(data)
    materialize(data, encoders)
    # Simulate a run killed mid-way: the table is gone, a checkpoint part holds some rows.
    done = read(data, "title_embeddings")
    (data / "assets" / "title_embeddings.parquet").unlink()
    storage = CatretStorage(data_dir=str(data))
    storage.write_table(done.head(3), "checkpoints", "title_embeddings", "part-1.parquet")
    again = materialize(
        data, encoders, run_config={"ops": {"title_embeddings": {"config": {"chunk_rows": 1}}}}
    )
    assert (again["title_embeddings"]["encoded"], again["title_embeddings"]["reused"]) == (1, 3)
    resumed = read(data, "title_embeddings")
    assert resumed.drop("embedding").equals(done.drop("embedding"))
    # the re-encoded row sat in a different batch: equal up to float noise
    np.testing.assert_allclose(
        np.stack(resumed["embedding"].to_numpy()), np.stack(done["embedding"].to_numpy()), atol=1e-5
    )
    assert not (data / "checkpoints" / "title_embeddings").exists()


def test_category_prompt_change_reencodes(tmp_path, encoders):
    data = tmp_path / "data"
    write_products(data, TITLES)
    write_images(data)
    write_tree(data)
    materialize(data, encoders)
    cfg = {"ops": {"category_clip_embeddings": {"config": {"prompt": "{name}"}}}}
    again = materialize(data, encoders, run_config=cfg)
    assert again["category_clip_embeddings"]["encoded"] == 3
    assert again["category_embeddings"]["encoded"] == 0


def test_interrupted_run_leaves_checkpoints_that_the_next_run_reuses(tmp_path):
    storage = CatretStorage(data_dir=str(tmp_path))
    current = pl.DataFrame(
        {"asin": [f"P{i}" for i in range(5)], "title": [f"t{i}" for i in range(5)]}
    ).with_columns(pl.col("title").alias("content_hash"))
    calls: list[list[str]] = []

    class Encoder:
        model_id, dim, extra = "m", 3, ()

        def __init__(self, fail_after=None):
            self.fail_after = fail_after

        def encode(self, rows, progress):
            if self.fail_after is not None and len(calls) >= self.fail_after:
                raise KeyboardInterrupt("killed")
            calls.append(rows["asin"].to_list())
            vecs = np.ones((rows.height, 3), dtype=np.float32) / np.sqrt(3)
            progress(rows.height, rows.height)
            return Encoded(rows, vecs)

    cfg = EmbeddingConfig(chunk_rows=2)
    log = dg.build_asset_context().log
    with pytest.raises(KeyboardInterrupt):
        run_incremental(log, storage, EmbeddingJob("t_emb", current, ("asin",), Encoder(2)), cfg)
    assert len(list((tmp_path / "checkpoints" / "t_emb").glob("part-*.parquet"))) == 2
    calls.clear()
    result = run_incremental(
        log, storage, EmbeddingJob("t_emb", current, ("asin",), Encoder()), cfg
    )
    assert calls == [["P4"]]
    assert (result.stats.encoded, result.stats.reused) == (1, 4)
    meta = result.metadata()
    assert (meta["encoded"].value, meta["reused"].value, meta["model_id"].value) == (1, 4, "m")
    assert result.table["asin"].to_list() == current["asin"].to_list()
    assert not (tmp_path / "checkpoints" / "t_emb").exists()
