"""Per-model index steps (``build_assets(shards > 1)``): the graph, and the merged table, the
index files, the recall check and the runs equal to the single-step ``hnsw_indexes``.

The multiprocess version of the comparison is in test_embeddings_shards.py (slow acceptance).
"""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from catret_pipeline.definitions import build_definitions
from catret_pipeline.fusion.features import MODEL_SPECS
from catret_pipeline.retrieval.assets import build_assets
from catret_pipeline.retrieval.checks import hnsw_recall
from catret_pipeline.retrieval.hnsw_store import read_index_meta
from catret_pipeline.retrieval.index_assets import (
    INDEX_SHARD_GROUP,
    hnsw_indexes,
    index_config_ops,
    index_models,
    index_shard_key,
)
from catret_pipeline.retrieval.index_table import merge_index_rows
from catret_pipeline.retrieval.run_assets import retrieval_runs
from catret_pipeline.retrieval.schemas import INDEX_COLUMNS
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline_tests.retrieval.test_assets import run, write_fixtures

#: Timing: the only column allowed to differ between two builds of the same vectors.
TIMING = ["build_seconds"]


def _per_model_keys() -> set[dg.AssetKey]:
    return {index_shard_key(m) for m in index_models()}


# ---- the graph --------------------------------------------------------------------------------


def test_one_shard_is_the_single_step_graph():
    assert build_assets(1) == [hnsw_indexes, retrieval_runs]
    with pytest.raises(ValueError, match="shards must be >= 1"):
        build_assets(0)


def test_sharded_graph_has_a_step_per_model_and_the_merge():
    assert index_models() == ["mpnet", "clip", *sorted(MODEL_SPECS)]
    assets = build_assets(3)
    by_key = {k: a for a in assets for k in a.keys}
    assert set(by_key) == {*_per_model_keys(), dg.AssetKey("hnsw_indexes"), retrieval_runs.key}
    for model in index_models():
        asset = by_key[index_shard_key(model)]
        assert asset.group_names_by_key[index_shard_key(model)] == INDEX_SHARD_GROUP
        wanted = {
            "mpnet": {"title_embeddings", "category_embeddings"},
            "clip": {"image_embeddings", "category_clip_embeddings"},
        }.get(model, {"fused_representations"})
        # each step reads only its model's tables: the baselines need not wait for fusion
        assert {k.to_user_string() for k in asset.dependency_keys} == {"evaluation_pairs", *wanted}
    merge = by_key[dg.AssetKey("hnsw_indexes")]
    assert merge.dependency_keys == {*_per_model_keys(), dg.AssetKey("fused_representations")}


def test_sharded_definitions_keep_downstream_and_the_catalogue_on_the_merge(tmp_path):
    defs = build_definitions(data_dir=str(tmp_path), shards=2)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert _per_model_keys() <= graph.get_all_asset_keys()
    assert dg.AssetKey("hnsw_indexes") in graph.get(retrieval_runs.key).parent_keys
    catalog = graph.get(dg.AssetKey("catret_duckdb")).parent_keys
    assert dg.AssetKey("hnsw_indexes") in catalog
    assert not [k for k in catalog if k.path[0] == INDEX_SHARD_GROUP]
    plain = build_definitions(data_dir=str(tmp_path), shards=1).resolve_asset_graph()
    assert not [k for k in plain.get_all_asset_keys() if k.path[0] == INDEX_SHARD_GROUP]


def test_index_config_goes_to_whichever_index_steps_the_job_has(tmp_path):
    cfg = {"force_rebuild": True}
    plain = build_definitions(data_dir=str(tmp_path), shards=1).resolve_job_def("catret_build")
    assert index_config_ops(plain, cfg) == {"hnsw_indexes": {"config": cfg}}
    defs = build_definitions(data_dir=str(tmp_path), shards=2)
    sharded = defs.resolve_job_def("catret_build")
    ops = index_config_ops(sharded, cfg)
    assert set(ops) == {k.to_python_identifier() for k in _per_model_keys()}
    # the merge alone takes no config, and refuses IndexConfig values rather than ignore them
    merge_only = sharded.get_subset(asset_selection={dg.AssetKey("hnsw_indexes")})
    assert index_config_ops(merge_only, cfg) == {}
    with pytest.raises(dg.DagsterInvalidConfigError, match="force_rebuild"):
        dg.validate_run_config(merge_only, {"ops": {"hnsw_indexes": {"config": cfg}}})


def test_merge_index_rows_orders_by_model_and_refuses_foreign_rows():
    def rows(model, settings):
        blank = dict.fromkeys(INDEX_COLUMNS)
        return pl.DataFrame(
            [{**blank, "model": model, "setting": s, "n_items": 1} for s in settings],
            schema=INDEX_COLUMNS,
        )

    a, b = rows("mpnet", ["general", "all"]), rows("clip", ["all"])
    merged = merge_index_rows([a, b.clear(), b], ["mpnet", "clip-i", "clip"])
    assert merged.select("model", "setting").rows() == [
        ("mpnet", "all"),
        ("mpnet", "general"),
        ("clip", "all"),
    ]
    assert merged.schema == pl.Schema(INDEX_COLUMNS)
    assert merge_index_rows([a.clear()], ["mpnet"]).schema == pl.Schema(INDEX_COLUMNS)
    with pytest.raises(ValueError, match="rows of other models"):
        merge_index_rows([b], ["mpnet"])


# ---- sharded == unsharded, in-process ---------------------------------------------------------


def _sharded_selection() -> list:
    return [*build_assets(2), hnsw_recall]


def _index_table(data: Path) -> pl.DataFrame:
    return pl.read_parquet(data / "assets" / "hnsw_indexes.parquet")


def _assert_same_indexes(plain: Path, sharded: Path) -> pl.DataFrame:
    a, b = _index_table(plain), _index_table(sharded)
    assert a.drop(TIMING).equals(b.drop(TIMING))
    for row in a.filter(pl.col("index_path").is_not_null()).iter_rows(named=True):
        path_a, path_b = plain / row["labels_path"], sharded / row["labels_path"]
        assert pl.read_parquet(path_a).equals(pl.read_parquet(path_b))
        # the metadata holds the binary's size and sha256: the same graph, byte for byte
        assert read_index_meta(path_a) == read_index_meta(path_b)
    return a


def test_per_model_steps_equal_the_single_step_asset(tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    write_fixtures(plain)
    write_fixtures(sharded)
    ref = run(plain, [hnsw_indexes, hnsw_recall, retrieval_runs])
    got = run(sharded, _sharded_selection())
    assert ref.success and got.success

    table = _assert_same_indexes(plain, sharded)
    assert table.select("model").unique(maintain_order=True)["model"].to_list() == [
        "mpnet",
        "clip",
        "clip-ita",
    ]
    runs_a = pl.read_parquet(plain / "assets" / "retrieval_runs.parquet")
    runs_b = pl.read_parquet(sharded / "assets" / "retrieval_runs.parquet")
    assert runs_a.equals(runs_b)

    # the merge reports what the single step reports
    want = ref.asset_materializations_for_node("hnsw_indexes")[0].metadata
    have = got.asset_materializations_for_node("hnsw_indexes")[0].metadata
    for name in ("n_indexes", "n_built", "n_updated", "n_unchanged", "total_bytes"):
        assert have[name].value == want[name].value, name
    for name in ("recall_bound", "recall_sample_queries", "seed", "min_recall_at_10"):
        assert have[name].value == pytest.approx(want[name].value), name
    assert have["indexes"].value == want["indexes"].value
    assert have["index_steps"].value == len(index_models())
    (check,) = got.get_asset_check_evaluations()
    assert check.passed and check.asset_key == dg.AssetKey("hnsw_indexes")

    # models fusion did not train: a step each, zero rows, no files
    for model in sorted(set(MODEL_SPECS) - {"clip-ita"}):
        (mat,) = got.asset_materializations_for_node(index_shard_key(model).to_python_identifier())
        assert mat.metadata["dagster/row_count"].value == 0
        assert not (sharded / "indexes" / model).exists()


def test_per_model_config_reaches_every_step_and_the_recall_check(tmp_path):
    write_fixtures(tmp_path)
    selection = _sharded_selection()
    assert run(tmp_path, selection).success
    ops = {
        k.to_python_identifier(): {"config": {"force_rebuild": True, "recall_bound": 0.5}}
        for k in _per_model_keys()
    }
    result = run(tmp_path, selection, {"ops": ops})
    assert result.success
    table = _index_table(tmp_path).filter(pl.col("index_path").is_not_null())
    assert table.height == 6
    assert set(table.select("action", "reason").rows()) == {("built", "forced (force_rebuild)")}
    (check,) = result.get_asset_check_evaluations()
    assert check.metadata["recall_bound"].value == pytest.approx(0.5)

    # unchanged inputs, default config: every index kept as it is
    assert run(tmp_path, selection).success
    assert set(_index_table(tmp_path)["action"].drop_nulls()) == {"unchanged"}


def test_a_trained_model_without_a_step_fails_the_merge_clearly(tmp_path):
    write_fixtures(tmp_path)
    path = tmp_path / "assets" / "fused_representations.parquet"
    fused = pl.read_parquet(path)
    extra = fused.filter(pl.col("model") == "clip-ita").with_columns(model=pl.lit("my-model"))
    atomic_write_parquet(pl.concat([fused, extra]), path)
    result = run(tmp_path, _sharded_selection())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "my-model" in str(failure.step_failure_data.error)
    assert "no per-model index" in str(failure.step_failure_data.error)
    assert not (tmp_path / "assets" / "hnsw_indexes.parquet").exists()
