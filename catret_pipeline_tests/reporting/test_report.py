"""report.md rendering and the paper's Table 1 as data."""

from __future__ import annotations

import polars as pl
import pytest

from catret_pipeline.evaluation.metrics import METRIC_COLUMNS, aggregate_metrics
from catret_pipeline.evaluation.significance import paired_tests
from catret_pipeline.reporting.paper import MODEL_IDS, TABLE1, display_name, paper_table1
from catret_pipeline.reporting.report import render_report, results_table

# per-model R-precision on 4 queries of each setting; the other metrics copy it
SCORES = {
    "bm25": [0.0, 0.1, 0.0, 0.1],
    "clip": [0.1, 0.2, 0.1, 0.2],
    "mpnet": [0.2, 0.2, 0.3, 0.3],
    "clip-i": [0.3, 0.3, 0.2, 0.2],
    "clip-ita": [0.5, 0.6, 0.5, 0.6],
    "clip-ita-masked": [0.6, 0.7, 0.6, 0.7],
}


def per_query() -> pl.DataFrame:
    rows = []
    for setting in ("all", "general", "specific"):
        for model, values in SCORES.items():
            for i, v in enumerate(values):
                rows.append(
                    {
                        "model": model,
                        "setting": setting,
                        "query": f"q{i}",
                        "subset": "seen" if i < 3 else "unseen",
                        "query_depth": 1 + i % 3,
                        "R": 4,
                        "n_retrieved": 10,
                        **dict.fromkeys(METRIC_COLUMNS, v),
                    }
                )
    return pl.DataFrame(rows)


def errors() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": ["bm25", "bm25", "clip"],
            "setting": ["all", "all", "specific"],
            "query": ["q0", "q1", "q0"],
            "subset": ["seen"] * 3,
            "top1_asin": ["a", "b", "c"],
            "pred_category": ["X", "Y", "Z"],
            "pred_category_id": ["1", "2", "3"],
            "query_category_id": ["4", "5", "6"],
            "relation": ["ancestor", "different_tree", "descendant"],
            "pred_depth": [1, 2, 3],
            "query_depth": [2, 2, 2],
            "depth_diff": [-1, 0, 1],
        }
    )


def test_paper_table1_is_complete_and_in_percent():
    table = paper_table1()
    assert table.height == 6 * 3
    assert set(table["model"]) == set(MODEL_IDS.values())
    row = table.filter((pl.col("model") == "clip-ita") & (pl.col("setting") == "specific")).row(
        0, named=True
    )
    assert row["p_at_1"] == 45.85 and row["r_precision"] == 39.69
    # the observation the main AP normaliser rests on: mAP@K >= P@K on every row (up to the
    # rounding of BM25's near-zero "most specific" row, 0.02 vs 0.01)
    for values in (v for by_setting in TABLE1.values() for v in by_setting.values()):
        p5, p10, map5, map10 = values[1], values[2], values[3], values[4]
        assert map5 >= p5 - 0.01 and map10 >= p10 - 0.01


def test_display_names():
    assert display_name("clip-ita") == "CLIP-ITA"
    assert display_name("clip-ita-masked") == "CLIP-ITA (masked)"
    assert display_name("clip-ita@exact") == "CLIP-ITA (exact)"
    assert display_name("something-new") == "something-new"


@pytest.fixture(scope="module")
def report_text() -> str:
    pq = per_query()
    metrics = aggregate_metrics(pq)
    sig = paired_tests(pq, n_permutations=500)
    return render_report(
        metrics,
        pq,
        errors(),
        sig,
        plots={"a.png": "Plot A", "b.png": "Plot B"},
        title="My report",
        dataset="XMarket US",
    )


def test_report_has_our_table_beside_the_papers(report_text):
    assert report_text.startswith("# My report\n")
    assert "Dataset: XMarket US" in report_text
    assert "## Our results" in report_text
    assert "## The paper's Table 1" in report_text
    # ours: clip-ita scores 55% on every metric in every setting
    assert "| CLIP-ITA | 55.00 / 55.00 / 55.00 / 55.00 / 55.00 / 55.00 |" in report_text
    assert "| CLIP-ITA (masked) | 65.00 / " in report_text
    # the paper's row, verbatim numbers
    assert (
        "| CLIP-ITA | 9.90 / 13.27 / 13.43 / 20.30 / 20.53 / 13.42 | 35.71 / 30.95" in report_text
    )
    # R-precision side by side with the difference
    assert "55.00 / 13.42 / +41.58" in report_text
    # CLIP-IA was not run: present in the paper column only
    assert "| CLIP-IA | - / 3.27 / - |" in report_text


def test_report_comparison_sentences(report_text):
    section = report_text.split("## CLIP-ITA against")[1].split("##")[0]
    lines = [line for line in section.splitlines() if line.startswith("- **")]
    assert len(lines) == 3
    first = lines[0]
    assert first.startswith("- **all categories**")
    # 55 vs 25 for CLIP-I: +30 points, +120% relative
    assert "CLIP-I 25.00% (+30.00 points, +120.0% relative" in first
    assert "BM25 5.00% (+50.00 points, +1000.0% relative" in first
    assert "MPNet 25.00%" in first and "CLIP 15.00%" in first
    # the masked variant is compared with CLIP-ITA too
    assert "CLIP-ITA (masked) reaches an R-precision of 65.00%" in first
    assert "CLIP-ITA 55.00% (+10.00 points, +18.2% relative" in first
    assert "permutation p =" in first


def test_report_seen_unseen_errors_significance_and_plots(report_text):
    assert "all categories: seen (n=3)" in report_text
    assert "all categories: unseen (n=1)" in report_text
    seen = report_text.split("## Seen vs unseen")[1].split("##")[0]
    # clip-ita seen = mean(0.5, 0.6, 0.5), unseen = 0.6
    assert "| CLIP-ITA | 53.33 | 60.00 |" in seen
    err = report_text.split("## Error analysis")[1].split("##")[0]
    assert (
        "| BM25 | all categories | 2 of 4 (50.0) | 50.0 | 0.0 | 0.0 | 50.0 | 0.0 | -1.00 / - |"
        in err
    )
    sig = report_text.split("## Significance")[1].split("## Plots")[0]
    assert "CLIP-ITA vs BM25" in sig and "p_perm" in sig
    assert "![Plot A](a.png)" in report_text and "![Plot B](b.png)" in report_text


def test_report_copes_with_empty_inputs():
    empty_metrics = aggregate_metrics(per_query().head(0))
    empty_sig = paired_tests(per_query().head(0))
    text = render_report(empty_metrics, per_query().head(0), errors().head(0), empty_sig)
    assert "_No metrics._" in text
    assert "_No tests" in text
    assert "## The paper's Table 1" in text


def test_results_table_has_one_row_per_model():
    table = results_table(aggregate_metrics(per_query()))
    assert table.count("\n") == 1 + len(SCORES)
    assert table.splitlines()[0] == "| model | all categories | most general | most specific |"
