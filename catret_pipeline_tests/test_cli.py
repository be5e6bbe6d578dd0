"""CLI behaviour that needs no materialised project."""

from __future__ import annotations

import os

import pytest

from catret_pipeline import cli, settings


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    # configure_environment writes os.environ; monkeypatch restores whatever it touched.
    for name in (
        settings.ENV_DATA_DIR,
        settings.ENV_RAW_ROOT,
        "DAGSTER_HOME",
        "HF_HUB_OFFLINE",
        settings.ENV_PROFILE,
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
    env = cli.configure_environment(str(tmp_path / "d"), None, "offline")
    home = tmp_path / "d" / "dagster_home"
    assert env["dagster_home"] == str(home)
    assert "tag_concurrency_limits" in (home / "dagster.yaml").read_text()
    assert os.environ["DAGSTER_HOME"] == str(home)


def test_bad_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="CATRET_PROFILE"):
        cli.configure_environment(str(tmp_path), None, "gpu-please")


def test_selection_takes_multi_asset_neighbours_along(tmp_path):
    from catret_pipeline.definitions import build_definitions

    defs = build_definitions(data_dir=str(tmp_path))
    job = cli.select_job(defs, "+key:products")
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"raw_products", "quarantine", "products"} <= keys
    assert "title_embeddings" not in keys
