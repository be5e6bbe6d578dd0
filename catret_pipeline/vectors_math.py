"""Embedding columns as matrices, and row normalisation: the one copy every stage uses.

Pure numpy / polars (no Dagster, no torch, no other catret module), so fusion, retrieval,
embeddings, encoders, delivery and serving can all import it without importing each other.
"""

from __future__ import annotations

import numpy as np
import polars as pl

#: Floor on a row norm: a zero row divides by this and stays zero instead of becoming NaN.
NORM_EPS = 1e-12


def embedding_matrix(series: pl.Series) -> np.ndarray:
    """A C-contiguous float32 ``(n, dim)`` matrix from an Array or List embedding column.

    Empty input: ``(0, dim)`` when the dtype fixes the width (``pl.Array(_, dim)``), else
    ``(0, 0)``; an empty column of any dtype is accepted, since empty frames often carry no
    usable schema. Non-empty input must be a vector column without null rows, every row of
    one length; anything else raises ``ValueError``.
    """
    name = series.name or "embedding"
    if series.len() == 0:
        width = series.dtype.size if isinstance(series.dtype, pl.Array) else 0
        return np.zeros((0, width), dtype=np.float32)
    if not isinstance(series.dtype, pl.Array | pl.List):
        raise ValueError(f"column {name!r} is {series.dtype}, not a vector column")
    if series.null_count():
        raise ValueError(f"column {name!r} has {series.null_count()} null vector(s)")
    if isinstance(series.dtype, pl.List):
        lengths = series.list.len().unique().sort()
        if lengths.len() != 1:
            raise ValueError(
                f"column {name!r} holds vectors of different lengths: {lengths.to_list()}"
            )
        series = series.list.to_array(int(lengths[0]))
    return np.ascontiguousarray(series.to_numpy(), dtype=np.float32)


def as_matrix(x, name: str = "vectors", *, check_finite: bool = True) -> np.ndarray:
    """A 2-d C-contiguous float32 array (a 1-d input is one row).

    ``check_finite`` refuses NaN/inf rows, naming how many: they would poison every ranking.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array, got shape {arr.shape}")
    if check_finite and arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} has {bad} row(s) with NaN or infinite values")
    return np.ascontiguousarray(arr)


def l2_normalize(x, name: str = "vectors", *, check_finite: bool = True) -> np.ndarray:
    """Unit-length float32 rows, so inner product == cosine similarity.

    A zero row stays zero (its cosine is undefined: it scores 0 against everything) rather
    than raising or becoming NaN; empty input keeps its shape. ``check_finite=True`` (what
    retrieval, delivery and serving need before an index sees the vectors) raises
    ``ValueError`` on NaN/inf rows; ``check_finite=False`` (fusion inputs, encoder outputs:
    checked downstream, and not worth a second pass over every batch) lets them through.
    """
    arr = as_matrix(x, name, check_finite=check_finite)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.ascontiguousarray(arr / np.maximum(norms, np.float32(NORM_EPS)), dtype=np.float32)
