"""`catret materialize` takes the refresh slot: it waits for nothing, refuses to start beside a
live build or refresh, and frees the slot of a build whose process was killed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import dagster as dg
import pytest

from catret_pipeline import cli
from catret_pipeline.cli.environment import DAGSTER_YAML, configure
from catret_pipeline.cli.main import build_parser
from catret_pipeline.config import REFRESH_TAG
from catret_pipeline.refresh.run_slot import HOST_TAG, PID_TAG, refresh_runs_in_progress


@pytest.fixture()
def project(tmp_path, small_raw_root, cli_env_cleared):
    data = tmp_path / "data"
    args = ["materialize", "--data-dir", str(data), "--raw-root", str(small_raw_root)]
    config = configure(build_parser().parse_args([*args, "--profile", "offline"]))
    return {"data": data, "raw": small_raw_root, "home": str(config.instance_home)}


def _add_run(status, tags) -> str:
    with dg.DagsterInstance.get() as instance:
        run = dg.DagsterRun(
            job_name="catret_build", run_id=str(uuid.uuid4()), status=status, tags=tags
        )
        instance.add_run(run)
        return run.run_id


def _status(run_id: str):
    with dg.DagsterInstance.get() as instance:
        return instance.get_run_by_id(run_id).status


def _materialize(project, *extra: str) -> int:
    return cli.main(
        [
            "materialize",
            "--data-dir",
            str(project["data"]),
            "--raw-root",
            str(project["raw"]),
            "--select",
            "+key:products",
            *extra,
        ]
    )


def test_tag_is_the_one_the_queue_limits():
    assert f"key: {REFRESH_TAG}" in DAGSTER_YAML


def test_refuses_to_start_beside_a_live_refresh(project, capsys):
    live = _add_run(dg.DagsterRunStatus.STARTED, {REFRESH_TAG: "true"})  # e.g. the daemon's
    assert _materialize(project) == 3
    assert live in capsys.readouterr().err
    assert not (project["data"] / "assets" / "products.parquet").exists()
    assert _status(live) == dg.DagsterRunStatus.STARTED  # left alone: no pid to judge by
    # --force starts anyway, and a finished refresh never blocks.
    assert _materialize(project, "--force") == 0
    _add_run(dg.DagsterRunStatus.SUCCESS, {REFRESH_TAG: "true"})


def test_a_killed_cli_build_does_not_hold_the_slot(project):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tags = {
        REFRESH_TAG: "true",
        PID_TAG: str(dead.pid),
        HOST_TAG: socket.gethostname(),
    }
    stale = _add_run(dg.DagsterRunStatus.STARTED, tags)
    alive = _add_run(
        dg.DagsterRunStatus.STARTED, {**tags, PID_TAG: str(os.getpid())}
    )  # this very process: live
    with dg.DagsterInstance.get() as instance:
        assert refresh_runs_in_progress(instance) == [alive]
    assert _status(stale) == dg.DagsterRunStatus.FAILURE
    with dg.DagsterInstance.get() as instance:
        instance.report_run_failed(instance.get_run_by_id(alive))
    assert _materialize(project) == 0
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"catret/trigger": "cli"}))
    mine = [r for r in runs if r.tags.get(PID_TAG) == str(os.getpid())]
    assert mine and mine[0].status == dg.DagsterRunStatus.SUCCESS
    assert mine[0].tags[REFRESH_TAG] == "true"
    assert (project["data"] / "assets" / "products.parquet").exists()
