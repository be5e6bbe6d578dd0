"""How the stale rows of an embedding table become vectors: one chunk encoder per modality.

A chunk encoder (:class:`ChunkEncoder`) names its model (``model_id``), loads it on ``dim`` and
turns a chunk of input rows into :class:`Encoded` (the rows it encoded, their vectors, and why
the others failed); :func:`catret_pipeline.embeddings.runner.run_incremental` builds the table
rows from that. The encoders wrap the ``clip`` / ``text_encoder`` resources, which load their
models lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl

from catret_pipeline.encoders.openclip import ProgressFn


@dataclass(frozen=True)
class Encoded:
    """``vectors[i]`` embeds ``rows[i]``; ``errors``: {position in the input chunk: reason} for
    the rows left out of ``rows`` (they get no embedding)."""

    rows: pl.DataFrame
    vectors: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)


class ChunkEncoder(Protocol):
    #: Columns the encoder adds to ``Encoded.rows`` that the table keeps.
    extra: tuple[str, ...]

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int:
        """Embedding width; loads the model."""
        ...

    def encode(self, rows: pl.DataFrame, progress: ProgressFn) -> Encoded: ...


@dataclass(frozen=True)
class _ResourceEncoder:
    """A chunk encoder over a ``clip`` or ``text_encoder`` resource (its id and its model)."""

    resource: Any  # OpenClipEncoder | TextEncoder
    extra: ClassVar[tuple[str, ...]] = ()

    @property
    def model_id(self) -> str:
        return self.resource.model_id

    @property
    def dim(self) -> int:
        return self.resource.dim


@dataclass(frozen=True)
class SentenceText(_ResourceEncoder):
    """A text column through the sentence encoder (``TextEncoder``)."""

    column: str

    def encode(self, rows: pl.DataFrame, progress: ProgressFn) -> Encoded:
        texts = rows[self.column].fill_null("").to_list()
        return Encoded(rows, self.resource.encode(texts, progress))


@dataclass(frozen=True)
class ClipText(_ResourceEncoder):
    """A text column through CLIP's text tower (``OpenClipEncoder``)."""

    column: str

    def encode(self, rows: pl.DataFrame, progress: ProgressFn) -> Encoded:
        texts = rows[self.column].fill_null("").to_list()
        return Encoded(rows, self.resource.encode_texts(texts, progress))


@dataclass(frozen=True)
class ClipImages(_ResourceEncoder):
    """Cached product images (``cache_path`` under the data dir) through CLIP's image tower; a
    missing or undecodable image is a per-row error, never the end of the run."""

    storage: Any  # CatretStorage

    def encode(self, rows: pl.DataFrame, progress: ProgressFn) -> Encoded:
        paths, errors, pos = [], {}, []
        for i, rel in enumerate(rows["cache_path"].to_list()):
            if not rel:
                errors[i] = "no cache_path"
                continue
            try:
                p = self.storage.path(rel)
            except ValueError as exc:
                errors[i] = str(exc)
                continue
            if not p.is_file():
                errors[i] = f"cached image missing: {rel}"
                continue
            paths.append(p)
            pos.append(i)
        res = self.resource.encode_image_files(paths, progress=progress)
        for j, err in res.errors.items():
            errors[pos[j]] = err
        good = [pos[j] for j in np.flatnonzero(res.ok)]
        ok_rows = rows.with_row_index("__pos").filter(pl.col("__pos").is_in(good)).drop("__pos")
        return Encoded(ok_rows, res.embeddings[res.ok], errors)


def pool_attributes(
    attributes: list[list[str] | None], encode: Callable[[list[str]], np.ndarray], dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of each product's attribute-string embeddings, re-normalised (the paper's h_a).

    Blank strings are ignored; a product with none gets a zero vector. Returns
    (vectors, has_attributes, n_attributes). Each distinct string is encoded once.
    """
    cleaned = [[a.strip() for a in (attrs or []) if a and a.strip()] for attrs in attributes]
    counts = np.array([len(c) for c in cleaned], dtype=np.int64)
    out = np.zeros((len(cleaned), dim), dtype=np.float32)
    flat = [a for c in cleaned for a in c]
    if flat:
        unique = list(dict.fromkeys(flat))
        index = {s: i for i, s in enumerate(unique)}
        vecs = encode(unique)
        gathered = vecs[[index[a] for a in flat]]
        nonempty = np.flatnonzero(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        sums = np.add.reduceat(gathered, offsets, axis=0)
        means = sums / counts[nonempty, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        out[nonempty] = means / np.maximum(norms, 1e-12)
    return out, counts > 0, counts


@dataclass(frozen=True)
class SentenceAttributes(_ResourceEncoder):
    """A product's attribute strings through the sentence encoder, pooled (:func:`pool_attributes`)."""

    extra: ClassVar[tuple[str, ...]] = ("has_attributes", "n_attributes")

    def encode(self, rows: pl.DataFrame, progress: ProgressFn) -> Encoded:
        model = self.resource.model()
        vectors, has, counts = pool_attributes(
            rows["attributes"].to_list(),
            lambda texts: model.encode(
                texts, batch_size=self.resource.batch_size, progress=progress
            ),
            model.dim,
        )
        rows = rows.with_columns(
            pl.Series("has_attributes", has, dtype=pl.Boolean),
            pl.Series("n_attributes", counts, dtype=pl.Int32),
        )
        return Encoded(rows, vectors)
