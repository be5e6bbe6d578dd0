"""Saved heads -> fused product vectors and category query vectors.

Reads the artefacts that ``artefacts`` writes (``models/<model>/<setting>.pt`` and ``.json``).
Every vector returned here is L2-normalised, so inner product = the cosine the heads were
trained on.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from catret_pipeline.fusion.artefacts import ARTEFACT_FORMAT, HasPath, artefact_paths
from catret_pipeline.fusion.features import (
    ModelSpec,
    ProductFeatureTables,
    model_spec,
)
from catret_pipeline.fusion.heads import FusionHeads, build_heads
from catret_pipeline.storage.artefacts import read_bytes
from catret_pipeline.vectors_math import l2_normalize

ENCODE_CHUNK = 8192


@dataclass
class LoadedFusionModel:
    model: str
    setting: str
    meta: dict
    heads: FusionHeads

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    @property
    def normalize_inputs(self) -> bool:
        return bool(self.meta["config"].get("normalize_inputs", True))

    @property
    def product_in_dim(self) -> int:
        return int(self.meta["dims"]["product_in_dim"])

    @property
    def category_in_dim(self) -> int:
        return int(self.meta["dims"]["category_in_dim"])

    def _run(
        self, fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, dim: int, what: str
    ) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(
                f"{self.model}/{self.setting} expects {what} inputs of width {dim}, got shape {x.shape}"
            )
        proj = int(self.meta["config"]["proj_dim"])
        out = np.zeros((x.shape[0], proj), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, x.shape[0], ENCODE_CHUNK):
                chunk = torch.from_numpy(x[start : start + ENCODE_CHUNK])
                out[start : start + len(chunk)] = fn(chunk).numpy()
        return out

    def encode_product_inputs(self, x: np.ndarray) -> np.ndarray:
        """Fused vectors from already-assembled ``g_p`` inputs (see ``features``)."""
        return self._run(self.heads.encode_products, x, self.product_in_dim, "product")

    def encode_category_inputs(self, text_vectors: np.ndarray) -> np.ndarray:
        """Query vectors from raw category-name text vectors (normalised here as in training)."""
        text_vectors = np.asarray(text_vectors, dtype=np.float32)
        if self.normalize_inputs and text_vectors.size:
            text_vectors = l2_normalize(text_vectors, check_finite=False)
        return self._run(
            self.heads.encode_categories, text_vectors, self.category_in_dim, "category"
        )


def load_fusion_model(storage: HasPath, model: str, setting: str) -> LoadedFusionModel:
    """Load one trained (model, setting) on CPU in eval mode; clear error if it is missing."""
    pt, js = artefact_paths(storage, model, setting)
    if not pt.exists() or not js.exists():
        raise FileNotFoundError(
            f"no trained fusion model at {pt} (+ .json); materialise the fusion_models asset first"
        )
    meta = json.loads(js.read_text(encoding="utf-8"))
    # Read whole through one handle: the weights may live on an object store (artefact_store).
    payload = torch.load(io.BytesIO(read_bytes(pt)), map_location="cpu", weights_only=True)
    if payload.get("format") != ARTEFACT_FORMAT:
        raise ValueError(
            f"{pt} has artefact format {payload.get('format')}, expected {ARTEFACT_FORMAT}"
        )
    cfg = meta["config"]
    spec = model_spec(model)
    heads = build_heads(
        residual=bool(meta.get("spec", {}).get("residual", False)),
        product_in_dim=int(meta["dims"]["product_in_dim"]),
        category_in_dim=int(meta["dims"]["category_in_dim"]),
        proj_dim=int(cfg["proj_dim"]),
        hidden_dims=tuple(cfg["hidden_dims"]),
        dropout=float(cfg["dropout"]),
        modalities=spec.modalities,
        modality_dims=meta["dims"].get("modality_dims"),
    )
    heads.load_state_dict(payload["state_dict"])
    heads.eval()
    return LoadedFusionModel(model=model, setting=setting, meta=meta, heads=heads)


def encode_products(
    storage: HasPath,
    model: str,
    setting: str,
    asins: Sequence[str],
    tables: ProductFeatureTables,
    loaded: LoadedFusionModel | None = None,
) -> np.ndarray:
    """Fused vectors (n, proj_dim) for ``asins``; absent modalities enter as zero blocks."""
    loaded = loaded or load_fusion_model(storage, model, setting)
    dims = tables.dims(loaded.spec.modalities)
    if dims != loaded.meta["dims"]["modality_dims"]:
        raise ValueError(
            f"{model}/{setting} was trained on modality widths {loaded.meta['dims']['modality_dims']}, "
            f"the embedding tables now give {dims}: retrain (materialise fusion_models)"
        )
    x, _ = tables.features(list(asins), loaded.spec.modalities, loaded.normalize_inputs)
    return loaded.encode_product_inputs(x)


def encode_queries(
    storage: HasPath,
    model: str,
    setting: str,
    names: Sequence[str],
    text_encode: Callable[[list[str]], np.ndarray],
    loaded: LoadedFusionModel | None = None,
) -> np.ndarray:
    """Query vectors (n, proj_dim) for arbitrary category names, seen in training or not.

    ``text_encode`` must be the encoder that produced ``category_embeddings`` (its model id is
    ``meta["input_model_ids"]["category"]``): the heads only know that encoder's space.
    """
    loaded = loaded or load_fusion_model(storage, model, setting)
    names = list(names)
    if not names:
        return np.zeros((0, int(loaded.meta["config"]["proj_dim"])), dtype=np.float32)
    vectors = np.asarray(text_encode(names), dtype=np.float32)
    if vectors.shape[0] != len(names):
        raise ValueError(f"text_encode returned {vectors.shape[0]} vectors for {len(names)} names")
    return loaded.encode_category_inputs(vectors)
