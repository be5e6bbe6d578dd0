"""What every model ranks: the held-out (test) collection of a setting and its queries.

Plain functions of the ``evaluation_pairs`` table and vector sets; no Dagster.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from catret_pipeline.retrieval.schemas import MIN_DEPTH
from catret_pipeline.retrieval.vectors import VectorSet


def held_out_pairs(evaluation_pairs: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    lf = evaluation_pairs.lazy() if isinstance(evaluation_pairs, pl.DataFrame) else evaluation_pairs
    return lf.filter(pl.col("split") == "test").select("setting", "asin", "category_name").collect()


def settings_of(pairs: pl.DataFrame) -> list[str]:
    return sorted(pairs["setting"].unique().to_list())


def collection_asins(pairs: pl.DataFrame, setting: str) -> list[str]:
    """The setting's test products: what every model ranks for that setting."""
    return sorted(pairs.filter(pl.col("setting") == setting)["asin"].unique().to_list())


def query_plan(pairs: pl.DataFrame, setting: str) -> pl.DataFrame:
    """``query`` (category name), ``n_relevant`` (R) and ``depth`` = max(10, R) per query."""
    return (
        pairs.filter(pl.col("setting") == setting)
        .group_by(pl.col("category_name").alias("query"))
        .agg(pl.col("asin").n_unique().alias("n_relevant"))
        .with_columns(pl.max_horizontal(pl.col("n_relevant"), pl.lit(MIN_DEPTH)).alias("depth"))
        .sort("query")
    )


def check_dims(queries: VectorSet, dim: int, what: str) -> None:
    # Different encoders on the two sides (e.g. two CLIP variants) make every score meaningless.
    if len(queries) and queries.dim != dim:
        raise ValueError(f"{what}: query vectors have dimension {queries.dim}, products {dim}")


def category_matrix(queries: VectorSet, names: list[str], dim: int) -> np.ndarray:
    """The vectors of the query ``names`` that have one, in ``names`` order."""
    lookup = queries.lookup()
    rows = [lookup[n] for n in names if n in lookup]
    if not rows:
        return np.zeros((0, dim), np.float32)
    return queries.matrix[rows]
