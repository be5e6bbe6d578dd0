"""When a trained head may be kept although its training data moved on.

A head is trained on a set of examples (train + val pairs of one setting). Each example is
keyed by what training saw of it: the product, its category node and name, its split, and a
hash of the exact input rows fed to ``g_p`` and ``g_c``. The change between two trainings is
``|previous symmetric-difference current| / max(1, |previous|)``: an added or removed example
counts once, an edited one (new vectors, new category) twice (old key gone, new key added).

The key set of the data a head was trained on is stored beside its weights as
``models/<model>/<setting>.train_keys.parquet``; the artefact JSON records that file's sha256,
so a key file that does not belong to the weights is treated as missing.

Torch-free on purpose: the assets module imports this at module level.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from catret_pipeline.fusion.features import PairData
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.hashing import sha256_file_or_none

#: Default of ``FusionModelsConfig.retrain_fraction`` (docs/models.md, "When heads retrain").
DEFAULT_RETRAIN_FRACTION = 0.05

KEY_COLUMNS = ("asin", "category_id", "category_name", "split", "input_hash")
KEY_SCHEMA = {c: pl.String for c in KEY_COLUMNS}


class _HasPath(Protocol):
    def path(self, *parts: str) -> Path: ...


def row_hashes(*blocks: np.ndarray) -> list[str]:
    """A 64-bit hex digest per row of the side-by-side ``blocks`` (by dtype and bytes)."""
    n = blocks[0].shape[0] if blocks else 0
    if any(b.shape[0] != n for b in blocks):
        raise ValueError(f"blocks have different row counts {[b.shape[0] for b in blocks]}")
    if n == 0:
        return []
    dtypes = "|".join(str(b.dtype) for b in blocks).encode()
    rows = np.concatenate(
        [np.ascontiguousarray(b).reshape(n, -1).view(np.uint8) for b in blocks], axis=1
    )
    return [hashlib.blake2b(dtypes + r.tobytes(), digest_size=8).hexdigest() for r in rows]


def training_keys(splits: dict[str, PairData]) -> pl.DataFrame:
    """The key set of the examples in ``splits`` (split name -> that split's pairs).

    The input hash covers the product row fed to ``g_p`` (its modality blocks, normalised as
    trained) and the category row fed to ``g_c``, so a re-encoded image or title, a changed
    attribute list or a re-embedded category name each change the key.
    """
    frames = []
    for split, data in splits.items():
        n = len(data)
        if len(data.category_ids) != n or len(data.category_names) != n:
            raise ValueError(
                f"split {split!r}: PairData lacks category ids/names for its {n} pairs "
                "(build it with build_pair_data)"
            )
        frames.append(
            pl.DataFrame(
                {
                    "asin": data.asins,
                    "category_id": data.category_ids,
                    "category_name": data.category_names,
                    "split": [split] * n,
                    "input_hash": row_hashes(data.products, data.categories),
                },
                schema=KEY_SCHEMA,
            )
        )
    if not frames:
        return pl.DataFrame(schema=KEY_SCHEMA)
    return pl.concat(frames).unique(maintain_order=True)


def data_change_fraction(previous: pl.DataFrame, current: pl.DataFrame) -> float:
    """``|previous symmetric-difference current| / max(1, |previous|)`` over distinct keys.

    0.0 for equal sets whatever their order; can exceed 1 when the data grew a lot.
    """
    for name, df in (("previous", previous), ("current", current)):
        missing = [c for c in KEY_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{name} key set lacks columns {missing}")
    prev = previous.select(KEY_COLUMNS).unique()
    cur = current.select(KEY_COLUMNS).unique()
    only_prev = prev.join(cur, on=list(KEY_COLUMNS), how="anti", nulls_equal=True).height
    only_cur = cur.join(prev, on=list(KEY_COLUMNS), how="anti", nulls_equal=True).height
    return (only_prev + only_cur) / max(1, prev.height)


def check_retrain_fraction(value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ValueError(f"retrain_fraction must be a number >= 0, got {value!r}")
    return float(value)


def describe_change(fraction: float, limit: float) -> str:
    op = "<=" if fraction <= limit else ">"
    return f"training data changed {fraction:.1%} {op} {limit:.1%}"


def keys_path(storage: _HasPath, model: str, setting: str) -> Path:
    return storage.path("models", model, f"{setting}.train_keys.parquet")


def write_train_keys(storage: _HasPath, model: str, setting: str, keys: pl.DataFrame) -> str:
    """Write the key set atomically; returns the file's sha256 for the artefact JSON."""
    path = keys_path(storage, model, setting)
    atomic_write_parquet(keys.select(KEY_COLUMNS), path)
    return sha256_file_or_none(path) or ""


def read_train_keys(
    storage: _HasPath, model: str, setting: str, expected_sha256: str | None
) -> tuple[pl.DataFrame | None, str | None]:
    """The stored key set, or ``(None, why)`` when it is missing, damaged or not the one
    recorded with the weights."""
    path = keys_path(storage, model, setting)
    if not expected_sha256:
        return None, "the artefact records no training key file"
    sha = sha256_file_or_none(path)
    if sha is None:
        return None, f"training key file {path.name} is missing"
    if sha != expected_sha256:
        return None, f"training key file {path.name} does not match the weights"
    try:
        keys = pl.read_parquet(path)
    except Exception as exc:  # any unreadable file means "retrain", never a crash
        return None, f"training key file {path.name} is unreadable ({type(exc).__name__})"
    if any(c not in keys.columns for c in KEY_COLUMNS):
        return None, f"training key file {path.name} lacks key columns"
    return keys, None
