"""Whole-catalogue product vectors and category query vectors of one (model, setting).

The evaluation indexes hold only a setting's test products; serving ranks every product of
the catalogue. For a trained head the product vectors are recomputed here from the embedding
tables (they cover every product) with the head's own weights, the same ``encode_products``
that built ``fused_representations``; the zero-shot baselines use their embedding tables as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from catret_pipeline.serving.tables import StoreError
from catret_pipeline.storage.artefacts import (
    ArtefactPath,
    artefact_path,
    as_artefact_path,
    is_remote,
)

if TYPE_CHECKING:
    from catret_pipeline.serving.encoders import EncoderSpecs
from catret_pipeline.vectors_math import embedding_matrix

#: name -> query vector of a name outside the tree (None when no matching encoder exists).
Encode = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class ModelVectors:
    model: str
    setting: str
    asins: list[str]
    vectors: np.ndarray
    #: The precomputed query vector of every tree name the model has one for.
    queries: dict[str, np.ndarray]
    encode: Encode | None
    #: Why ``encode`` is None (shown to a client asking for a new name).
    encode_unavailable: str | None = None


class ArtefactRoot:
    """``inference`` locates artefacts through ``path(*parts)`` under the artefact root (the
    data dir, or the ``artefact_store`` URL as a ``UPath``)."""

    def __init__(self, root: ArtefactPath) -> None:
        self.root = as_artefact_path(root)
        if not is_remote(self.root):
            self.root = self.root.resolve()

    def path(self, *parts: str) -> ArtefactPath:
        # A model name is user input (``catret search --model``): never leave the root.
        try:
            return artefact_path(self.root, *parts)
        except ValueError as exc:
            raise FileNotFoundError(str(exc)) from exc


def _need(tables: dict[str, pl.DataFrame], *names: str) -> None:
    missing = [n for n in names if n not in tables]
    if missing:
        raise StoreError(
            f"serving needs the table(s) {', '.join(missing)}: run `catret materialize`"
        )


def _by_name(df: pl.DataFrame, key: str = "name") -> dict[str, np.ndarray]:
    rows = df.filter(pl.col("embedding").is_not_null())
    # Same-name nodes share one query vector: the smallest node_id's, as in retrieval_runs.
    if "node_id" in rows.columns:
        rows = rows.sort("node_id")
    rows = rows.unique(subset=key, keep="first", maintain_order=True)
    matrix = embedding_matrix(rows["embedding"])
    return dict(zip(rows[key].to_list(), matrix, strict=True))


def _keyed(df: pl.DataFrame, asins: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    rows = df.filter(pl.col("embedding").is_not_null()).unique("asin", keep="first")
    if asins is not None:
        rows = rows.filter(pl.col("asin").is_in(asins))
    return rows["asin"].to_list(), embedding_matrix(rows["embedding"])


def _model_ids(df: pl.DataFrame) -> list[str]:
    return (
        sorted(df["model_id"].drop_nulls().unique().to_list()) if "model_id" in df.columns else []
    )


def _text_encode(specs: EncoderSpecs, stored: list[str], table: str, after=None):
    from catret_pipeline.serving import encoders

    spec = specs.text
    if spec.model_id not in stored:
        return None, (
            f"names outside the tree need the text encoder {table} was built with "
            f"({', '.join(stored) or 'unknown'}); this server is configured with {spec.model_id}"
        )

    batcher = encoders.text_batcher(spec)

    def encode(name: str) -> np.ndarray:
        vec = batcher(name)[None, :]
        return (after(vec) if after else vec)[0]

    return encode, None


def trained(
    data_dir: Path,
    specs: EncoderSpecs,
    tables: dict[str, pl.DataFrame],
    model: str,
    setting: str,
    asins: list[str],
) -> ModelVectors:
    from catret_pipeline.fusion import inference
    from catret_pipeline.fusion.features import ProductFeatureTables

    _need(tables, "image_embeddings", "title_embeddings", "attribute_embeddings")
    _need(tables, "fused_representations")
    try:
        loaded = inference.load_fusion_model(ArtefactRoot(data_dir), model, setting)
    except FileNotFoundError as exc:
        raise StoreError(f"{model}/{setting}: {exc}") from exc
    features = ProductFeatureTables.from_frames(
        tables["image_embeddings"], tables["title_embeddings"], tables["attribute_embeddings"]
    )
    vectors = inference.encode_products(
        ArtefactRoot(data_dir), model, setting, asins, features, loaded=loaded
    )
    fused = tables["fused_representations"].filter(
        (pl.col("model") == model) & (pl.col("setting") == setting) & (pl.col("kind") == "category")
    )
    queries = _by_name(fused, key="key")
    stored = loaded.meta.get("input_model_ids", {}).get("category") or []
    stored = [stored] if isinstance(stored, str) else list(stored)
    encode, why = _text_encode(
        specs, stored, f"the {model}/{setting} head", after=loaded.encode_category_inputs
    )
    return ModelVectors(model, setting, asins, vectors, queries, encode, why)


def text_baseline(
    data_dir: Path,
    specs: EncoderSpecs,
    tables: dict[str, pl.DataFrame],
    model: str,
    setting: str,
    asins: list[str],
) -> ModelVectors:
    from catret_pipeline.retrieval.vectors import text_baseline_name

    _need(tables, "title_embeddings", "category_embeddings")
    keys, vectors = _keyed(tables["title_embeddings"], asins)
    # Reported as the pipeline reports it: mpnet only when the titles were encoded by MPNet.
    model = text_baseline_name(_model_ids(tables["title_embeddings"]))
    cats = tables["category_embeddings"]
    encode, why = _text_encode(specs, _model_ids(cats), "category_embeddings")
    return ModelVectors(model, setting, keys, vectors, _by_name(cats), encode, why)


def clip_baseline(
    data_dir: Path,
    specs: EncoderSpecs,
    tables: dict[str, pl.DataFrame],
    model: str,
    setting: str,
    asins: list[str],
    clip_prompt: str | None = None,
) -> ModelVectors:
    from catret_pipeline.embeddings.assets import DEFAULT_CATEGORY_PROMPT
    from catret_pipeline.embeddings.prompt import recover_prompt
    from catret_pipeline.serving import encoders

    _need(tables, "image_embeddings", "category_clip_embeddings")
    keys, vectors = _keyed(tables["image_embeddings"], asins)
    cats = tables["category_clip_embeddings"]
    encode, why = None, None
    spec = specs.clip
    if spec.model_id not in _model_ids(cats):
        why = (
            f"names outside the tree need the CLIP model the build used; configured {spec.model_id}"
        )
    else:
        # The recorded prompt first (the table's own summary), proven against the stored
        # hashes like the fallbacks, so a stale or missing record cannot mislead.
        candidates = [p for p in (clip_prompt, DEFAULT_CATEGORY_PROMPT, "{name}") if p]
        prompt = recover_prompt(cats, candidates) or DEFAULT_CATEGORY_PROMPT

        def encode(name: str) -> np.ndarray:
            text = prompt.replace("{name}", name)
            return np.asarray(encoders.clip_model(spec).encode_texts([text]), dtype=np.float32)[0]

    return ModelVectors(model, setting, keys, vectors, _by_name(cats), encode, why)


def model_vectors(
    data_dir: Path,
    specs: EncoderSpecs,
    tables: dict[str, pl.DataFrame],
    model: str,
    setting: str,
    asins: list[str],
    clip_prompt: str | None = None,
) -> ModelVectors:
    """Vectors of ``model`` for ``asins`` (every product) in ``setting``; ``clip_prompt`` is
    the prompt recorded with ``category_clip_embeddings`` (``search.recorded_prompt``)."""
    from catret_pipeline.fusion.features import MODEL_SPECS

    if model in ("clip", "clip-random-init"):
        return clip_baseline(data_dir, specs, tables, model, setting, asins, clip_prompt)
    if model in ("mpnet", "minilm", "text-zero-shot"):
        return text_baseline(data_dir, specs, tables, model, setting, asins)
    if model in MODEL_SPECS:
        return trained(data_dir, specs, tables, model, setting, asins)
    raise StoreError(
        f"model {model!r} cannot be served: serve a trained head ({', '.join(sorted(MODEL_SPECS))}), "
        "mpnet or clip"
    )
