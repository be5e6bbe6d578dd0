"""Configuration errors are refused up front with one clear line (issue #12 item 7): before the
sample is generated, before a data dir is created, and without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from catret_pipeline import cli
from catret_pipeline import config as catret_config
from catret_pipeline_tests.support import REPO


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    for name in (
        catret_config.ENV_DATA_DIR,
        catret_config.ENV_RAW_ROOT,
        catret_config.ENV_EMBED_SHARDS,
        catret_config.ENV_EXECUTOR,
        "DAGSTER_HOME",
        "HF_HUB_OFFLINE",
        catret_config.ENV_PROFILE,
        catret_config.ENV_IMAGE_ALLOW_HOSTS,
    ):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def _one_clear_line(err: str, *needles: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("catret: configuration error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({catret_config.ENV_EMBED_SHARDS: "0"}, "CATRET_EMBED_SHARDS must be >= 1"),
        ({catret_config.ENV_EMBED_SHARDS: "-1"}, "CATRET_EMBED_SHARDS must be >= 1"),
        ({catret_config.ENV_EMBED_SHARDS: "abc"}, "CATRET_EMBED_SHARDS must be an integer"),
        ({catret_config.ENV_PROFILE: "nonsense"}, "CATRET_PROFILE='nonsense'"),
        ({catret_config.ENV_EXECUTOR: "threads"}, "CATRET_EXECUTOR='threads'"),
        ({catret_config.ENV_IMAGE_ALLOW_HOSTS: "10.0.0.0/33"}, "CATRET_IMAGE_ALLOW_HOSTS"),
    ],
)
def test_bad_environment_is_one_line_before_the_sample_exists(
    tmp_path, monkeypatch, capsys, env, needle
):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    # The bundled sample (no raw root): on main it was generated before the shard count failed.
    assert cli.main(["materialize", "--data-dir", str(data), "--sample-products", "20"]) == 2
    _one_clear_line(capsys.readouterr().err, needle)
    assert not (data / "sample").exists()
    assert not data.exists(), "a refused configuration must not create the data dir"


def test_missing_or_empty_raw_root_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    missing = tmp_path / "no-such-root"
    assert cli.main(["materialize", "--data-dir", str(data), "--raw-root", str(missing)]) == 2
    _one_clear_line(capsys.readouterr().err, str(missing), "does not exist")
    empty = tmp_path / "empty-root"
    (empty / "us" / "Electronics").mkdir(parents=True)
    assert cli.main(["materialize", "--data-dir", str(data), "--raw-root", str(empty)]) == 2
    _one_clear_line(capsys.readouterr().err, "no metadata_", str(empty))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert cli.main(["materialize", "--data-dir", str(data), "--raw-root", str(not_a_dir)]) == 2
    _one_clear_line(capsys.readouterr().err, "not a directory")
    assert not data.exists()


def test_bad_profile_on_the_query_commands_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(catret_config.ENV_PROFILE, "nonsense")
    assert cli.main(["search", "--data-dir", str(tmp_path), "Radios"]) == 2
    _one_clear_line(capsys.readouterr().err, "CATRET_PROFILE")


def test_the_real_command_prints_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    env[catret_config.ENV_EMBED_SHARDS] = "abc"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "catret_pipeline.cli",
            "materialize",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    _one_clear_line(proc.stderr, "CATRET_EMBED_SHARDS must be an integer, got 'abc'")
    assert proc.stdout == ""
