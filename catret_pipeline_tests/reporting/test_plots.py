"""Plots render to real, non-empty PNG files."""

from __future__ import annotations

import sys

import polars as pl
import pytest
from PIL import Image

from catret_pipeline.evaluation.metrics import METRIC_COLUMNS, aggregate_metrics
from catret_pipeline.reporting import plots


def per_query() -> pl.DataFrame:
    rows = []
    for setting in ("all", "general", "specific"):
        for m, base in (("clip", 0.2), ("clip-ita", 0.5), ("custom-model", 0.3)):
            if setting == "general" and m == "custom-model":
                continue  # a model missing from one setting
            for i in range(6):
                rows.append(
                    {
                        "model": m,
                        "setting": setting,
                        "query": f"q{i}",
                        "subset": "seen" if i % 2 else "unseen",
                        "query_depth": 1 if setting == "general" else 1 + i % 4,
                        "R": 3,
                        "n_retrieved": 10,
                        **dict.fromkeys(METRIC_COLUMNS, base + 0.05 * i),
                    }
                )
    return pl.DataFrame(rows)


def errors() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": ["clip", "clip", "clip-ita"],
            "setting": ["all", "all", "specific"],
            "relation": ["ancestor", "different_tree", "same_tree_other"],
            "depth_diff": [-1, 0, 0],
        }
    )


def assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= 400 and im.size[1] >= 200
        # not a blank canvas
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50


def test_every_plot_renders(tmp_path):
    pq = per_query()
    paths = plots.render_all(tmp_path / "reports", aggregate_metrics(pq), pq, errors())
    assert set(paths) == set(plots.PLOTS)
    for path in paths.values():
        assert path.parent == tmp_path / "reports"
        assert_png(path)
    assert not list((tmp_path / "reports").glob(".*.tmp"))


@pytest.mark.parametrize(
    "plot",
    ["plot_model_setting_bars", "plot_metric_by_depth", "plot_seen_unseen", "plot_error_relations"],
)
def test_plots_cope_with_empty_tables(tmp_path, plot):
    pq = per_query().head(0)
    table = {
        "plot_model_setting_bars": aggregate_metrics(pq),
        "plot_metric_by_depth": pq,
        "plot_seen_unseen": aggregate_metrics(pq),
        "plot_error_relations": errors().head(0),
    }[plot]
    path = getattr(plots, plot)(table, tmp_path / f"{plot}.png")
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_plots_do_not_touch_pyplot(tmp_path):
    pq = per_query()
    plots.plot_model_setting_bars(aggregate_metrics(pq), tmp_path / "x.png")
    # the object API leaves matplotlib's global figure manager alone
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )


def test_overwrite_replaces_the_file(tmp_path):
    pq = per_query()
    target = tmp_path / "bars.png"
    target.write_bytes(b"old")
    plots.plot_model_setting_bars(aggregate_metrics(pq), target)
    assert_png(target)
