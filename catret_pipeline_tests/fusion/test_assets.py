"""fusion_models + fused_representations through dagster on tiny fixture tables."""

import hashlib
import json
import subprocess
import sys

import dagster as dg
import numpy as np
import polars as pl
import pytest

from catret_pipeline.fusion import artefacts, inference
from catret_pipeline.fusion.assets import ASSETS, CHECKS, FusionModelsConfig
from catret_pipeline.fusion.features import MODEL_SPECS
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.resources import CatretStorage

TEXT_DIM, IMAGE_DIM, TITLE_DIM, ATTR_DIM = 6, 8, 6, 5
TREE = {
    "Electronics": {"Accessories": ["Cables", "Chargers"], "Audio": ["Speakers", "Headphones"]},
    "Home": {"Accessories": ["Hooks", "Mats"], "Decor": ["Vases", "Frames"]},
}


def node_id(path: list[str]) -> str:
    return hashlib.sha1("\x1f".join(path).encode()).hexdigest()[:16]


def text_encode(names: list[str]) -> np.ndarray:
    """The fixture's "text encoder": a fixed random vector per name."""
    out = []
    for n in names:
        seed = int(hashlib.sha256(n.encode()).hexdigest()[:8], 16)
        out.append(np.random.default_rng(seed).normal(size=TEXT_DIM))
    return np.asarray(out, dtype=np.float32)


def _emb(arr: np.ndarray) -> pl.Series:
    arr = np.asarray(arr, dtype=np.float32)
    return pl.Series("embedding", arr, dtype=pl.Array(pl.Float32, arr.shape[1]))


def write_fixture(data_dir) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(0)
    nodes = []
    for root, children in TREE.items():
        nodes.append([root])
        for child, leaves in children.items():
            nodes.append([root, child])
            nodes += [[root, child, leaf] for leaf in leaves]
    tree = pl.DataFrame(
        {
            "node_id": [node_id(p) for p in nodes],
            "name": [p[-1] for p in nodes],
            "parent_id": [node_id(p[:-1]) if len(p) > 1 else None for p in nodes],
            "depth": [len(p) for p in nodes],
            "path": nodes,
            "n_direct": [0] * len(nodes),
            "n_subtree": [0] * len(nodes),
            "is_leaf": [len(p) == 3 for p in nodes],
        }
    )
    leaves = [p for p in nodes if len(p) == 3]
    asins, paths = [], []
    for i in range(64):
        asins.append(f"P{i:03d}")
        paths.append(leaves[i % len(leaves)])
    split = ["test" if i % 4 == 0 else "val" if i % 4 == 1 else "train" for i in range(64)]
    rows = []
    for setting in ("all", "general", "specific"):
        for a, path, s in zip(asins, paths, split, strict=True):
            depth = {"general": 1, "specific": len(path)}.get(setting) or int(
                rng.integers(1, len(path) + 1)
            )
            rows.append((setting, a, node_id(path[:depth]), path[depth - 1], depth, s))
    pairs = pl.DataFrame(
        rows,
        schema=["setting", "asin", "category_id", "category_name", "category_depth", "split"],
        orient="row",
    )
    seen = pairs.filter(pl.col("split") == "train").select("setting", "category_name").unique()
    pairs = pairs.join(
        seen.with_columns(seen_in_train=pl.lit(True)), on=["setting", "category_name"], how="left"
    ).with_columns(pl.col("seen_in_train").fill_null(False))

    # Product signal: a fixed linear map of the leaf's name vector plus noise, per modality.
    leaf_text = text_encode([p[-1] for p in paths])

    def modality(dim):
        m = rng.normal(size=(TEXT_DIM, dim)) / np.sqrt(TEXT_DIM)
        return leaf_text @ m + 0.3 * rng.normal(size=(len(asins), dim))

    has_image = [i != 2 for i in range(64)]  # P002 has no ok image
    img = modality(IMAGE_DIM)
    image = pl.DataFrame(
        {
            "asin": [a for a, h in zip(asins, has_image, strict=True) if h],
            "model_id": "clip-test",
            "content_hash": "x",
            "embedding": _emb(img[has_image]),
        }
    )
    title = pl.DataFrame(
        {
            "asin": asins,
            "model_id": "minilm-test",
            "content_hash": "x",
            "embedding": _emb(modality(TITLE_DIM)),
        }
    )
    attributes = pl.DataFrame(
        {
            "asin": asins,
            "model_id": "minilm-test",
            "content_hash": "x",
            "embedding": _emb(modality(ATTR_DIM)),
            "has_attributes": [i != 3 for i in range(64)],
        }
    )
    categories = pl.DataFrame(
        {
            "node_id": tree["node_id"],
            "name": tree["name"],
            "model_id": "minilm-test",
            "content_hash": "x",
            "embedding": _emb(text_encode(tree["name"].to_list())),
        }
    )
    tables = {
        "category_tree": tree,
        "evaluation_pairs": pairs,
        "image_embeddings": image,
        "title_embeddings": title,
        "attribute_embeddings": attributes,
        "category_embeddings": categories,
    }
    for name, df in tables.items():
        atomic_write_parquet(df, asset_file(data_dir, [name]))
    return tables


def _run(data_dir, **config):
    cfg = FusionModelsConfig(
        epochs=2, min_steps=0, proj_dim=8, hidden_dims=[16, 16], batch_size_general=8, **config
    )
    return dg.materialize(
        [dg.AssetSpec(name) for name in UPSTREAM] + ASSETS + CHECKS,
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        run_config=dg.RunConfig(ops={"fusion_models": cfg}),
        instance=dg.DagsterInstance.ephemeral(),
    )


UPSTREAM = [
    "category_tree",
    "evaluation_pairs",
    "image_embeddings",
    "title_embeddings",
    "attribute_embeddings",
    "category_embeddings",
]


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fusion")
    tables = write_fixture(data_dir)
    result = _run(data_dir)
    return data_dir, tables, result


def test_fusion_models_table_and_artefacts(materialized):
    data_dir, tables, result = materialized
    assert result.success
    models = pl.read_parquet(asset_file(data_dir, ["fusion_models"]))
    assert models.height == len(MODEL_SPECS) * 3
    assert set(models["status"]) == {"trained"}
    assert (models["epochs_run"] == 2).all()
    assert models["train_loss_last"].is_not_null().all()
    # Every head has a validation split here, so each reports its kept epoch's R-precision.
    assert models["val_rprec_best"].is_between(0.0, 1.0).all()
    pairs = tables["evaluation_pairs"]
    spec_all = models.filter((pl.col("model") == "clip-ita") & (pl.col("setting") == "all")).row(
        0, named=True
    )
    assert (
        spec_all["n_train"]
        == pairs.filter((pl.col("setting") == "all") & (pl.col("split") == "train")).height
    )
    # clip-i cannot use P002 (no image): left out of its training pairs when in train/val.
    clip_i = models.filter((pl.col("model") == "clip-i") & (pl.col("setting") == "all")).row(
        0, named=True
    )
    assert clip_i["n_dropped_empty"] == 1
    storage = CatretStorage(data_dir=str(data_dir))
    for row in models.iter_rows(named=True):
        pt = storage.path(row["artefact_path"])
        assert pt.exists() and pt.with_suffix(".json").exists()
        meta = json.loads(pt.with_suffix(".json").read_text())
        assert meta["dims"]["category_in_dim"] == TEXT_DIM
        assert len(meta["history"]) == 2
        assert meta["input_model_ids"]["image"] == ["clip-test"]
        assert meta["input_model_ids"]["category"] == ["minilm-test"]
    expected_in = {
        "clip-i": IMAGE_DIM,
        "clip-ia": IMAGE_DIM + ATTR_DIM,
        "clip-ita": IMAGE_DIM + TITLE_DIM + ATTR_DIM,
    }
    for model, dim in expected_in.items():
        meta = artefacts.read_meta(storage, model, "general")
        assert meta["dims"]["product_in_dim"] == dim
        assert meta["batch_size"] == 8
    mat = result.asset_materializations_for_node("fusion_models")[0]
    assert "loss_curves" in mat.metadata and "clip-ita.all.val_loss_best" in mat.metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["fused_representations_unit_norm"] is True
    assert "fusion_models_learned" in checks


def test_fused_representations(materialized):
    data_dir, tables, _ = materialized
    fused = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    assert fused.columns == ["model", "setting", "kind", "key", "embedding"]
    assert fused["embedding"].dtype == pl.Array(pl.Float32, 8)
    pairs, tree = tables["evaluation_pairs"], tables["category_tree"]
    names = set(tree["name"])
    groups = fused.group_by(["model", "setting"])
    assert len(list(groups)) == len(MODEL_SPECS) * 3
    for (_model, setting), group in fused.group_by(["model", "setting"]):
        test_asins = set(
            pairs.filter((pl.col("setting") == setting) & (pl.col("split") == "test"))["asin"]
        )
        assert set(group.filter(pl.col("kind") == "product")["key"]) == test_asins
        cats = group.filter(pl.col("kind") == "category")["key"]
        assert set(cats) == names and cats.n_unique() == len(cats)  # "Accessories" once
    norms = np.linalg.norm(fused["embedding"].to_numpy(), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_encode_queries_matches_fused_and_handles_unseen_names(materialized):
    data_dir, tables, _ = materialized
    storage = CatretStorage(data_dir=str(data_dir))
    fused = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    row = fused.filter(
        (pl.col("model") == "clip-ita-masked")
        & (pl.col("setting") == "specific")
        & (pl.col("kind") == "category")
        & (pl.col("key").is_in(["Vases", "Audio"]))
    ).sort("key")
    q = inference.encode_queries(
        storage, "clip-ita-masked", "specific", ["Audio", "Vases", "Garden Hoses"], text_encode
    )
    assert q.shape == (3, 8)
    assert np.allclose(q[:2], row["embedding"].to_numpy(), atol=1e-6)
    assert np.linalg.norm(q[2]) == pytest.approx(1.0, abs=1e-5)
    assert inference.encode_queries(storage, "clip-ita", "all", [], text_encode).shape == (0, 8)
    with pytest.raises(FileNotFoundError, match="fusion_models"):
        inference.encode_queries(storage, "clip-ita", "nosuch", ["Audio"], text_encode)
    with pytest.raises(ValueError, match="expects category inputs of width"):
        inference.encode_queries(
            storage, "clip-ita", "all", ["Audio"], lambda n: np.ones((len(n), 3))
        )


def test_rerun_reuses_unchanged_artefacts_and_retrains_on_change(materialized):
    data_dir, _, _ = materialized
    storage = CatretStorage(data_dir=str(data_dir))
    first = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    before = artefacts.weights_sha256(storage, "clip-ita", "all")
    assert _run(data_dir).success
    models = pl.read_parquet(asset_file(data_dir, ["fusion_models"]))
    assert set(models["status"]) == {"reused"}
    assert models["train_loss_last"].is_not_null().all()
    assert artefacts.weights_sha256(storage, "clip-ita", "all") == before
    again = pl.read_parquet(asset_file(data_dir, ["fused_representations"]))
    assert again.equals(first)
    # A config change retrains (only what was asked for).
    assert _run(data_dir, models=["clip-ita"], settings=["all"], seed=1).success
    models = pl.read_parquet(asset_file(data_dir, ["fusion_models"]))
    assert models.select("model", "setting", "status").rows() == [("clip-ita", "all", "trained")]
    assert artefacts.weights_sha256(storage, "clip-ita", "all") != before


def test_missing_setting_is_a_skipped_row_not_a_crash(tmp_path):
    tables = write_fixture(tmp_path)
    pairs = tables["evaluation_pairs"].filter(pl.col("setting") != "general")
    atomic_write_parquet(pairs, asset_file(tmp_path, ["evaluation_pairs"]))
    result = _run(tmp_path, models=["clip-i"], settings=["general", "specific"])
    assert result.success
    models = pl.read_parquet(asset_file(tmp_path, ["fusion_models"]))
    rows = {r["setting"]: r for r in models.iter_rows(named=True)}
    assert rows["general"]["status"] == "skipped" and "need >= 2" in rows["general"]["reason"]
    assert rows["specific"]["status"] == "trained"
    fused = pl.read_parquet(asset_file(tmp_path, ["fused_representations"]))
    assert set(fused["setting"]) == {"specific"}


def test_unknown_model_fails_before_training(tmp_path):
    write_fixture(tmp_path)
    with pytest.raises(Exception, match="unknown fusion model"):
        _run(tmp_path, models=["clip-nope"])


def test_importing_assets_does_not_import_torch():
    code = (
        "import sys, catret_pipeline.fusion.assets, catret_pipeline.fusion;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
