"""A synthetic data dir of N products for the serving benchmark, in the pipeline's table layout.

Why synthetic: no catalogue of 200,000 products is available offline, and a full build of one
(images, heads) would take hours for a benchmark that measures the server. What is real: the
category tree, splits and pairs come from the catalogue module's functions; the category
vectors are the real text encoder's (the one ``catret serve`` encodes new names with); the
``serving_models`` and ``serving_indexes`` assets run through Dagster's ``materialize``. What is
not: product vectors are their leaf category's vector plus Gaussian noise (clustered like real
title vectors, but no title was encoded), and products have no images. The served model is the
text baseline (no trained head), so vectors are the encoder's width (768 for MPNet).
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from catret_pipeline.catalogue.splits import evaluation_pairs, split_catalogue
from catret_pipeline.catalogue.tree import build_tree
from catret_pipeline.delivery.assets import serving_index_recall, serving_indexes, serving_models
from catret_pipeline.fusion.schemas import FUSION_MODELS_SCHEMA
from catret_pipeline.serving import encoders
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

TOPS = [
    "Home",
    "Garden",
    "Toys",
    "Sports",
    "Fashion",
    "Office",
    "Kitchen",
    "Outdoor",
    "Pets",
    "Car",
]
MIDS = ["care", "storage", "lighting", "accessories", "tools", "decor", "kits", "parts"]
LEAF_ADJ = ["mini", "vintage", "smart", "wooden", "foldable", "electric", "kids", "travel"]
LEAF_NOUN = ["lamps", "boxes", "mats", "bags", "stands", "covers", "sets", "brushes", "racks"]
NOISE = 0.35  # per-dimension noise of a unit vector's scale: cosine to its leaf ~0.7-0.8


def _paths() -> list[list[str]]:
    leaves = [f"{a} {n}" for a, n in itertools.product(LEAF_ADJ, LEAF_NOUN)]
    out = []
    for i, (top, mid) in enumerate(itertools.product(TOPS, MIDS)):
        for leaf in leaves[i % 9 :: 9]:  # 8 leaves per (top, mid): 640 leaf paths
            out.append([top, f"{top} {mid}", f"{leaf} for {top.lower()} {mid}"])
    return out


def _embedding_frame(keys: dict, vecs: np.ndarray, model_id: str, texts: list[str]):
    return pl.DataFrame(
        {
            **keys,
            "model_id": [model_id] * len(texts),
            "content_hash": [hashlib.sha1(t.encode()).hexdigest() for t in texts],
            "embedding": pl.Series(
                vecs.astype(np.float32), dtype=pl.Array(pl.Float32, vecs.shape[1])
            ),
        }
    )


def write_synthetic(data_dir: Path, n: int, seed: int = 0, threads: int = 2) -> dict:
    """Write the tables and materialise ``serving_models`` + ``serving_indexes``; a summary."""
    data_dir = Path(data_dir)
    assets = data_dir / "assets"
    rng = np.random.default_rng(seed)
    paths = _paths()
    leaf_of = rng.integers(0, len(paths), size=n)
    asins = [f"S{i:09d}" for i in range(n)]
    titles = [f"{paths[j][-1]} item {i}" for i, j in enumerate(leaf_of)]
    products = pl.DataFrame(
        {"asin": asins, "title": titles, "category_path": [paths[j] for j in leaf_of]}
    )
    tree = build_tree(products["category_path"].to_list())
    model = encoders.text_model(data_dir)
    names = tree["name"].to_list()
    cat_vecs = np.asarray(model.encode(names, batch_size=64), dtype=np.float32)
    by_name = dict(zip(names, cat_vecs, strict=True))
    leaf_vecs = np.stack([by_name[p[-1]] for p in paths])
    leaf_vecs /= np.linalg.norm(leaf_vecs, axis=1, keepdims=True)
    dim = leaf_vecs.shape[1]
    vecs = leaf_vecs[leaf_of] + rng.normal(scale=NOISE / np.sqrt(dim), size=(n, dim))
    splits = split_catalogue(products, holdout_fraction=0.0)
    split_df = pl.DataFrame({"asin": list(splits), "split": list(splits.values())})
    pairs = evaluation_pairs(products, split_df, settings=("all",))
    atomic_write_parquet(
        _embedding_frame({"asin": asins}, vecs, model.model_id, titles),
        assets / "title_embeddings.parquet",
    )
    atomic_write_parquet(
        _embedding_frame(
            {"node_id": tree["node_id"].to_list(), "name": names}, cat_vecs, model.model_id, names
        ),
        assets / "category_embeddings.parquet",
    )
    atomic_write_parquet(tree, assets / "category_tree.parquet")
    atomic_write_parquet(pairs, assets / "evaluation_pairs.parquet")
    atomic_write_parquet(
        pl.DataFrame(schema=FUSION_MODELS_SCHEMA), assets / "fusion_models.parquet"
    )
    atomic_write_parquet(products, assets / "products.parquet")
    upstream = ("fusion_models", "evaluation_pairs", "category_tree", "products")
    vector_tables = ("title_embeddings", "category_embeddings")
    result = dg.materialize(
        [
            *[dg.AssetSpec(k) for k in (*upstream, *vector_tables)],
            serving_models,
            serving_indexes,
            serving_index_recall,
        ],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"serving_indexes": {"config": {"threads": threads}}}},
    )
    if not result.success:
        raise SystemExit("materialising serving_indexes failed")
    row = pl.read_parquet(assets / "serving_indexes.parquet").row(0, named=True)
    return {"n_products": n, "n_nodes": tree.height, "dim": dim, "index": row}
