"""A tiny data dir in the pipeline's table layout, built in seconds (no Dagster run).

The tree, splits and pairs come from the catalogue module's own functions, the images are real
PNG files in the content-addressed cache, and the title / category vectors are computed with
the real test text encoder (bundled all-MiniLM-L6-v2, conftest), so a new name encoded by the
server lands in the same space. No trained head: the server falls back to the text baseline.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from catret_pipeline.catalogue.splits import evaluation_pairs, split_catalogue
from catret_pipeline.catalogue.tree import build_tree
from catret_pipeline.images.cache import relative_cache_path
from catret_pipeline.storage.atomic import atomic_write_bytes, atomic_write_parquet
from catret_pipeline_tests.support import query_text_model

PATHS = [
    ["Clothing", "Dresses"],
    ["Clothing", "Shoes", "Boots"],
    ["Clothing", "Shoes", "Sandals"],
    ["Home", "Lamps"],
    ["Home", "Rugs"],
    ["Toys", "Puzzles"],
]
ADJECTIVES = ["red", "blue", "green", "wooden", "soft", "large", "small", "vintage"]
PER_PATH = 8


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def products_frame(title_suffix: str = "") -> pl.DataFrame:
    rows = []
    for i, path in enumerate(PATHS):
        for j in range(PER_PATH):
            leaf = path[-1].lower().rstrip("s")
            title = f"{ADJECTIVES[j % len(ADJECTIVES)]} {leaf} number {j}{title_suffix}"
            rows.append({"asin": f"B{i:02d}{j:05d}", "title": title, "category_path": path})
    return pl.DataFrame(rows)


def _embeddings(data_dir: Path, keys: dict[str, list], texts: list[str]) -> pl.DataFrame:
    model = query_text_model(data_dir)
    vecs = np.asarray(model.encode(texts), dtype=np.float32)
    return pl.DataFrame(
        {
            **keys,
            "model_id": [model.model_id] * len(texts),
            "content_hash": [hashlib.sha1(t.encode()).hexdigest() for t in texts],
            "embedding": pl.Series(vecs, dtype=pl.Array(pl.Float32, vecs.shape[1])),
        }
    )


def write_catalogue(data_dir: Path, title_suffix: str = "") -> None:
    """(Re)write every table atomically, as a build does; ``title_suffix`` marks a new build."""
    assets = data_dir / "assets"
    products = products_frame(title_suffix)
    tree = build_tree(products["category_path"].to_list())
    splits = split_catalogue(products, holdout_fraction=0.0)
    split_df = pl.DataFrame({"asin": list(splits), "split": list(splits.values())})
    pairs = evaluation_pairs(products, split_df)
    image_rows = []
    for n, asin in enumerate(products["asin"]):
        if n % 7 == 6:  # some products without an image, as in real catalogues
            image_rows.append((asin, "missing", None, None))
            continue
        data = _png(n)
        sha = hashlib.sha256(data).hexdigest()
        rel = relative_cache_path(sha, "png")
        atomic_write_bytes(data_dir / rel, data)
        image_rows.append((asin, "ok", rel, sha))
    images = pl.DataFrame(
        image_rows, schema=["asin", "status", "cache_path", "sha256"], orient="row"
    )
    titles = _embeddings(
        data_dir, {"asin": products["asin"].to_list()}, products["title"].to_list()
    )
    cats = _embeddings(
        data_dir,
        {"node_id": tree["node_id"].to_list(), "name": tree["name"].to_list()},
        tree["name"].to_list(),
    )
    # Embeddings first, products last: the order a build writes them in.
    atomic_write_parquet(titles, assets / "title_embeddings.parquet")
    atomic_write_parquet(cats, assets / "category_embeddings.parquet")
    atomic_write_parquet(images, assets / "product_images.parquet")
    atomic_write_parquet(tree, assets / "category_tree.parquet")
    atomic_write_parquet(pairs, assets / "evaluation_pairs.parquet")
    atomic_write_parquet(products, assets / "products.parquet")
