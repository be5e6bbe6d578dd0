"""All ingest + catalogue assets and checks through ``dg.materialize`` on a tiny XMarket tree."""

import gzip
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from catret_pipeline.catalogue.assets import ASSETS as CATALOGUE_ASSETS
from catret_pipeline.catalogue.assets import CHECKS
from catret_pipeline.catalogue.splits import split_products
from catret_pipeline.catalogue.tree import node_id
from catret_pipeline.ingest.assets import ASSETS as INGEST_ASSETS
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.storage.io_manager import ParquetIOManager

CONTRACT = {
    "raw_products": ["market", "source_file", "line_no", "asin", "record"],
    "quarantine": ["source_file", "line_no", "asin", "reason", "detail", "raw_text"],
    "products": [
        "asin", "market", "source_file", "title", "category_path", "attributes", "image_url",
        "description", "title_hash", "attributes_hash", "image_hash",
    ],
    "category_tree": [
        "node_id", "name", "parent_id", "depth", "path", "n_direct", "n_subtree", "is_leaf",
    ],
    "product_splits": ["asin", "split"],
    "evaluation_pairs": [
        "setting", "asin", "category_id", "category_name", "category_depth", "split",
        "seen_in_train",
    ],
}  # fmt: skip

LEAVES = [
    ["Electronics", "Accessories", "Cables"],
    ["Electronics", "Audio", "Headphones"],
    ["Fashion", "Accessories", "Belts"],
    ["Fashion", "Watches", "Watches"],
]


def write_catalogue(root: Path) -> None:
    def product(i: int, path: list[str]) -> dict:
        return {
            "asin": f"B{i:04d}",
            "title": f"  Product&amp;{i} ",
            "categories": path,
            "features": [f"Colour {i % 3}"],
            "productDetails": {"Brand": f"Brand{i % 2}"},
            "imgUrl": json.dumps(
                {f"https://img/{i}_s.jpg": [50, 50], f"https://img/{i}_l.jpg": [500, 400]}
            ),
        }

    for market, cat, start in [
        ("us", "Electronics", 0),
        ("us", "Fashion", 100),
        ("de", "Fashion", 200),
    ]:
        lines = []
        for i in range(start, start + 24):
            path = [p for p in LEAVES if p[0] == cat][i % 2]
            lines.append(json.dumps(product(i, path)).encode())
        if market == "us" and cat == "Fashion":
            lines.append(
                str({"asin": "PY1", "title": "Python literal", "categories": ["Fashion"]}).encode()
            )
            lines.append(b'{"asin": "BAD", "title": ')
        if market == "de":
            lines.append(json.dumps(product(100, LEAVES[2])).encode())  # duplicate of a us asin
        f = root / market / cat / f"metadata_{market}_{cat}.json.gz"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


@pytest.fixture
def materialized(tmp_path):
    root = tmp_path / "xmarket"
    write_catalogue(root)
    data = tmp_path / "data"
    result = dg.materialize(
        [*INGEST_ASSETS, *CATALOGUE_ASSETS, *CHECKS],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data)),
            "xmarket": XMarketSource(root=str(root)),
        },
        run_config={
            "ops": {
                "product_splits": {
                    "config": {
                        "train": 0.6,
                        "val": 0.2,
                        "test": 0.2,
                        "seed": 7,
                        "holdout_fraction": 0.0,
                        "val_holdout_fraction": 0.0,
                    }
                }
            }
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    tables = {name: pl.read_parquet(data / "assets" / f"{name}.parquet") for name in CONTRACT}
    return result, tables


def test_materialize_all_assets(materialized):
    result, t = materialized
    assert result.success
    for name, cols in CONTRACT.items():
        assert t[name].columns == cols, name

    raw, q, products = t["raw_products"], t["quarantine"], t["products"]
    assert raw.height == 72 + 1 and products.height == 73
    assert sorted(q["reason"]) == ["duplicate_asin", "invalid_json"]
    dup = q.filter(pl.col("reason") == "duplicate_asin").row(0, named=True)
    assert dup["asin"] == "B0100" and dup["source_file"].startswith("de/")

    meta = result.asset_materializations_for_node("ingest_raw")[0].metadata
    assert meta["lines_read"].value == raw.height + q.height == 75
    assert "duplicate_asin" in meta["quarantine_by_reason"].value

    p = products.filter(pl.col("asin") == "B0001").row(0, named=True)
    assert p["title"] == "Product&1"
    assert p["image_url"] == "https://img/1_l.jpg"
    assert p["attributes"] == ["Colour 1", "Brand: Brand1"]
    assert p["category_path"] == LEAVES[1]
    py = products.filter(pl.col("asin") == "PY1").row(0, named=True)
    assert py["image_url"] is None and py["image_hash"] is None and py["attributes"] == []

    tree = t["category_tree"]
    assert tree.filter(pl.col("depth") == 1)["name"].sort().to_list() == ["Electronics", "Fashion"]
    assert tree["is_leaf"].sum() == 4
    assert tree.filter(pl.col("depth") == 1)["n_subtree"].sum() == products.height
    fashion = tree.filter(pl.col("node_id") == node_id(["Fashion"])).row(0, named=True)
    assert fashion["n_direct"] == 1 and fashion["n_subtree"] == 48 + 1

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"category_tree_roots", "category_tree_parents", "category_tree_counts"}
    assert all(e.passed for e in checks.values())

    splits = t["product_splits"]
    # The run config (0.6 / 0.2 / 0.2, seed 7) reached the asset.
    assert dict(splits.iter_rows()) == split_products(
        products["asin"].to_list(), (0.6, 0.2, 0.2), 7
    )
    pairs = t["evaluation_pairs"]
    assert pairs.height == 3 * products.height
    assert pairs.group_by("setting").len().sort("setting")["len"].to_list() == [73, 73, 73]
    joined = pairs.join(splits, on="asin", suffix="_s")
    assert (joined["split"] == joined["split_s"]).all()
    assert set(pairs["category_id"]) <= set(tree["node_id"])
