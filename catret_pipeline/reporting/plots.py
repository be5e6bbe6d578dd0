"""PNG plots of the evaluation tables.

matplotlib is imported lazily and only through its object API (``Figure`` + the Agg canvas):
no pyplot, so no global backend or figure registry is touched and nothing needs a display.
Every plot is rendered to bytes and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from catret_pipeline.reporting.paper import (
    METRIC_NAMES,
    SETTING_NAMES,
    SETTINGS,
    display_name,
    model_sort_key,
)
from catret_pipeline.storage.artefacts import as_artefact_path
from catret_pipeline.storage.atomic import atomic_write_bytes

RELATION_COLOURS: dict[str, str] = {
    "same_category": "#8c8c8c",
    "ancestor": "#4c72b0",
    "descendant": "#55a868",
    "same_tree_other": "#dd8452",
    "different_tree": "#c44e52",
    "unknown": "#b0b0b0",
    "no_result": "#404040",
}


def _figure(n_panels: int, width_per_panel: float = 4.8, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(max(1, n_panels) * width_per_panel, height), dpi=100, layout="constrained"
    )
    axes = fig.subplots(1, max(1, n_panels), squeeze=False)[0]
    return fig, list(axes)


def _save(fig, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def _settings(df: pl.DataFrame) -> list[str]:
    present = df["setting"].unique().to_list() if df.height else []
    return [s for s in SETTINGS if s in present] + sorted(s for s in present if s not in SETTINGS)


def _models(df: pl.DataFrame) -> list[str]:
    return sorted(df["model"].unique().to_list(), key=model_sort_key) if df.height else []


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _pct(value) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def plot_model_setting_bars(
    metrics: pl.DataFrame, path: str | Path, bars: tuple[str, ...] = ("r_precision", "p_at_10")
) -> Path:
    """Per setting, one group of bars per model: R-precision and P@10 (subset ``all``), in %."""
    import numpy as np

    data = metrics.filter(pl.col("subset") == "all")
    settings = _settings(data)
    fig, axes = _figure(len(settings))
    if not settings:
        _no_data(axes[0])
    for ax, setting in zip(axes, settings, strict=False):
        rows = data.filter(pl.col("setting") == setting)
        models = _models(rows)
        x = np.arange(len(models))
        width = 0.8 / len(bars)
        for i, metric in enumerate(bars):
            values = [_pct(rows.filter(pl.col("model") == m)[metric].item()) for m in models]
            ax.bar(
                x + (i - (len(bars) - 1) / 2) * width,
                values,
                width,
                label=METRIC_NAMES.get(metric, metric),
            )
        ax.set_xticks(x, [display_name(m) for m in models], rotation=45, ha="right")
        ax.set_title(SETTING_NAMES.get(setting, setting))
        ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_metric_by_depth(
    per_query: pl.DataFrame, path: str | Path, metric: str = "r_precision"
) -> Path:
    """Mean per-query ``metric`` (in %) by the query category's depth, one line per model."""
    data = per_query.filter((pl.col("R") > 0) & pl.col("query_depth").is_not_null())
    settings = _settings(data)
    fig, axes = _figure(len(settings))
    if not settings:
        _no_data(axes[0])
    # One colour per model across panels, even where a model is missing from one.
    colours = {m: f"C{i % 10}" for i, m in enumerate(_models(data))}
    for ax, setting in zip(axes, settings, strict=False):
        rows = (
            data.filter(pl.col("setting") == setting)
            .group_by("model", "query_depth")
            .agg(pl.col(metric).mean().alias("value"), pl.len().alias("n"))
            .sort("query_depth")
        )
        for model in _models(rows):
            line = rows.filter(pl.col("model") == model)
            ax.plot(
                line["query_depth"].to_list(),
                [_pct(v) for v in line["value"].to_list()],
                marker="o",
                color=colours[model],
                label=display_name(model),
            )
        ax.set_title(SETTING_NAMES.get(setting, setting))
        ax.set_xlabel("query category depth (root = 1)")
        ax.set_ylabel(f"mean {METRIC_NAMES.get(metric, metric)} (%)")
        depths = rows["query_depth"].unique().sort().to_list()
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
    # One legend for all panels, outside them: lines would hide behind per-panel legends.
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="outside right upper", fontsize="small"
        )
    return _save(fig, path)


def plot_seen_unseen(metrics: pl.DataFrame, path: str | Path, metric: str = "r_precision") -> Path:
    """Per setting, ``metric`` (in %) on seen vs unseen query categories, one bar pair per model."""
    import numpy as np

    data = metrics.filter(pl.col("subset").is_in(["seen", "unseen"]))
    settings = _settings(data)
    fig, axes = _figure(len(settings))
    if not settings:
        _no_data(axes[0])
    for ax, setting in zip(axes, settings, strict=False):
        rows = data.filter(pl.col("setting") == setting)
        models = _models(rows)
        x = np.arange(len(models))
        for i, subset in enumerate(("seen", "unseen")):
            sub = rows.filter(pl.col("subset") == subset)
            values = []
            n = 0
            for m in models:
                row = sub.filter(pl.col("model") == m)
                values.append(_pct(row[metric].item()) if row.height else float("nan"))
                n = max(n, int(row["n_queries"].item()) if row.height else 0)
            ax.bar(x + (i - 0.5) * 0.4, values, 0.4, label=f"{subset} (n={n})")
        ax.set_xticks(x, [display_name(m) for m in models], rotation=45, ha="right")
        ax.set_title(SETTING_NAMES.get(setting, setting))
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_error_relations(errors: pl.DataFrame, path: str | Path) -> Path:
    """Per setting, stacked shares of the wrong top-1 relations per model."""
    import numpy as np

    settings = _settings(errors)
    fig, axes = _figure(len(settings))
    if not settings:
        _no_data(axes[0], "no wrong top-1 results")
    for ax, setting in zip(axes, settings, strict=False):
        rows = errors.filter(pl.col("setting") == setting)
        models = _models(rows)
        counts = rows.group_by("model", "relation").agg(pl.len().alias("n"))
        totals = {m: rows.filter(pl.col("model") == m).height for m in models}
        bottom = np.zeros(len(models))
        for relation, colour in RELATION_COLOURS.items():
            shares = np.array(
                [
                    100.0
                    * sum(
                        counts.filter((pl.col("model") == m) & (pl.col("relation") == relation))[
                            "n"
                        ].to_list()
                    )
                    / max(totals[m], 1)
                    for m in models
                ]
            )
            if not shares.any():
                continue
            ax.bar(np.arange(len(models)), shares, 0.6, bottom=bottom, color=colour, label=relation)
            bottom += shares
        ax.set_xticks(
            np.arange(len(models)), [display_name(m) for m in models], rotation=45, ha="right"
        )
        ax.set_title(SETTING_NAMES.get(setting, setting))
        ax.set_ylabel("% of wrong top-1")
        ax.set_ylim(0, 100)
        ax.legend(fontsize="x-small")
    return _save(fig, path)


#: file name -> caption, in report order.
PLOTS: dict[str, str] = {
    "rprec_p10_by_model.png": "R-precision and P@10 per model and setting",
    "rprec_by_depth.png": "R-precision by query category depth",
    "seen_unseen.png": "R-precision on seen vs unseen categories",
    "error_relations.png": "Where wrong top-1 results come from in the tree",
}


def render_all(
    out_dir: str | Path,
    metrics: pl.DataFrame,
    per_query: pl.DataFrame,
    errors: pl.DataFrame,
) -> dict[str, Path]:
    """Every plot of :data:`PLOTS` under ``out_dir``; returns file name -> path."""
    out = as_artefact_path(out_dir)
    return {
        "rprec_p10_by_model.png": plot_model_setting_bars(metrics, out / "rprec_p10_by_model.png"),
        "rprec_by_depth.png": plot_metric_by_depth(per_query, out / "rprec_by_depth.png"),
        "seen_unseen.png": plot_seen_unseen(metrics, out / "seen_unseen.png"),
        "error_relations.png": plot_error_relations(errors, out / "error_relations.png"),
    }
