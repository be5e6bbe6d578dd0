"""The fusion_models schema is declared once and every row builder starts from it."""

from __future__ import annotations

import polars as pl

from catret_pipeline.fusion.schemas import FUSION_MODELS_SCHEMA, new_row


def test_new_row_has_exactly_the_schema_columns_and_builds_a_frame():
    row = new_row("clip-ita", "unseen")
    assert list(row) == list(FUSION_MODELS_SCHEMA)
    assert (row["model"], row["setting"], row["status"]) == ("clip-ita", "unseen", "trained")
    assert row["reason"] is None and row["epochs_run"] == 0
    frame = pl.DataFrame([row], schema=FUSION_MODELS_SCHEMA)
    assert frame.schema == pl.Schema(FUSION_MODELS_SCHEMA)
