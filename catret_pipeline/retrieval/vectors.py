"""Which vectors each retrieval model ranks with: (model, setting) -> product and query vectors.

- ``mpnet`` (zero-shot): queries = ``category_embeddings`` of the category name (text
  encoder), products = ``title_embeddings``. The same for every setting.
- ``clip`` (zero-shot): queries = ``category_clip_embeddings``, products = ``image_embeddings``.
  Products without an image have no row there, so they are not in CLIP's index and are never
  retrieved by it: they rank below every retrieved item (and still count as relevant).
- every ``model`` in ``fused_representations`` (``clip-i``, ``clip-ia``, ``clip-ita``,
  ``clip-ita-masked``, ...): that model's ``kind='product'`` / ``kind='category'`` rows of the
  setting.

A query is a category NAME: several tree nodes can share one ("Accessories"), and they share one
query vector - the row of the smallest ``node_id`` (the text encoder maps equal names to equal
vectors anyway, so the choice only pins determinism).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from catret_pipeline.vectors_math import embedding_matrix

BM25_MODEL = "bm25"
ZERO_SHOT_MODELS = ("mpnet", "clip")
#: Names the zero-shot text baseline is reported under, by the encoder of title_embeddings:
#: ``mpnet`` only when it is MPNet (the paper's baseline), else the model it really is.
TEXT_BASELINE_NAMES = ("mpnet", "minilm", "text-zero-shot")


def text_baseline_name(model_ids: list[str]) -> str:
    """The reported name of the ``mpnet`` (title vs name cosine) baseline for these encoders."""
    text = " ".join(model_ids).lower()
    if "mpnet" in text:
        return "mpnet"
    if "minilm" in text:
        return "minilm"
    return "text-zero-shot"


#: The zero-shot CLIP row's name when its towers were never trained together (the offline
#: profile: random or image-only weights). Its scores are noise; it is kept, under this name, so
#: the table says what the offline profile lacks, and never counts as the paper's CLIP.
CLIP_RANDOM_INIT = "clip-random-init"


def clip_baseline_name(model_ids: list[str]) -> str:
    """The reported name of the ``clip`` (image vs name cosine) baseline for these encoders."""
    from catret_pipeline.encoders.openclip import model_id_is_aligned

    return "clip" if all(model_id_is_aligned(m) for m in model_ids) else CLIP_RANDOM_INIT


Frame = pl.DataFrame | pl.LazyFrame


def _lazy(df: Frame | None) -> pl.LazyFrame | None:
    if df is None:
        return None
    return df.lazy() if isinstance(df, pl.DataFrame) else df


@dataclass
class VectorSet:
    """Keys (asins or category names) and their vectors, row i <-> keys[i]; keys sorted."""

    keys: list[str]
    matrix: np.ndarray
    n_null: int = 0  # rows dropped because their embedding was null

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def restrict(self, keys) -> VectorSet:
        """Only the rows whose key is in ``keys`` (order kept)."""
        wanted = set(keys)
        idx = [i for i, k in enumerate(self.keys) if k in wanted]
        return VectorSet([self.keys[i] for i in idx], self.matrix[idx], self.n_null)

    def lookup(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def _vector_set(lf: pl.LazyFrame, key: str, sort_extra: list[str] | None = None) -> VectorSet:
    df = lf.select([key, *(sort_extra or []), "embedding"]).collect()
    df = df.filter(pl.col(key).is_not_null())
    n_null = int(df["embedding"].null_count())
    df = (
        df.filter(pl.col("embedding").is_not_null())
        .sort([key, *(sort_extra or [])])
        .unique(subset=[key], keep="first", maintain_order=True)
    )
    matrix = embedding_matrix(df["embedding"])
    return VectorSet(df[key].cast(pl.String).to_list(), matrix, n_null)


@dataclass
class VectorTables:
    """The upstream embedding tables; each may be absent (None) if its model is not wanted."""

    title_embeddings: Frame | None = None
    image_embeddings: Frame | None = None
    category_embeddings: Frame | None = None
    category_clip_embeddings: Frame | None = None
    fused_representations: Frame | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def trained_models(self) -> list[str]:
        fused = _lazy(self.fused_representations)
        if fused is None:
            return []
        names = fused.select(pl.col("model").unique()).collect()["model"].drop_nulls().to_list()
        clash = sorted(set(names) & {BM25_MODEL, *ZERO_SHOT_MODELS})
        if clash:
            raise ValueError(f"fused_representations model name(s) {clash} clash with baselines")
        return sorted(names)

    def vector_models(self) -> list[str]:
        """Every model ranked by vectors: the zero-shot baselines, then the trained ones."""
        return [*ZERO_SHOT_MODELS, *self.trained_models()]

    def _require(self, name: str) -> pl.LazyFrame:
        lf = _lazy(getattr(self, name))
        if lf is None:
            raise ValueError(f"table {name} was not provided")
        return lf

    def _fused(self, model: str, setting: str, kind: str) -> pl.LazyFrame:
        return (
            self._require("fused_representations")
            .filter(
                (pl.col("model") == model)
                & (pl.col("setting") == setting)
                & (pl.col("kind") == kind)
            )
            .select(pl.col("key"), pl.col("embedding"))
        )

    def products(self, model: str, setting: str) -> VectorSet:
        """``asin`` -> product vector for ``model`` in ``setting``."""
        # Zero-shot vectors do not depend on the setting: read them once.
        key = ("products", model, None if model in ZERO_SHOT_MODELS else setting)
        if key not in self._cache:
            self._cache[key] = self._products(model, setting)
        return self._cache[key]

    def queries(self, model: str, setting: str) -> VectorSet:
        """Category name -> query vector for ``model`` in ``setting``."""
        key = ("queries", model, None if model in ZERO_SHOT_MODELS else setting)
        if key not in self._cache:
            self._cache[key] = self._queries(model, setting)
        return self._cache[key]

    def _products(self, model: str, setting: str) -> VectorSet:
        if model == "mpnet":
            return _vector_set(self._require("title_embeddings"), "asin")
        if model == "clip":
            return _vector_set(self._require("image_embeddings"), "asin")
        return _vector_set(self._fused(model, setting, "product"), "key")

    def _queries(self, model: str, setting: str) -> VectorSet:
        if model in ZERO_SHOT_MODELS:
            table = "category_embeddings" if model == "mpnet" else "category_clip_embeddings"
            lf = self._require(table)
            extra = ["node_id"] if "node_id" in lf.collect_schema().names() else []
            return _vector_set(lf, "name", extra)
        return _vector_set(self._fused(model, setting, "category"), "key")
