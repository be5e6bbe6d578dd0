"""The `fusion_models` table: its columns, declared once for the row builders and the frame."""

from __future__ import annotations

import polars as pl

FUSION_MODELS_SCHEMA = {
    "model": pl.String,
    "setting": pl.String,
    "status": pl.String,
    "reason": pl.String,
    "epochs_run": pl.Int64,
    "best_epoch": pl.Int64,
    "train_loss_first": pl.Float64,
    "train_loss_last": pl.Float64,
    "val_loss_initial": pl.Float64,
    "val_loss_first": pl.Float64,
    "val_loss_best": pl.Float64,
    "val_rprec_best": pl.Float64,
    "n_train": pl.Int64,
    "n_val": pl.Int64,
    "n_dropped_empty": pl.Int64,
    "artefact_path": pl.String,
    "seconds": pl.Float64,
    "data_change_fraction": pl.Float64,
}

#: What a row holds before training fills it in; every other column starts as null.
_ROW_START = {
    "status": "trained",
    "epochs_run": 0,
    "best_epoch": 0,
    "n_train": 0,
    "n_val": 0,
    "n_dropped_empty": 0,
    "seconds": 0.0,
}


def new_row(model: str, setting: str) -> dict:
    """A `fusion_models` row with every column of the schema, for one (model, setting)."""
    return {c: _ROW_START.get(c) for c in FUSION_MODELS_SCHEMA} | {
        "model": model,
        "setting": setting,
    }
