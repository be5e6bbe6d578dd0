"""A catalogue without a single image (like amazon-toys-xmarket) builds end to end: image models
are skipped with a reason, every other model is evaluated, and the recall check passes."""

from __future__ import annotations

import importlib

import dagster as dg
import polars as pl
import pytest

from catret_pipeline.definitions import build_resources
from catret_pipeline.fusion.assets import FusionModelsConfig
from catret_pipeline.retrieval.hybrid import HYBRID_MODEL
from catret_pipeline.sample.edits import read_raw, write_raw
from catret_pipeline.sample.generator import generate_sample

pytestmark = pytest.mark.slow

STAGES = ("ingest", "catalogue", "images", "embeddings", "fusion", "retrieval", "evaluation")


def _defs() -> list:
    mods = [importlib.import_module(f"catret_pipeline.{s}.assets") for s in STAGES]
    mods.append(importlib.import_module("catret_pipeline.retrieval.hybrid_assets"))
    return [a for m in mods for a in (*m.ASSETS, *m.CHECKS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("textonly")
    sample = generate_sample(root / "sample", n_products=160, image_size=16, broken_lines=False)
    raw = sample.xmarket_dir
    files = read_raw(raw)
    for records in files.values():
        for record in records:
            record["imgUrl"] = "[]"  # as amazon-toys-xmarket writes it: no image at all
    write_raw(raw, files)
    data = root / "data"
    resources = build_resources(str(data), str(raw))
    # conftest.py puts the fast test encoders into the environment build_resources reads.
    fusion = FusionModelsConfig(epochs=2, min_steps=0, proj_dim=32, hidden_dims=[64], workers=1)
    result = dg.materialize(
        _defs(),
        resources=resources,
        run_config=dg.RunConfig(ops={"fusion_models": fusion}),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return result, data


def test_text_only_catalogue_builds_and_evaluates(built):
    result, data = built
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["hnsw_recall"].passed
    assets = data / "assets"
    assert pl.read_parquet(assets / "image_embeddings.parquet").height == 0
    fusion = pl.read_parquet(assets / "fusion_models.parquet")
    skipped = fusion.filter(pl.col("model").is_in(["clip-i", "clip-ia"]))
    assert set(skipped["status"]) == {"skipped"}
    assert all("text-only" in r for r in skipped["reason"])
    assert set(fusion.filter(pl.col("model") == "clip-ita")["status"]) == {"trained"}
    indexes = pl.read_parquet(assets / "hnsw_indexes.parquet")
    assert indexes.filter(pl.col("model") == "clip")["index_path"].null_count() == (
        indexes.filter(pl.col("model") == "clip").height
    )
    metrics = pl.read_parquet(assets / "metrics.parquet")
    models = set(metrics["model"])
    assert HYBRID_MODEL in models and "clip-ita" in models and "bm25" in models
    assert not {"clip-i", "clip-ia"} & models
    margins = pl.read_parquet(assets / "baseline_margins.parquet")
    assert set(margins["setting"]) == {"all", "general", "specific"}
