"""Evaluation + report assets through ``dg.materialize`` on fixture Parquet tables."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from catret_pipeline.evaluation import assets as eval_assets
from catret_pipeline.evaluation.assets import metrics_markdown, select_runs
from catret_pipeline.reporting import assets as report_assets
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.resources import CatretStorage

LEAVES = [
    ("Electronics", "Audio", "Headphones"),
    ("Electronics", "Audio", "Speakers"),
    ("Electronics", "Cameras"),
    ("Home", "Kitchen", "Knives"),
    ("Home", "Audio"),
]
MODELS = {"bm25": 0.1, "clip": 0.3, "mpnet": 0.4, "clip-i": 0.5, "clip-ita": 0.9}


def node_id(path: tuple[str, ...]) -> str:
    return hashlib.sha1("\x1f".join(path).encode()).hexdigest()[:16]


def fixture_tables(seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    # ("Home", "Garden") has no product but the two test-only ones added below.
    nodes = sorted(
        {leaf[:i] for leaf in LEAVES for i in range(1, len(leaf) + 1)} | {("Home", "Garden")}
    )
    tree = pl.DataFrame(
        {
            "node_id": [node_id(p) for p in nodes],
            "name": [p[-1] for p in nodes],
            "parent_id": [node_id(p[:-1]) if len(p) > 1 else None for p in nodes],
            "depth": [len(p) for p in nodes],
            "path": [list(p) for p in nodes],
            "n_direct": [0] * len(nodes),
            "n_subtree": [0] * len(nodes),
            "is_leaf": [p in LEAVES or p == ("Home", "Garden") for p in nodes],
        }
    )
    pair_rows = []
    for i in range(60):
        asin = f"B{i:04d}"
        leaf = LEAVES[i % len(LEAVES)]
        split = "train" if i < 30 else "test"
        for setting, path in (
            ("all", leaf[: int(rng.integers(1, len(leaf) + 1))]),
            ("general", leaf[:1]),
            ("specific", leaf),
        ):
            pair_rows.append(
                {
                    "setting": setting,
                    "asin": asin,
                    "category_id": node_id(path),
                    "category_name": path[-1],
                    "category_depth": len(path),
                    "split": split,
                }
            )
    pairs = pl.DataFrame(pair_rows)
    train_names = (
        pairs.filter(pl.col("split") == "train").select("setting", "category_name").unique()
    )
    pairs = pairs.join(
        train_names.with_columns(pl.lit(True).alias("seen_in_train")),
        on=["setting", "category_name"],
        how="left",
    ).with_columns(pl.col("seen_in_train").fill_null(False))
    # Two products of an extra category only in test: an unseen query.
    extra = pl.DataFrame(
        {
            "setting": ["all", "all"],
            "asin": ["B0030", "B0031"],
            "category_id": [node_id(("Home", "Garden"))] * 2,
            "category_name": ["Garden"] * 2,
            "category_depth": [2, 2],
            "split": ["test", "test"],
            "seen_in_train": [False, False],
        }
    )
    pairs = pl.concat(
        [
            pairs.filter(
                ~((pl.col("setting") == "all") & pl.col("asin").is_in(["B0030", "B0031"]))
            ),
            extra,
        ],
        how="diagonal_relaxed",
    )

    test = pairs.filter(pl.col("split") == "test")
    run_rows = []
    for setting in ("all", "general", "specific"):
        in_setting = test.filter(pl.col("setting") == setting)
        asins = in_setting["asin"].to_list()
        names = in_setting["category_name"].to_list()
        for query in sorted(set(names)):
            for model, quality in MODELS.items():
                # A better model puts relevant products first more often.
                score = rng.random(len(asins)) + quality * np.array([n == query for n in names])
                order = np.argsort(-score, kind="stable")[:12]
                for rank, j in enumerate(order, start=1):
                    run_rows.append(
                        {
                            "model": model,
                            "setting": setting,
                            "query": query,
                            "rank": rank,
                            "asin": asins[j],
                            "score": float(score[j]),
                            "search": "bm25" if model == "bm25" else "hnsw",
                        }
                    )
    runs = pl.DataFrame(run_rows)
    # clip-ita also answered by exact search: a second list per query, an extra model.
    exact = runs.filter(pl.col("model") == "clip-ita").with_columns(pl.lit("exact").alias("search"))
    return {
        "retrieval_runs": pl.concat([runs, exact]),
        "evaluation_pairs": pairs,
        "category_tree": tree,
    }


def write_fixtures(data_dir: Path) -> dict[str, pl.DataFrame]:
    tables = fixture_tables()
    for name, df in tables.items():
        atomic_write_parquet(df, asset_file(data_dir, [name]))
    return tables


def test_select_runs_keeps_one_path_per_query_and_splits_duplicated_paths():
    runs = fixture_tables()["retrieval_runs"]
    # clip-ita answered every query twice (hnsw and exact): the default primary path is exact
    selected = select_runs(runs)
    assert set(selected["model"].unique()) == {*MODELS, "clip-ita@hnsw"}
    assert selected.columns == ["model", "setting", "query", "rank", "asin"]
    flipped = select_runs(runs, "hnsw")
    assert set(flipped["model"].unique()) == {*MODELS, "clip-ita@exact"}
    assert select_runs(runs.drop("search")).height == runs.drop("search").height
    # the normal case: one list per query, some answered by the exact fallback -> no renaming
    mixed = runs.filter(pl.col("search") != "exact").with_columns(
        pl.when(pl.col("query") == "Audio")
        .then(pl.lit("exact"))
        .otherwise(pl.col("search"))
        .alias("search")
    )
    assert set(select_runs(mixed)["model"].unique()) == set(MODELS)


def test_materialize_evaluation_and_report(tmp_path):
    data_dir = tmp_path / "data"
    write_fixtures(data_dir)
    upstream = [dg.AssetSpec(k) for k in ("retrieval_runs", "evaluation_pairs", "category_tree")]
    result = dg.materialize(
        [*upstream, *eval_assets.ASSETS, *eval_assets.CHECKS, *report_assets.ASSETS],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        run_config={
            "ops": {
                "significance": {"config": {"n_permutations": 2000}},
                "report": {"config": {"dataset": "fixture catalogue"}},
            }
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)

    read = lambda name: pl.read_parquet(asset_file(data_dir, [name]))  # noqa: E731
    metrics = read("metrics")
    assert metrics.columns == [
        "model",
        "setting",
        "subset",
        "n_queries",
        "p_at_1",
        "p_at_5",
        "p_at_10",
        "map_at_5",
        "map_at_10",
        "map_at_5_div_k",
        "map_at_10_div_k",
        "r_precision",
    ]
    assert set(metrics["subset"]) == {"all", "seen", "unseen"}
    assert metrics.height == 6 * 3 * 3  # models (incl. clip-ita@hnsw) x settings x subsets
    best = (
        metrics.filter(pl.col("subset") == "all")
        .sort("r_precision", descending=True)
        .group_by("setting", maintain_order=True)
        .first()
    )
    assert set(best["model"]) <= {"clip-ita", "clip-ita@hnsw"}
    unseen = metrics.filter((pl.col("setting") == "all") & (pl.col("subset") == "unseen"))
    assert (unseen["n_queries"] == 1).all()  # "Garden"

    per_query = read("metrics_per_query")
    assert {"model", "setting", "query", "subset", "R", "r_precision"} <= set(per_query.columns)
    errors = read("errors")
    assert {
        "model",
        "setting",
        "query",
        "top1_asin",
        "pred_category",
        "relation",
        "depth_diff",
    } <= set(errors.columns)
    assert set(errors["relation"]) <= {
        "ancestor",
        "descendant",
        "same_tree_other",
        "different_tree",
    }
    significance = read("significance")
    assert significance.columns == [
        "reference",
        "model",
        "setting",
        "metric",
        "n",
        "mean_diff",
        "t_pvalue",
        "perm_pvalue",
    ]
    assert set(significance["reference"]) == {"clip-ita"}
    assert "clip-ita" not in set(significance["model"])

    # metadata: the markdown metrics table and the report's paths
    metrics_meta = result.asset_materializations_for_node("metrics")[0].metadata
    assert "| clip-ita | all |" in metrics_meta["metrics_all"].value
    report_meta = result.asset_materializations_for_node("report")[0].metadata
    report_md = Path(report_meta["report"].value)
    assert report_md == data_dir.resolve() / "reports" / "report.md"
    text = report_md.read_text()
    assert "Dataset: fixture catalogue" in text
    assert "CLIP-ITA (exact)" not in text and "CLIP-ITA (hnsw)" in text
    assert "| CLIP-ITA |" in text and "9.90 / 13.27 / 13.43 / 20.30 / 20.53 / 13.42" in text
    for key, value in report_meta.items():
        if key.startswith("plot/"):
            png = Path(value.value)
            assert png.parent == report_md.parent
            assert f"]({png.name})" in text
            with Image.open(png) as im:
                assert im.format == "PNG" and im.size[0] > 100
    artefacts = read("report")
    assert artefacts.columns == ["artefact", "path"]
    assert artefacts.height == 5
    assert not list(report_md.parent.glob(".*.tmp"))  # atomic writes leave no temp files


def test_metrics_markdown_formats_percentages():
    table = pl.DataFrame(
        {
            "model": ["clip-ita"],
            "setting": ["all"],
            "subset": ["all"],
            "n_queries": [3],
            **{
                m: [0.1234]
                for m in ("p_at_1", "p_at_5", "p_at_10", "map_at_5", "map_at_10", "r_precision")
            },
        }
    )
    md = metrics_markdown(table)
    assert "| clip-ita | all | 3 | 12.34 |" in md


@pytest.mark.parametrize("missing", ["query", "rank"])
def test_select_runs_rejects_missing_columns(missing):
    with pytest.raises(ValueError, match="lacks column"):
        select_runs(fixture_tables()["retrieval_runs"].drop(missing))
