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


def _usable(fusion_models: pl.DataFrame | None, setting: str) -> pl.DataFrame:
    if fusion_models is None or "val_rprec_best" not in fusion_models.columns:
        return pl.DataFrame(schema={"model": pl.String, "val_rprec_best": pl.Float64})
    return fusion_models.filter(
        (pl.col("setting") == setting)
        & (pl.col("status") != "skipped")
        & pl.col("val_rprec_best").is_not_null()
        & pl.col("val_rprec_best").is_finite()
    ).sort("model")


def validation_candidates(fusion_models: pl.DataFrame | None, setting: str) -> dict[str, float]:
    rows = _usable(fusion_models, setting)
    return {m: float(v) for m, v in rows.select("model", "val_rprec_best").iter_rows()}


def _best(fusion_models: pl.DataFrame, setting: str) -> str:
    # Ties on R-precision are common on small validation sets (every head at 1.0 on the
    # sample's `general`): the lower validation loss breaks them, still without test data.
    rows = _usable(fusion_models, setting)
    loss = pl.col("val_loss_best") if "val_loss_best" in rows.columns else pl.lit(0.0)
    rows = rows.with_columns(loss.fill_null(float("inf")).fill_nan(float("inf")).alias("_loss"))
    return rows.sort(["val_rprec_best", "_loss", "model"], descending=[True, False, False])[
        "model"
    ][0]


def choose_model(
    fusion_models: pl.DataFrame | None, setting: str, override: dict[str, str] | None = None
) -> ModelChoice:
    """The serving model of ``setting``: override, else best val R-precision (ties: lower
    val loss, then name), else :data:`FALLBACK_MODEL`."""
    candidates = validation_candidates(fusion_models, setting)
    override = override or {}
    forced = override.get(setting) or override.get("*")
    if forced:
        return ModelChoice(setting, forced, "override", candidates.get(forced), candidates)
    if candidates:
        best = _best(fusion_models, setting)
        return ModelChoice(setting, best, "validation", candidates[best], candidates)
    return ModelChoice(setting, FALLBACK_MODEL, "fallback", None, candidates)


def choose_models(
    fusion_models: pl.DataFrame | None, settings: list[str], override_text: str | None = None
) -> dict[str, ModelChoice]:
    text = override_text if override_text is not None else os.environ.get(ENV_SERVE_MODEL)
    override = parse_override(text)
    return {s: choose_model(fusion_models, s, override) for s in settings}
