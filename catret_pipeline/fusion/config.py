"""The fusion heads' hyper-parameters, declared once.

``FusionTrainConfig`` is what training reads and what an artefact records (``to_dict``, which
also feeds the fingerprints: keep its shape). The ``fusion_models`` asset config is generated
from it (:func:`flat_fields`, :meth:`FusionTrainConfig.from_flat`), so a new hyper-parameter is
one field here, with its default and the description the Dagster launchpad shows.

Torch-free on purpose: the assets module imports this at module level.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

#: Per-setting batch sizes (paper: 8 for "most general", 128 otherwise).
DEFAULT_BATCH_SIZES: dict[str, int] = {"general": 8, "all": 128, "specific": 128}
#: How the asset config names each setting in its ``batch_size_<setting>`` description.
_SETTING_WORDS = {"general": "most-general", "all": "all-categories", "specific": "most-specific"}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FusionTrainConfig:
    """Hyper-parameters; paper values where it gives them, documented choices elsewhere
    (docs/models.md). A pydantic dataclass: values are validated, ``dataclasses.replace``
    works."""

    proj_dim: int = Field(256, description="Output size of g_p and g_c (paper: open).")
    hidden_dims: tuple[int, ...] = Field(
        (512, 512), description="Hidden widths (paper: two layers)."
    )
    #: 0.1 lowered validation R-precision on the sample (docs/models.md).
    dropout: float = Field(0.0, description="Dropout after each hidden layer (docs/models.md).")
    lr: float = Field(1e-4, description="AdamW learning rate (paper: open; docs/models.md).")
    weight_decay: float = Field(0.01, description="AdamW weight decay.")
    epochs: int = Field(30, description="Epochs (paper: 30).")
    #: On a catalogue much smaller than XMarket, 30 epochs are a few hundred steps and leave
    #: the heads far from converged (docs/models.md, "Training budget").
    min_steps: int = Field(
        1000,
        ge=0,
        description=(
            "Extend training beyond `epochs` until this many optimiser steps have run, stopping "
            "early on validation loss (docs/models.md); 0: exactly `epochs`."
        ),
    )
    extra_patience: int | None = Field(
        25,
        description=(
            "Epochs without a lower validation loss that end the extension beyond `epochs` "
            "(None: run it to the end)."
        ),
    )
    #: The asset config exposes one ``batch_size_<setting>`` field per entry (see flat_fields).
    batch_sizes: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_BATCH_SIZES),
        description="Batch size per setting (paper: 8 most-general, 128 otherwise).",
    )
    #: For a setting without an entry in ``batch_sizes``; not in the asset config, whose
    #: settings all have one.
    default_batch_size: int = Field(128, description="Batch size of any other setting.")
    tau: float = Field(1.0, description="InfoNCE temperature (paper: 1).")
    lam: float = Field(0.5, description="Weight of the product->category direction (paper: 0.5).")
    seed: int = Field(0, description="Seed for head init, dropout and batch order.")
    keep_best: bool = Field(True, description="Keep the best validation epoch's weights.")
    #: With tau = 1 the loss barely moves, so it picks epochs poorly (docs/models.md).
    select_by: str = Field(
        "loss",
        description=(
            "Best epoch by validation R-precision ('rprec', ties by loss) or by validation "
            "loss ('loss'); also what the patience counts (docs/models.md)."
        ),
    )
    #: On the 2-core CPU a batch-128 step ran 1.25-1.5x faster, but at batch 8 casting the
    #: weights costs more than it saves (6.0 vs 4.3 ms). Off by default: bf16 rounding turns
    #: the 1e-7 float noise between two equivalent builds (a refresh and a clean build) into
    #: 1e-4 score differences.
    bf16_autocast_min_batch: int | None = Field(
        None,
        description=(
            "Train under bf16 autocast when the batch holds at least this many pairs "
            "(None: never). Faster on CPU at batch 128, slower at 8, and less reproducible "
            "between equivalent builds (docs/models.md)."
        ),
    )
    early_stopping_patience: int | None = Field(
        None, description="Stop after this many epochs without a better val loss (None: never)."
    )
    #: Makes the run length machine-dependent.
    max_train_seconds: float | None = Field(
        None, description="Wall-clock budget per (model, setting); None: unlimited."
    )
    normalize_inputs: bool = Field(True, description="L2-normalise each input block.")
    #: Tree-aware targets: a parent/child pair weighs ``tree_weight``, times ``tree_decay``
    #: per further level of depth difference.
    tree_weight: float = Field(0.5, description="clip-ita-tree: target weight of parent/child.")
    tree_decay: float = Field(0.5, description="clip-ita-tree: factor per extra depth level.")
    #: "pca": top singular directions of the train title and category vectors; "random":
    #: orthonormal. With ``proj_dim`` >= text width ``A`` starts as the identity either way.
    res_skip_init: str = Field(
        "pca",
        description=(
            "clip-ita-res: initial shared skip when proj_dim < text width ('pca' or 'random'); "
            "the identity otherwise."
        ),
    )
    res_skip_lr_scale: float = Field(
        0.1,
        description="clip-ita-res: lr multiplier of the shared skip (0 freezes it; docs/models.md).",
    )
    res_anchor: float = Field(
        0.0, description="clip-ita-res: weight of ||A - A_init||^2 in the loss."
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', ...")
    #: The heads are small: on a loaded 2-core machine 2 threads ran 10x slower than 1
    #: (OpenMP waits).
    torch_threads: int | None = Field(
        1, description="torch CPU threads per training process (None: torch's default)."
    )

    def batch_size_for(self, setting: str) -> int:
        return int(self.batch_sizes.get(setting, self.default_batch_size))

    def to_dict(self) -> dict:
        """Plain values in field order (the artefact's ``config`` and the fingerprints)."""
        d = dataclasses.asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["batch_sizes"] = dict(self.batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> FusionTrainConfig:
        """The config of ``to_dict`` output; unknown keys (an older or newer artefact) dropped."""
        return cls(**{k: v for k, v in d.items() if k in cls.__pydantic_fields__})

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> FusionTrainConfig:
        """The config of values named as :func:`flat_fields` names them (the asset config's);
        other keys are ignored, absent ones keep their defaults."""
        kwargs = {k: values[k] for k in flat_fields() if k in values}
        sizes = {
            s: kwargs.pop(_batch_size_name(s))
            for s in DEFAULT_BATCH_SIZES
            if _batch_size_name(s) in kwargs
        }
        return cls(**kwargs, batch_sizes={**DEFAULT_BATCH_SIZES, **sizes})


def _batch_size_name(setting: str) -> str:
    return f"batch_size_{setting}"


def flat_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """``FusionTrainConfig``'s fields as ``pydantic.create_model`` field definitions that a
    Dagster config accepts: tuples become lists, ``batch_sizes`` becomes one
    ``batch_size_<setting>`` per setting, ``default_batch_size`` is left out. Defaults,
    descriptions and constraints are the dataclass's."""
    out: dict[str, tuple[Any, FieldInfo]] = {}
    for name, info in FusionTrainConfig.__pydantic_fields__.items():
        if name == "batch_sizes":
            for setting, size in DEFAULT_BATCH_SIZES.items():
                words = _SETTING_WORDS.get(setting, setting)
                description = f"Batch size, {words} setting (paper: {size})."
                out[_batch_size_name(setting)] = (int, Field(size, description=description))
        elif name != "default_batch_size":
            out[name] = _flat_field(info)
    return out


def _flat_field(info: FieldInfo) -> tuple[Any, FieldInfo]:
    annotation = info.annotation
    default = info.get_default(call_default_factory=True)
    if typing.get_origin(annotation) is tuple:  # tuple[int, ...] -> list[int]
        annotation = list[typing.get_args(annotation)[0]]
        default = list(default)
    if info.metadata:  # constraints such as ge=0
        annotation = Annotated[(annotation, *info.metadata)]
    if isinstance(default, list | dict):
        field = Field(default_factory=lambda d=default: type(d)(d), description=info.description)
    else:
        field = Field(default, description=info.description)
    return annotation, field
