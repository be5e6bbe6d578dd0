"""What the ``fusion_models`` asset shows in the Dagster UI: its summary table, loss curves
and the per-head floats charted across materialisations. Torch-free."""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl

from catret_pipeline.markdown import markdown_table

#: Charted per (model, setting) as ``<model>.<setting>.<column>``.
CHARTED_COLUMNS = ("train_loss_last", "val_loss_best", "val_rprec_best", "data_change_fraction")


def fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def summary_md(df: pl.DataFrame) -> str:
    header = [
        "model",
        "setting",
        "status",
        "data change",
        "epochs",
        "best",
        "train first→last",
        "val initial→best",
        "val R-prec",
        "n_train",
        "n_val",
        "s",
    ]
    rows = []
    for r in df.iter_rows(named=True):
        change = r["data_change_fraction"]
        rows.append(
            [
                r["model"],
                r["setting"],
                f"{r['status']}" + (f" ({r['reason']})" if r["reason"] else ""),
                "-" if change is None else f"{change:.1%}",
                r["epochs_run"],
                r["best_epoch"],
                f"{fmt(r['train_loss_first'])}→{fmt(r['train_loss_last'])}",
                f"{fmt(r['val_loss_initial'])}→{fmt(r['val_loss_best'])}",
                fmt(r["val_rprec_best"]),
                r["n_train"],
                r["n_val"],
                f"{r['seconds']:.1f}",
            ]
        )
    return markdown_table(header, rows)


def curves_md(curves: dict[str, list[dict]]) -> str:
    parts = []
    for key, history in curves.items():
        rows = [[h["epoch"], fmt(h["train_loss"]), fmt(h["val_loss"])] for h in history]
        parts.append(f"**{key}**\n\n" + markdown_table(["epoch", "train", "val"], rows) + "\n")
    return "\n".join(parts)


def trained_line(row: dict, shared_with: str | None, seconds: float) -> str:
    """The log line of one trained head."""
    return (
        f"fusion: {row['model']}/{row['setting']} trained"
        f"{' (same run as ' + shared_with + ')' if shared_with else ''}: "
        f"train {fmt(row['train_loss_first'])}→{fmt(row['train_loss_last'])}, "
        f"val best {fmt(row['val_loss_best'])}, val R-prec {fmt(row['val_rprec_best'])} "
        f"(epoch {row['best_epoch']}/{row['epochs_run']}) in {seconds:.1f}s"
    )


def fusion_models_metadata(
    df: pl.DataFrame,
    curves: dict[str, list[dict]],
    *,
    retrain_fraction: float,
    force_retrain: bool,
    input_model_ids: dict,
) -> dict:
    metadata: dict = {
        "summary": dg.MetadataValue.md(summary_md(df)),
        "loss_curves": dg.MetadataValue.md(curves_md(curves)),
        "loss_curves_json": dg.MetadataValue.json(curves),
        "n_trained": dg.MetadataValue.int(int((df["status"] == "trained").sum())),
        "n_reused": dg.MetadataValue.int(int((df["status"] == "reused").sum())),
        "n_skipped": dg.MetadataValue.int(int((df["status"] == "skipped").sum())),
        "retrain_fraction": dg.MetadataValue.float(float(retrain_fraction)),
        "force_retrain": dg.MetadataValue.bool(force_retrain),
        "input_model_ids": dg.MetadataValue.json(input_model_ids),
    }
    # Flat floats, one per (model, setting), so the UI charts them across materialisations.
    for r in df.iter_rows(named=True):
        for col in CHARTED_COLUMNS:
            if r[col] is not None:
                metadata[f"{r['model']}.{r['setting']}.{col}"] = dg.MetadataValue.float(
                    float(r[col])
                )
    return metadata
