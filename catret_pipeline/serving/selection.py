"""Which model serves each setting: the best validation R-precision, never a test metric.

``fusion_models.val_rprec_best`` is each trained head's R-precision on the setting's validation
split (seen and held-out names, docs/data.md) at its selected epoch, so within one setting the
numbers are comparable and choosing on them does not look at test. The zero-shot baselines and
catret-hybrid have no such number in a table a server can read, and catret-hybrid is a score
fusion with no product vectors to index, so they are not candidates; when no trained head has
a validation number the documented fallback is the text baseline (title vs name vectors),
which needs nothing trained. ``CATRET_SERVE_MODEL`` overrides the choice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import polars as pl

#: The model served when no trained head has a validation R-precision (docs/serving.md).
FALLBACK_MODEL = "mpnet"
ENV_SERVE_MODEL = "CATRET_SERVE_MODEL"


@dataclass(frozen=True)
class ModelChoice:
    setting: str
    model: str
    #: ``validation`` (best val R-precision), ``override`` or ``fallback``.
    reason: str
    val_r_precision: float | None
    #: Every candidate's validation R-precision, the numbers the choice was made on.
    candidates: dict[str, float]

    def as_dict(self) -> dict:
        return {
            "setting": self.setting,
            "model": self.model,
            "reason": self.reason,
            "val_r_precision": self.val_r_precision,
            "candidates": self.candidates,
        }


def parse_override(text: str | None) -> dict[str, str]:
    """``"clip-ita"`` (every setting) or ``"all=clip-ita,specific=mpnet"`` -> setting -> model;
    the key ``*`` stands for every setting."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        setting, sep, model = part.partition("=")
        if not sep:
            setting, model = "*", setting
        if not model.strip():
            raise ValueError(f"{ENV_SERVE_MODEL}: no model in {part!r}")
        out[setting.strip()] = model.strip()
    return out


def validation_candidates(fusion_models: pl.DataFrame | None, setting: str) -> dict[str, float]:
    if fusion_models is None or "val_rprec_best" not in fusion_models.columns:
        return {}
    rows = fusion_models.filter(
        (pl.col("setting") == setting)
        & (pl.col("status") != "skipped")
        & pl.col("val_rprec_best").is_not_null()
    )
    return {
        m: float(v)
        for m, v in rows.select("model", "val_rprec_best").sort("model").iter_rows()
        if v is not None and math.isfinite(v)
    }


def choose_model(
    fusion_models: pl.DataFrame | None, setting: str, override: dict[str, str] | None = None
) -> ModelChoice:
    """The serving model of ``setting``: override, else best val R-precision (ties: name
    order), else :data:`FALLBACK_MODEL`."""
    candidates = validation_candidates(fusion_models, setting)
    override = override or {}
    forced = override.get(setting) or override.get("*")
    if forced:
        return ModelChoice(setting, forced, "override", candidates.get(forced), candidates)
    if candidates:
        best = max(sorted(candidates), key=lambda m: candidates[m])
        return ModelChoice(setting, best, "validation", candidates[best], candidates)
    return ModelChoice(setting, FALLBACK_MODEL, "fallback", None, candidates)


def choose_models(
    fusion_models: pl.DataFrame | None, settings: list[str], override_text: str | None = None
) -> dict[str, ModelChoice]:
    text = override_text if override_text is not None else os.environ.get(ENV_SERVE_MODEL)
    override = parse_override(text)
    return {s: choose_model(fusion_models, s, override) for s in settings}
