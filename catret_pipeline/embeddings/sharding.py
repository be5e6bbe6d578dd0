"""Hash shards of a keyed table: which shard a key belongs to, and merging shard tables back.

The shard of a key is ``int(sha1(key)[:8 bytes]) mod n``: stable across processes, machines and
Python / polars versions (unlike ``hash()`` or ``pl.Series.hash``), so a shard step re-run
anywhere selects the same rows and finds its own previous table. Pure polars, no Dagster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

SHARD_GROUP = "embedding_shards"


def _bucket(key: str | None) -> int:
    data = b"" if key is None else key.encode("utf-8")
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def shard_of(key: str | None, shards: int) -> int:
    """The shard (0 .. shards-1) of one key."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return _bucket(key) % shards


def shard_ids(keys: pl.Series | Iterable[str | None], shards: int) -> np.ndarray:
    """The shard of every key, as an int64 array in input order."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    values = keys.to_list() if isinstance(keys, pl.Series) else list(keys)
    if shards == 1:
        return np.zeros(len(values), dtype=np.int64)
    return np.fromiter((_bucket(k) % shards for k in values), dtype=np.int64, count=len(values))


def shard_mask(keys: pl.Series, shard: int, shards: int) -> pl.Series:
    """Boolean mask of the keys that fall in ``shard``."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    return pl.Series("in_shard", shard_ids(keys, shards) == shard, dtype=pl.Boolean)


def shard_name(shard: int, shards: int) -> str:
    return f"shard_{shard}_of_{shards}"


def merge_shards(
    tables: Sequence[pl.DataFrame], order: pl.DataFrame, keys: Sequence[str]
) -> tuple[pl.DataFrame, int]:
    """Concatenate shard tables in the row order of ``order`` (the unsharded input's keys).

    Returns (merged, stale): rows whose key is not in ``order`` are left out and counted in
    ``stale``. A key present in two shards means the shards disagree on the assignment: error.
    """
    keys = list(keys)
    parts = [t for t in tables if t.height]
    if not parts:
        template = next((t for t in tables), None)
        if template is None:
            raise ValueError("merge_shards needs at least one table")
        return template.clear(), 0
    stacked = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
    dup = stacked.select(keys).is_duplicated()
    if dup.any():
        example = stacked.filter(dup).select(keys).row(0, named=True)
        raise ValueError(
            f"{int(dup.sum())} rows share a key across shards, e.g. {example}: "
            "the shard tables come from different shard assignments"
        )
    index = order.select(keys).with_row_index("__order")
    merged = stacked.join(index, on=keys, how="inner").sort("__order").drop("__order")
    return merged, stacked.height - merged.height
