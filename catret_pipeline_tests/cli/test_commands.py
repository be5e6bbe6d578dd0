"""CLI behaviour that needs no materialised project."""

from __future__ import annotations

import os

import pytest

from catret_pipeline import cli
from catret_pipeline import config as catret_config
from catret_pipeline.cli.environment import configure
from catret_pipeline.cli.main import build_parser
from catret_pipeline.cli.materialize import on_demand_config, select_job


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    # configure_environment writes os.environ; monkeypatch restores whatever it touched.
    for name in (
        catret_config.ENV_DATA_DIR,
        catret_config.ENV_RAW_ROOT,
        "DAGSTER_HOME",
        "HF_HUB_OFFLINE",
        catret_config.ENV_PROFILE,
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)


def test_query_commands_do_not_create_a_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(["sql", "--data-dir", str(missing), "select 1"]) == 2
    assert cli.main(["search", "--data-dir", str(missing), "Radio Antennas"]) == 2
    assert not missing.exists()
    assert "catret materialize" in capsys.readouterr().err


def test_configure_environment_writes_a_persistent_instance(tmp_path):
    args = build_parser().parse_args(
        ["ui", "--data-dir", str(tmp_path / "d"), "--profile", "offline"]
    )
    config = configure(args)
    home = tmp_path / "d" / "dagster_home"
    assert config.instance_home == home
    assert "tag_concurrency_limits" in (home / "dagster.yaml").read_text()
    assert os.environ["DAGSTER_HOME"] == str(home)


def test_bad_profile_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(catret_config.ENV_PROFILE, "gpu-please")
    with pytest.raises(ValueError, match="CATRET_PROFILE"):
        configure(build_parser().parse_args(["ui", "--data-dir", str(tmp_path)]))


def test_selection_takes_multi_asset_neighbours_along(tmp_path):
    from catret_pipeline.definitions import build_definitions

    defs = build_definitions(data_dir=str(tmp_path))
    job = select_job(defs, "+key:products")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"raw_products", "quarantine", "products"} <= keys
    assert "title_embeddings" not in keys


def test_on_demand_flags_become_valid_run_config(tmp_path, capsys):
    import dagster as dg

    from catret_pipeline.definitions import build_definitions

    defs = build_definitions(data_dir=str(tmp_path))
    whole = select_job(defs, None)
    config = on_demand_config(whole, retrain=True, rebuild_indexes=True)
    assert config == {
        "ops": {
            "fusion_models": {"config": {"force_retrain": True}},
            "hnsw_indexes": {"config": {"force_rebuild": True}},
        }
    }
    # Dagster accepts it for the whole job ...
    assert dg.validate_run_config(whole, config)
    # ... and a selection without those steps gets no config (it would fail validation).
    ingest_only = select_job(defs, "+key:products")
    assert on_demand_config(ingest_only, retrain=True) == {}
    assert "no effect" in capsys.readouterr().out
    assert on_demand_config(whole) == {}


def test_rebuild_flag_reaches_every_per_model_index_step(tmp_path):
    import dagster as dg

    from catret_pipeline.definitions import build_definitions

    job = select_job(build_definitions(data_dir=str(tmp_path), shards=2), None)
    config = on_demand_config(job, retrain=True, rebuild_indexes=True)
    index_ops = [name for name in config["ops"] if name.startswith("index_shards__")]
    assert len(index_ops) >= 3 and "hnsw_indexes" not in config["ops"]
    assert dg.validate_run_config(job, config)
