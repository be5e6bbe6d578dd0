"""Which model serves each setting: the best validation R-precision, never a test metric.

Pure (no Dagster, no environment): used by the ``serving_models`` asset and by the server.

``fusion_models.val_rprec_best`` is each trained head's R-precision on the setting's validation
split (seen and held-out names, docs/data.md) at its selected epoch, so within one setting the
numbers are comparable and choosing on them does not look at test. The zero-shot baselines and
catret-hybrid have no such number in a table a server can read, and catret-hybrid is a score
fusion with no product vectors to index, so they are not candidates; when no trained head has
a validation number the documented fallback is the text baseline (title vs name vectors),
which needs nothing trained. An override (Dagster config, or
``CATRET_SERVE_MODEL`` at serve time) replaces the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: The model served when no trained head has a validation R-precision (docs/serving.md).
FALLBACK_MODEL = "mpnet"


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
            raise ValueError(f"serving model override: no model in {part!r}")
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


#: The ``serving_models`` table: one row per setting; ``candidates`` holds every trained head's
#: validation R-precision, the numbers the choice was made on.
SERVING_MODELS_SCHEMA = {
    "setting": pl.String,
    "model": pl.String,
    "reason": pl.String,
    "val_r_precision": pl.Float64,
    "candidates": pl.List(pl.Struct({"model": pl.String, "val_r_precision": pl.Float64})),
}


def choices_frame(choices: list[ModelChoice]) -> pl.DataFrame:
    rows = [
        {
            "setting": c.setting,
            "model": c.model,
            "reason": c.reason,
            "val_r_precision": c.val_r_precision,
            "candidates": [
                {"model": m, "val_r_precision": v} for m, v in sorted(c.candidates.items())
            ],
        }
        for c in choices
    ]
    return pl.DataFrame(rows, schema=SERVING_MODELS_SCHEMA)


def choices_from_frame(df: pl.DataFrame) -> dict[str, ModelChoice]:
    """``serving_models`` rows back to choices (setting -> choice)."""
    out = {}
    for r in df.iter_rows(named=True):
        cands = {c["model"]: c["val_r_precision"] for c in r["candidates"] or []}
        out[r["setting"]] = ModelChoice(
            r["setting"], r["model"], r["reason"], r["val_r_precision"], cands
        )
    return out
