"""Incremental embedding tables: which rows to (re)encode, which to carry over, and the merge.

A row of an embedding table is reusable when the previous table has the same key with the same
``content_hash`` (hash of the exact encoder input) and the same ``model_id`` (model + weights +
anything else that changes the vectors). Everything else is encoded; previous rows whose key is
gone are dropped. Pure polars / numpy, no Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

REQUIRED_PREVIOUS = ("model_id", "content_hash", "embedding")


@dataclass(frozen=True)
class IncrementalStats:
    encoded: int
    reused: int
    dropped: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class IncrementalPlan:
    """``to_encode``: current rows needing the encoder (all current columns, current order).
    ``reused``: previous rows carried over unchanged (previous columns)."""

    keys: list[str]
    model_id: str
    current: pl.DataFrame
    to_encode: pl.DataFrame
    reused: pl.DataFrame
    dropped: int
    previous_usable: bool


def embedding_series(vectors: np.ndarray, name: str = "embedding") -> pl.Series:
    """A (n, dim) array as a polars Array(Float32, dim) column (Parquet fixed-size list)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {arr.shape}")
    return pl.Series(name, arr, dtype=pl.Array(pl.Float32, arr.shape[1]))


def embedding_dim(df: pl.DataFrame | None, column: str = "embedding") -> int | None:
    if df is None or column not in df.columns:
        return None
    dtype = df.schema[column]
    return dtype.size if isinstance(dtype, pl.Array) else None


def _check_unique(df: pl.DataFrame, keys: Sequence[str], what: str) -> None:
    missing = [k for k in [*keys, "content_hash"] if k not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")
    dup = df.select(keys).is_duplicated()
    if dup.any():
        example = df.filter(dup).row(0, named=True)
        raise ValueError(
            f"{what} has {int(dup.sum())} rows with duplicate key {list(keys)}, e.g. {example}"
        )


def usable_previous(
    previous: pl.DataFrame | None, keys: Sequence[str], dim: int | None = None
) -> bool:
    """Whether an old table can be reused at all (schema drift or another width: start over)."""
    if previous is None:
        return False
    if any(c not in previous.columns for c in [*keys, *REQUIRED_PREVIOUS]):
        return False
    width = embedding_dim(previous)
    return width is not None and (dim is None or width == dim)


def _reusable_pool(
    tables: Sequence[pl.DataFrame | None], keys: Sequence[str], model_id: str, dim: int | None
) -> pl.DataFrame | None:
    """Rows of earlier results made by ``model_id``; later tables win per key."""
    usable = []
    for t in tables:
        if not usable_previous(t, keys, dim):
            continue
        rows = t.filter(pl.col("model_id") == model_id)
        if rows.height:
            usable.append(rows)
    if not usable:
        return None
    widths = {embedding_dim(t) for t in usable}
    if len(widths) > 1:  # one model_id, several widths: trust the newest only
        usable = usable[-1:]
    stacked = pl.concat(usable, how="diagonal_relaxed") if len(usable) > 1 else usable[0]
    return stacked.unique(subset=list(keys), keep="last", maintain_order=True)


def plan_incremental(
    current: pl.DataFrame,
    previous: pl.DataFrame | None,
    keys: Sequence[str],
    model_id: str,
    dim: int | None = None,
    checkpoints: Sequence[pl.DataFrame] = (),
) -> IncrementalPlan:
    """Split ``current`` (keys + ``content_hash`` + encoder inputs) into rows to encode and rows to reuse.

    ``previous`` is the last good table (it decides ``dropped``); ``checkpoints`` are rows
    written by an interrupted run, reusable like previous rows and newer than them.
    """
    keys = list(keys)
    _check_unique(current, keys, "current input")
    dropped = 0
    if previous is not None and all(k in previous.columns for k in keys):
        dropped = (
            previous.select(keys).unique().join(current.select(keys), on=keys, how="anti").height
        )
    pool = _reusable_pool([previous, *checkpoints], keys, model_id, dim)
    if pool is None:
        return IncrementalPlan(
            keys=keys,
            model_id=model_id,
            current=current,
            to_encode=current,
            reused=pl.DataFrame(),
            dropped=dropped,
            previous_usable=False,
        )
    match = pool.select(*keys, pl.col("content_hash").alias("__prev_hash"))
    joined = current.join(match, on=keys, how="left")
    same = (pl.col("__prev_hash") == pl.col("content_hash")).fill_null(False)
    reuse_keys = joined.filter(same).select(keys)
    to_encode = joined.filter(~same).drop("__prev_hash")
    reused = pool.join(reuse_keys, on=keys, how="semi")
    return IncrementalPlan(
        keys=keys,
        model_id=model_id,
        current=current,
        to_encode=to_encode,
        reused=reused,
        dropped=dropped,
        previous_usable=True,
    )


def encoded_frame(
    rows: pl.DataFrame,
    vectors: np.ndarray,
    keys: Sequence[str],
    model_id: str,
    extra: Sequence[str] = (),
) -> pl.DataFrame:
    """New table rows: keys, ``model_id``, ``content_hash``, extra columns, ``embedding``."""
    if vectors.shape[0] != rows.height:
        raise ValueError(f"{vectors.shape[0]} vectors for {rows.height} rows")
    return rows.select(
        *keys,
        pl.lit(model_id, dtype=pl.String).alias("model_id"),
        pl.col("content_hash").cast(pl.String),
        *extra,
    ).with_columns(embedding_series(vectors))


def combine(
    plan: IncrementalPlan,
    encoded: pl.DataFrame,
    dim: int,
    extra: Sequence[str] = (),
) -> tuple[pl.DataFrame, IncrementalStats]:
    """Reused + newly encoded rows in the current input's order.

    Rows of ``to_encode`` missing from ``encoded`` (e.g. an image that failed to decode) are
    simply absent from the result; the caller reports them.
    """
    keys = plan.keys
    columns = [*keys, "model_id", "content_hash", *extra, "embedding"]
    schema_dtype = pl.Array(pl.Float32, dim)
    parts = []
    for part in (plan.reused, encoded):
        if part.height == 0:
            continue
        missing = [c for c in columns if c not in part.columns]
        if missing:
            raise ValueError(f"rows to combine lack column(s) {missing}")
        parts.append(part.select(columns).with_columns(pl.col("embedding").cast(schema_dtype)))
    if parts:
        merged = pl.concat(parts, how="vertical_relaxed")
    else:
        template = encoded if set(columns) <= set(encoded.columns) else plan.current
        merged = _empty(template, columns, keys, extra, schema_dtype)
    order = plan.current.select(keys).with_row_index("__order")
    out = merged.join(order, on=keys, how="inner").sort("__order").drop("__order")
    stats = IncrementalStats(
        encoded=encoded.height,
        reused=plan.reused.height,
        dropped=plan.dropped,
        total=out.height,
    )
    return out, stats


def _empty(template: pl.DataFrame, columns, keys, extra, emb_dtype) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {}
    for c in columns:
        if c == "embedding":
            schema[c] = emb_dtype
        elif c in ("model_id", "content_hash"):
            schema[c] = pl.String
        elif c in template.columns:
            schema[c] = template.schema[c]
        else:
            schema[c] = pl.String
    return pl.DataFrame(schema=schema)
