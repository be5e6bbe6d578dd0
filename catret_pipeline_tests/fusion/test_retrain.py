"""Heads retrain only when their training data changed beyond retrain_fraction, or on demand."""

import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from catret_pipeline.fusion import artefacts, inference
from catret_pipeline.fusion.artefacts import keys_path, read_train_keys
from catret_pipeline.fusion.assets import ASSETS, FusionModelsConfig
from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import (
    MODEL_SPECS,
    CategoryVectors,
    ProductFeatureTables,
    build_pair_data,
)
from catret_pipeline.fusion.jobs import prepare_training
from catret_pipeline.fusion.retrain import (
    KEY_COLUMNS,
    data_change_fraction,
    row_hashes,
    training_keys,
)
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.fusion.test_assets import UPSTREAM, write_fixture

MODELS = ["clip-i", "clip-ita"]
SETTINGS = ["all", "specific"]
# 64 fixture products: i % 4 == 0 test, 1 val, 2 and 3 train; so 48 train+val examples per
# setting, and one edited train product is 2 changed keys (old gone, new added): 4.2%.
N_EXAMPLES = 48


def _keys(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=list(KEY_COLUMNS), orient="row")


# ---------------------------------------------------------------- pure functions


def test_change_fraction_counts_the_symmetric_difference_over_the_previous_set():
    prev = _keys([(f"a{i}", "c", "C", "train", f"h{i}") for i in range(50)])
    assert data_change_fraction(prev, prev.reverse()) == 0.0
    added = pl.concat([prev, _keys([("new", "c", "C", "train", "hx")])])
    assert data_change_fraction(prev, added) == pytest.approx(1 / 50)
    edited = prev.with_columns(
        pl.when(pl.col("asin") == "a3")
        .then(pl.lit("h3b"))
        .otherwise("input_hash")
        .alias("input_hash")
    )
    assert data_change_fraction(prev, edited) == pytest.approx(2 / 50)
    moved = prev.with_columns(
        pl.when(pl.col("asin") == "a4").then(pl.lit("val")).otherwise("split").alias("split")
    )
    assert data_change_fraction(prev, moved) == pytest.approx(2 / 50)
    assert data_change_fraction(prev, prev.head(40)) == pytest.approx(10 / 50)
    # Duplicate keys collapse; an empty previous set divides by 1, not 0.
    assert data_change_fraction(pl.concat([prev, prev]), prev) == 0.0
    assert data_change_fraction(prev.clear(), prev.head(3)) == 3.0
    with pytest.raises(ValueError, match="lacks columns"):
        data_change_fraction(prev.drop("split"), prev)


def test_row_hashes_see_every_byte_and_the_dtype():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = np.ones((3, 2), dtype=np.float32)
    h = row_hashes(x, c)
    assert len(set(h)) == 3 and h == row_hashes(x.copy(), c.copy())
    y = x.copy()
    y[1, 3] = np.nextafter(y[1, 3], np.float32(100))
    assert row_hashes(y, c) == [h[0], row_hashes(y, c)[1], h[2]] and row_hashes(y, c)[1] != h[1]
    assert row_hashes(x.astype(np.float64), c) != h
    assert row_hashes(np.zeros((0, 4), np.float32)) == []
    with pytest.raises(ValueError, match="row counts"):
        row_hashes(x, c[:2])


def _pair_data(tables: dict, model: str, split: str):
    pairs = tables["evaluation_pairs"].filter(
        (pl.col("setting") == "all") & (pl.col("split") == split)
    )
    products = ProductFeatureTables.from_frames(
        tables["image_embeddings"], tables["title_embeddings"], tables["attribute_embeddings"]
    )
    categories = CategoryVectors.from_frame(tables["category_embeddings"])
    return build_pair_data(pairs, MODEL_SPECS[model], products, categories)


def test_training_keys_follow_the_inputs_each_model_sees(tmp_path):
    tables = write_fixture(tmp_path)
    keys = {m: training_keys({"train": _pair_data(tables, m, "train")}) for m in MODELS}
    # clip-i drops P002 (no image) from training, so it has no key either.
    assert "P002" not in set(keys["clip-i"]["asin"]) and "P002" in set(keys["clip-ita"]["asin"])
    assert keys["clip-ita"].height == 32 and set(keys["clip-ita"]["split"]) == {"train"}
    pairs = tables["evaluation_pairs"].filter(
        (pl.col("setting") == "all") & (pl.col("split") == "train")
    )
    expected = set(pairs.select("asin", "category_id", "category_name").iter_rows())
    assert set(keys["clip-ita"].select("asin", "category_id", "category_name").iter_rows()) == (
        expected
    )
    # A new title vector for P006 changes clip-ita's key for P006 only, and no clip-i key.
    title = tables["title_embeddings"]
    vec = title["embedding"].to_numpy().copy()
    vec[title["asin"].to_list().index("P006")] += 1.0
    tables["title_embeddings"] = title.with_columns(
        pl.Series("embedding", vec, dtype=title["embedding"].dtype)
    )
    after = {m: training_keys({"train": _pair_data(tables, m, "train")}) for m in MODELS}
    assert data_change_fraction(keys["clip-i"], after["clip-i"]) == 0.0
    changed = after["clip-ita"].join(keys["clip-ita"], on=list(KEY_COLUMNS), how="anti")
    assert changed["asin"].to_list() == ["P006"]
    assert data_change_fraction(keys["clip-ita"], after["clip-ita"]) == pytest.approx(2 / 32)


def test_prepare_training_rejects_a_negative_fraction(tmp_path):
    tables = write_fixture(tmp_path)
    with pytest.raises(ValueError, match="retrain_fraction"):
        prepare_training(
            CatretStorage(data_dir=str(tmp_path)),
            MODEL_SPECS["clip-i"],
            "all",
            tables["evaluation_pairs"],
            ProductFeatureTables.from_frames(
                tables["image_embeddings"],
                tables["title_embeddings"],
                tables["attribute_embeddings"],
            ),
            CategoryVectors.from_frame(tables["category_embeddings"]),
            FusionTrainConfig(),
            retrain_fraction=-0.5,
        )
    with pytest.raises(Exception, match="greater than or equal to 0"):
        FusionModelsConfig(retrain_fraction=-0.5)


# ---------------------------------------------------------------- through dagster


def _run(data_dir, **config) -> pl.DataFrame:
    cfg = FusionModelsConfig(
        models=MODELS,
        settings=SETTINGS,
        epochs=2,
        min_steps=0,
        proj_dim=8,
        hidden_dims=[16],
        workers=1,
        **config,
    )
    result = dg.materialize(
        [dg.AssetSpec(name) for name in UPSTREAM] + ASSETS,
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        run_config=dg.RunConfig(ops={"fusion_models": cfg}),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return pl.read_parquet(asset_file(data_dir, ["fusion_models"])).sort("model", "setting")


def _rows(models: pl.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["setting"]): r for r in models.iter_rows(named=True)}


def _weights(data_dir) -> dict[tuple[str, str], str]:
    storage = CatretStorage(data_dir=str(data_dir))
    return {(m, s): artefacts.weights_sha256(storage, m, s) for m in MODELS for s in SETTINGS}


def _edit_title(data_dir, asin: str) -> None:
    path = asset_file(data_dir, ["title_embeddings"])
    title = pl.read_parquet(path)
    vec = title["embedding"].to_numpy().copy()
    vec[title["asin"].to_list().index(asin)] *= -1.0
    atomic_write_parquet(
        title.with_columns(pl.Series("embedding", vec, dtype=title["embedding"].dtype)), path
    )


def _add_test_product(data_dir, asin: str, like: str) -> None:
    """A new product, a copy of ``like``'s category with fresh vectors, in every test split."""
    rng = np.random.default_rng(7)
    for name in ("image_embeddings", "title_embeddings", "attribute_embeddings"):
        path = asset_file(data_dir, [name])
        df = pl.read_parquet(path)
        new = df.filter(pl.col("asin") == like).with_columns(asin=pl.lit(asin))
        vec = rng.normal(size=(1, df["embedding"].dtype.size)).astype(np.float32)
        new = new.with_columns(pl.Series("embedding", vec, dtype=df["embedding"].dtype))
        atomic_write_parquet(pl.concat([df, new]), path)
    path = asset_file(data_dir, ["evaluation_pairs"])
    pairs = pl.read_parquet(path)
    new = pairs.filter(pl.col("asin") == like).with_columns(asin=pl.lit(asin), split=pl.lit("test"))
    atomic_write_parquet(pl.concat([pairs, new]), path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("retrain")
    write_fixture(data_dir)
    models = _run(data_dir)
    return data_dir, models


@pytest.fixture
def data_dir(built, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(built[0], target)
    return target


def test_first_build_trains_and_stores_the_key_sets(built):
    data_dir, models = built
    storage = CatretStorage(data_dir=str(data_dir))
    assert set(models["status"]) == {"trained"}
    assert models["data_change_fraction"].dtype == pl.Float64
    assert models["data_change_fraction"].is_null().all()
    assert set(models["reason"]) == {"no trained artefact yet"}
    for (model, setting), row in _rows(models).items():
        meta = artefacts.read_meta(storage, model, setting)
        keys, problem = read_train_keys(storage, model, setting, meta["train_keys_sha256"])
        assert problem is None and keys.height == row["n_train"] + row["n_val"]


def test_small_change_reuses_heads_and_new_products_get_fused_vectors(data_dir):
    before = _weights(data_dir)
    fused_before = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    _edit_title(data_dir, "P006")  # a train product in every setting
    _add_test_product(data_dir, "PNEW1", like="P004")
    rows = _rows(_run(data_dir))
    assert {r["status"] for r in rows.values()} == {"reused"}
    assert _weights(data_dir) == before
    for setting in SETTINGS:
        # clip-i does not read titles: its inputs are byte-identical.
        assert rows["clip-i", setting]["data_change_fraction"] == 0.0
        ita = rows["clip-ita", setting]
        assert ita["data_change_fraction"] == pytest.approx(2 / N_EXAMPLES)
        assert ita["reason"] == "training data changed 4.2% <= 5.0%"
        assert ita["train_loss_last"] is not None  # losses carried over from the artefact
    fused = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    storage = CatretStorage(data_dir=str(data_dir))
    products = ProductFeatureTables.from_frames(
        *(
            pl.read_parquet(asset_file(data_dir, [n]))
            for n in ("image_embeddings", "title_embeddings", "attribute_embeddings")
        )
    )
    for model in MODELS:
        for setting in SETTINGS:
            new = fused.filter(
                (pl.col("model") == model)
                & (pl.col("setting") == setting)
                & (pl.col("key") == "PNEW1")
            )
            assert new.height == 1, (model, setting)
            expected = inference.encode_products(storage, model, setting, ["PNEW1"], products)
            np.testing.assert_allclose(new["embedding"].to_numpy(), expected, atol=1e-6)
    # Products already encoded keep their vectors: the heads did not move.
    old = fused.filter(pl.col("key") != "PNEW1").sort("model", "setting", "kind", "key")
    assert old.equals(fused_before.sort("model", "setting", "kind", "key"))


def test_changes_add_up_against_the_trained_on_data(data_dir):
    storage = CatretStorage(data_dir=str(data_dir))
    keys_file = keys_path(storage, "clip-ita", "all")
    trained_keys = keys_file.read_bytes()
    _edit_title(data_dir, "P006")
    assert _rows(_run(data_dir))["clip-ita", "all"]["status"] == "reused"
    assert keys_file.read_bytes() == trained_keys  # reuse keeps the trained-on key set
    _edit_title(data_dir, "P007")  # another 4.2%, 8.3% against what the head saw
    rows = _rows(_run(data_dir))
    for setting in SETTINGS:
        ita = rows["clip-ita", setting]
        assert ita["status"] == "trained"
        assert ita["reason"] == "training data changed 8.3% > 5.0%"
        assert ita["data_change_fraction"] == pytest.approx(4 / N_EXAMPLES)
        assert rows["clip-i", setting]["status"] == "reused"
    assert keys_file.read_bytes() != trained_keys
    # The retrained head is the new reference: unchanged data now reuses it again.
    rows = _rows(_run(data_dir))
    assert {r["status"] for r in rows.values()} == {"reused"}
    assert rows["clip-ita", "all"]["data_change_fraction"] == 0.0


def test_force_retrain_and_fraction_zero_retrain(data_dir):
    before = _weights(data_dir)
    rows = _rows(_run(data_dir, force_retrain=True))
    assert {r["status"] for r in rows.values()} == {"trained"}
    assert {r["reason"] for r in rows.values()} == {"force_retrain: retrained on demand"}
    assert {r["data_change_fraction"] for r in rows.values()} == {0.0}
    assert _weights(data_dir) == before  # same data, same seed: the same weights again
    _edit_title(data_dir, "P006")
    rows = _rows(_run(data_dir, retrain_fraction=0.0))
    for setting in SETTINGS:
        assert rows["clip-i", setting]["status"] == "reused"  # byte-identical inputs
        ita = rows["clip-ita", setting]
        assert ita["status"] == "trained"
        assert "retrain_fraction 0 retrains on any change" in ita["reason"]
        assert ita["data_change_fraction"] == pytest.approx(2 / N_EXAMPLES)


def test_config_change_retrains_whatever_the_data_change(data_dir):
    rows = _rows(_run(data_dir, lr=3e-4))
    assert {r["status"] for r in rows.values()} == {"trained"}
    assert {r["reason"] for r in rows.values()} == {
        "model spec, train config, input models or input widths changed"
    }


def test_damaged_or_missing_key_file(data_dir):
    storage = CatretStorage(data_dir=str(data_dir))
    damaged = keys_path(storage, "clip-ita", "all")
    damaged.write_bytes(b"not parquet")
    missing = keys_path(storage, "clip-ita", "specific")
    missing.unlink()
    _edit_title(data_dir, "P006")
    rows = _rows(_run(data_dir))
    assert rows["clip-ita", "all"]["status"] == "trained"
    assert rows["clip-ita", "all"]["reason"] == (
        "training key file all.train_keys.parquet does not match the weights: "
        "data change not measurable"
    )
    assert rows["clip-ita", "all"]["data_change_fraction"] is None
    assert rows["clip-ita", "specific"]["status"] == "trained"
    assert "specific.train_keys.parquet is missing" in rows["clip-ita", "specific"]["reason"]
    assert rows["clip-i", "all"]["status"] == "reused"
    # On identical data a lost key file is rewritten instead of retraining.
    keys_path(storage, "clip-i", "all").unlink()
    rows = _rows(_run(data_dir))
    assert rows["clip-i", "all"]["status"] == "reused"
    meta = artefacts.read_meta(storage, "clip-i", "all")
    keys, problem = read_train_keys(storage, "clip-i", "all", meta["train_keys_sha256"])
    assert (
        problem is None
        and keys.height == rows["clip-i", "all"]["n_train"] + (rows["clip-i", "all"]["n_val"])
    )


def test_artefact_from_before_key_files_is_migrated_on_identical_data(data_dir):
    storage = CatretStorage(data_dir=str(data_dir))
    meta = artefacts.read_meta(storage, "clip-ita", "all")
    old = {k: v for k, v in meta.items() if k not in ("train_keys_sha256", "config_fingerprint")}
    artefacts.write_meta(storage, "clip-ita", "all", old)
    keys_path(storage, "clip-ita", "all").unlink()
    rows = _rows(_run(data_dir))
    assert rows["clip-ita", "all"]["status"] == "reused"
    meta = artefacts.read_meta(storage, "clip-ita", "all")
    assert meta["config_fingerprint"] and meta["train_keys_sha256"]
    _edit_title(data_dir, "P006")
    assert _rows(_run(data_dir))["clip-ita", "all"]["status"] == "reused"
