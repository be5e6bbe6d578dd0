"""The README's main command, run as a user would, on a small generated sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from catret_pipeline.retrieval.hybrid import HYBRID_MODEL
from catret_pipeline.retrieval.vectors import CLIP_RANDOM_INIT, text_baseline_name
from catret_pipeline_tests.support import REPO
from catret_pipeline_tests.test_definitions import EXPECTED_ASSETS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("e2e") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    catret = Path(sys.executable).parent / "catret"
    proc = subprocess.run(
        [str(catret), "materialize", "--data-dir", str(data), "--sample-products", "200"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "failed asset checks" not in proc.stdout
    return data


def test_every_asset_has_parquet_and_a_view(built):
    for name in EXPECTED_ASSETS:
        assert (built / "assets" / f"{name}.parquet").exists(), name
    con = duckdb.connect(
        str(built / "catret.duckdb"),
        read_only=True,
        config={"file_search_path": str(built / "assets")},
    )
    try:
        views = {
            r[0]
            for r in con.execute(
                "select view_name from duckdb_views() where not internal"
            ).fetchall()
        }
        assert EXPECTED_ASSETS - {"catret_duckdb"} <= views
        for view in views:
            con.execute(f"select * from {view} limit 1").fetchall()
        rows = con.execute(
            "select model, setting, p_at_1, r_precision from metrics where subset='all' "
            "order by setting, r_precision desc"
        ).fetchall()
    finally:
        con.close()
    models = {r[0] for r in rows}
    text_ids = pl.read_parquet(built / "assets" / "title_embeddings.parquet")["model_id"]
    # The title-vs-name baseline carries the name of the encoder that made it (mpnet only for MPNet).
    text_baseline = text_baseline_name(text_ids.unique().to_list())
    assert {"bm25", text_baseline, "clip-i", "clip-ia", "clip-ita", "clip-ita-masked"} <= models
    assert HYBRID_MODEL in models
    # The test CLIP is random-init: its zero-shot row must never pass for the paper's CLIP.
    assert CLIP_RANDOM_INIT in models and "clip" not in models
    assert {r[1] for r in rows} == {"all", "general", "specific"}


def test_counts_reconcile_with_the_samples_broken_lines(built):
    sample = built / "sample"
    broken = json.loads((sample / "broken_lines.json").read_text())
    quarantine = pl.read_parquet(built / "assets" / "quarantine.parquet")
    raw = pl.read_parquet(built / "assets" / "raw_products.parquet")
    manifest = json.loads((sample / "sample_manifest.json").read_text())
    assert raw.height == 200 == pl.read_parquet(built / "assets" / "products.parquet").height
    expected = {
        (b["file"], b["line_no"], b["expected_reason"]) for b in broken if b["expected_reason"]
    }
    got = {(r["source_file"], r["line_no"], r["reason"]) for r in quarantine.iter_rows(named=True)}
    assert expected <= got
    assert manifest  # the generator wrote its manifest beside the catalogue


def test_report_and_indexes_written(built):
    report = (built / "reports" / "report.md").read_text()
    assert "CLIP-ITA" in report
    indexes = pl.read_parquet(built / "assets" / "hnsw_indexes.parquet")
    for rel in indexes["index_path"]:
        assert (built / rel).stat().st_size > 0
    assert (built / "dagster_home" / "dagster.yaml").exists()
