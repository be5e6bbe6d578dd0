"""HNSW parameters declared once: HnswParams / UpdatePolicy and the Dagster IndexConfig share
their fields, defaults and bounds; every documented run config key is still accepted."""

import dagster as dg
import pydantic
import pytest

from catret_pipeline.definitions import build_definitions
from catret_pipeline.retrieval import hnsw_index
from catret_pipeline.retrieval.config import IndexConfig, index_params
from catret_pipeline.retrieval.hnsw_params import (
    GraphOptions,
    HnswParams,
    RecallOptions,
    UpdateOptions,
    UpdatePolicy,
)
from catret_pipeline.retrieval.index_assets import index_config_ops

#: The run config keys of hnsw_indexes / serving_indexes (docs/retrieval.md, docs/serving.md).
DOCUMENTED_KEYS = {
    "M": 8,
    "ef_construction": 100,
    "ef": 40,
    "ef_max": 400,
    "threads": 2,
    "recall_sample_queries": 50,
    "recall_bound": 0.9,
    "seed": 3,
    "rebuild_fraction": 0.3,
    "max_deleted_fraction": 0.1,
    "force_rebuild": True,
}


def test_index_config_is_the_option_groups_plus_threads():
    groups = [*GraphOptions.model_fields, *RecallOptions.model_fields, *UpdateOptions.model_fields]
    assert list(IndexConfig.model_fields) == [*groups, "threads"]
    assert set(IndexConfig.model_fields) == set(DOCUMENTED_KEYS)
    # the library objects add only what the code sets
    assert set(HnswParams.model_fields) - set(GraphOptions.model_fields) == {"space"}
    assert set(UpdatePolicy.model_fields) - set(UpdateOptions.model_fields) == {"tolerance"}


def test_defaults_are_the_same_everywhere():
    params, policy = index_params(IndexConfig())
    assert params == HnswParams()
    assert policy == UpdatePolicy()
    assert (params.M, params.ef_construction, params.ef, params.seed, params.space) == (
        16,
        200,
        100,
        0,
        "ip",
    )
    assert (policy.rebuild_fraction, policy.max_deleted_fraction, policy.force_rebuild) == (
        0.5,
        0.25,
        False,
    )
    config = IndexConfig()
    assert (config.ef_max, config.recall_sample_queries, config.recall_bound) == (1000, 200, 0.98)
    assert config.threads == 1


def test_every_documented_key_is_accepted_and_reaches_the_params(tmp_path):
    job = build_definitions(data_dir=str(tmp_path)).resolve_job_def("catret_build")
    ops = index_config_ops(job, DOCUMENTED_KEYS)
    assert set(ops) == {"hnsw_indexes"}
    ops["serving_indexes"] = {"config": DOCUMENTED_KEYS}  # delivery's index, same IndexConfig
    assert dg.validate_run_config(job, {"ops": ops})
    with pytest.raises(dg.DagsterInvalidConfigError, match="space"):
        dg.validate_run_config(job, {"ops": {"hnsw_indexes": {"config": {"space": "ip"}}}})
    params, policy = index_params(IndexConfig(**DOCUMENTED_KEYS))
    assert params == HnswParams(M=8, ef_construction=100, ef=40, seed=3)
    assert policy == UpdatePolicy(
        rebuild_fraction=0.3, max_deleted_fraction=0.1, force_rebuild=True
    )


@pytest.mark.parametrize(
    ("cls", "bad"),
    [
        (HnswParams, {"M": 1}),
        (HnswParams, {"ef_construction": 0}),
        (HnswParams, {"ef": 0}),
        (HnswParams, {"space": "l2"}),
        (HnswParams, {"ef_max": 10}),  # not a graph parameter
        (UpdatePolicy, {"max_deleted_fraction": 1.5}),
        (UpdatePolicy, {"tolerance": -1}),
        (IndexConfig, {"M": 1}),
        (IndexConfig, {"rebuild_fraction": -0.1}),
    ],
)
def test_bounds_are_checked_on_every_side(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


def test_params_are_frozen_and_the_facade_reexports_them():
    with pytest.raises(pydantic.ValidationError):
        HnswParams().M = 4
    assert hnsw_index.HnswParams is HnswParams and hnsw_index.UpdatePolicy is UpdatePolicy
    for name in hnsw_index.__all__:
        assert getattr(hnsw_index, name) is not None
