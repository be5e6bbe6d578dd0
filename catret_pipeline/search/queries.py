"""The query vector of a category name: the precomputed one of a tree name, or one encoded on
the fly after checking that the configured encoder is the one the stored vectors came from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from catret_pipeline.config import CatretConfig
from catret_pipeline.embeddings.prompt import recorded_prompt, recover_prompt
from catret_pipeline.search.reading import asset_path, read_table, scan
from catret_pipeline.search.results import MATERIALIZE_HINT, SearchError


def _specs(cfg: CatretConfig):
    from catret_pipeline.serving.encoders import EncoderSpecs

    return EncoderSpecs.from_config(cfg)


def precomputed(df: pl.DataFrame, key: str, name: str) -> np.ndarray | None:
    from catret_pipeline.vectors_math import embedding_matrix

    rows = df.filter((pl.col(key) == name) & pl.col("embedding").is_not_null())
    if rows.is_empty():
        return None
    # Same-name nodes share one query vector: the smallest node_id's, as in retrieval_runs.
    if "node_id" in rows.columns:
        rows = rows.sort("node_id")
    return embedding_matrix(rows["embedding"].head(1))[0]


def _stored_model_ids(df: pl.DataFrame, table: str) -> list[str]:
    if "model_id" not in df.columns:
        raise SearchError(f"{table} has no model_id column: re-run `catret materialize`")
    return sorted(df["model_id"].drop_nulls().unique().to_list())


def _check_encoder(encoder_id: str, stored: Sequence[str], table: str, kind: str) -> None:
    if not stored:
        raise SearchError(f"{table} is empty: cannot tell which {kind} encoder built the index")
    if encoder_id not in stored:
        raise SearchError(
            f"the index was built with another {kind} encoder: {table} holds vectors of "
            f"{', '.join(stored)}, the configured encoder is {encoder_id}. Search with the "
            "same encoder settings (CATRET_PROFILE / CATRET_CLIP_* / CATRET_TEXT_MODEL) as the "
            "build, or re-run `catret materialize` with the new ones"
        )


def _encode_text(cfg: CatretConfig, name: str, table: pl.DataFrame, table_name: str) -> np.ndarray:
    from catret_pipeline.serving import encoders

    # The encoder itself, built once per process from the build's settings (no Dagster
    # resources: a query needs the model, not the pipeline's definitions).
    # The id comes from the spec, so a wrong encoder is refused before anything is loaded.
    model_id = _specs(cfg).text.model_id
    _check_encoder(model_id, _stored_model_ids(table, table_name), table_name, "text")
    encoder = encoders.text_model(_specs(cfg).text)
    return np.asarray(encoder.encode([name]), dtype=np.float32)[0]


def query_vector(
    cfg: CatretConfig, model: str, setting: str, name: str
) -> tuple[np.ndarray, str, list[str]]:
    notes: list[str] = []
    if model == "mpnet":
        table = read_table(cfg, "category_embeddings", "mpnet")
        vec = precomputed(table, "name", name)
        if vec is not None:
            return vec, "precomputed", notes
        return _encode_text(cfg, name, table, "category_embeddings"), "encoded", notes
    if model == "clip":
        table = read_table(cfg, "category_clip_embeddings", "clip")
        vec = precomputed(table, "name", name)
        if vec is not None:
            return vec, "precomputed", notes
        from catret_pipeline.serving import encoders

        _check_encoder(
            _specs(cfg).clip.model_id,
            _stored_model_ids(table, "category_clip_embeddings"),
            "category_clip_embeddings",
            "CLIP",
        )
        from catret_pipeline.embeddings.assets import DEFAULT_CATEGORY_PROMPT

        recorded = recorded_prompt(asset_path(cfg, "category_clip_embeddings"))
        prompt = recover_prompt(
            table, [p for p in (recorded, DEFAULT_CATEGORY_PROMPT, "{name}") if p]
        )
        if prompt is None:
            prompt = DEFAULT_CATEGORY_PROMPT
            notes.append(
                "the build's CLIP prompt could not be recovered from category_clip_embeddings; "
                f"used the default {DEFAULT_CATEGORY_PROMPT!r}"
            )
        else:
            notes.append(f"CLIP prompt {prompt!r}")
        text = prompt.replace("{name}", name)
        clip = encoders.clip_model(_specs(cfg).clip)
        return np.asarray(clip.encode_texts([text]), dtype=np.float32)[0], "encoded", notes

    fused_path = asset_path(cfg, "fused_representations")
    if not fused_path.exists():
        raise SearchError(f"{model} needs fused_representations: {MATERIALIZE_HINT}")
    rows = (
        scan(fused_path)
        .filter(
            (pl.col("model") == model)
            & (pl.col("setting") == setting)
            & (pl.col("kind") == "category")
        )
        .select(pl.col("key").alias("name"), "embedding")
        .collect()
    )
    vec = precomputed(rows, "name", name)
    if vec is not None:
        return vec, "precomputed", notes
    return _encode_trained(cfg, model, setting, name), "encoded", notes


def _encode_trained(cfg: CatretConfig, model: str, setting: str, name: str) -> np.ndarray:
    from catret_pipeline.fusion import inference
    from catret_pipeline.serving import encoders
    from catret_pipeline.serving.vectors import ArtefactRoot
    from catret_pipeline.storage.artefacts import artefact_root

    storage = ArtefactRoot(artefact_root(cfg.data_dir, cfg.artefact_store))
    try:
        loaded = inference.load_fusion_model(storage, model, setting)
    except FileNotFoundError as exc:
        raise SearchError(f"{exc} ({MATERIALIZE_HINT})") from exc
    stored = loaded.meta.get("input_model_ids", {}).get("category") or []
    stored = [stored] if isinstance(stored, str) else list(stored)
    _check_encoder(_specs(cfg).text.model_id, stored, f"the {model}/{setting} artefact", "text")
    encoder = encoders.text_model(_specs(cfg).text)
    vec = inference.encode_queries(storage, model, setting, [name], encoder.encode, loaded=loaded)
    return vec[0]
