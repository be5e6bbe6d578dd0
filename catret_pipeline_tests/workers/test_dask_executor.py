"""``CATRET_EXECUTOR=dask``: the settings, then tiny jobs on real Dask clusters (no mocks).

The tiny jobs live in ``dask_jobs.py``, which the Dask workers import to rebuild them. The whole
build on Dask against an in-process build is ``integration/test_dask_build.py``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import dask
import pytest
from dagster._core.errors import DagsterUnmetExecutorRequirementsError
from dask.distributed import LocalCluster

from catret_pipeline.config import CatretConfig, ConfigError
from catret_pipeline.definitions import build_executor
from catret_pipeline.workers.dask_executor import DAEMON_ENV, NotRun, local_cluster_options
from catret_pipeline_tests.workers.dask_jobs import load, reconstructable_tiny_job


def _cluster_config(executor_def: dg.ExecutorDefinition) -> dict:
    resolved = executor_def.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    return resolved.value["config"]["cluster"]


# ---- settings -> executor definition ---------------------------------------------------------


def test_dask_without_an_address_is_a_local_cluster_of_max_concurrent_workers():
    config = CatretConfig.from_env({"CATRET_EXECUTOR": "dask", "CATRET_MAX_CONCURRENT": "3"})
    assert (config.executor, config.dask_address, config.max_concurrent) == ("dask", "", 3)
    executor = build_executor(config)
    assert executor.name == "dask"
    local = _cluster_config(executor)["local"]
    assert local["n_workers"] == 3
    assert local["threads_per_worker"] == 1 and local["processes"] is True
    assert local["host"] == "127.0.0.1" and local["dashboard_address"] is None
    assert local["scheduler_kwargs"] == {"dashboard_address": "127.0.0.1:0"}


def test_zero_workers_means_one_per_cpu():
    config = CatretConfig.from_env({"CATRET_EXECUTOR": "dask"})
    assert _cluster_config(build_executor(config))["local"]["n_workers"] == os.cpu_count()


def test_an_address_selects_the_existing_cluster():
    env = {"CATRET_EXECUTOR": "dask", "CATRET_DASK_ADDRESS": " tcp://10.0.0.5:8786 "}
    cluster = _cluster_config(build_executor(CatretConfig.from_env(env)))
    assert cluster == {"existing": {"address": "tcp://10.0.0.5:8786"}}
    # A bare host:port (what people copy from `dask scheduler`'s log without the scheme) is TCP.
    bare = CatretConfig.from_env({**env, "CATRET_DASK_ADDRESS": "scheduler:8786"})
    assert bare.dask_address == "tcp://scheduler:8786"
    # The address travels to step processes with the other variables.
    assert CatretConfig.from_env(env).to_env()["CATRET_DASK_ADDRESS"] == env["CATRET_DASK_ADDRESS"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CATRET_EXECUTOR": "celery"}, r"CATRET_EXECUTOR='celery': expected one of .*'dask'"),
        ({"CATRET_DASK_ADDRESS": "http://h:8786"}, "CATRET_DASK_ADDRESS='http://h:8786'"),
        ({"CATRET_DASK_ADDRESS": "tcp://h"}, "expected a Dask scheduler address"),
        ({"CATRET_DASK_ADDRESS": "tcp://:8786"}, "expected a Dask scheduler address"),
        ({"CATRET_DASK_ADDRESS": "h:port"}, "expected a Dask scheduler address"),
        ({"CATRET_EXECUTOR": "dask", "CATRET_MAX_CONCURRENT": "-1"}, "CATRET_MAX_CONCURRENT"),
    ],
)
def test_bad_values_are_clear_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        CatretConfig.from_env(env)


def test_not_run_message_is_the_multiprocess_executors():
    assert NotRun("c", ("a",), ("b",)).message == (
        "Dependencies for step c failed: ['a'] were not executed: ['b']. Not executing."
    )


def test_an_ephemeral_instance_is_refused_clearly(tmp_path):
    job = reconstructable_tiny_job(store=str(tmp_path), workers=1)
    # Each worker opens the run's instance from its ref: Dagster refuses an in-memory one
    # before any cluster starts.
    instance = dg.DagsterInstance.ephemeral()
    with dg.execute_job(job, instance=instance, raise_on_error=False) as result:
        assert not result.success
        said = " ".join(repr(e.event_specific_data) for e in result.all_events)
    assert DagsterUnmetExecutorRequirementsError.__name__ in said
    assert "non-ephemeral instance" in said


# ---- tiny jobs on real clusters --------------------------------------------------------------


def _events(instance, run_id: str, kind: dg.DagsterEventType) -> list:
    return [
        e.dagster_event
        for e in instance.all_logs(run_id, of_type=kind)
        if e.dagster_event is not None
    ]


@pytest.mark.timeout(120)
def test_a_tiny_graph_runs_on_two_local_worker_processes(tmp_path, caplog):
    started = time.monotonic()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        job = reconstructable_tiny_job(store=str(tmp_path / "store"), workers=2)
        with dg.execute_job(job, instance=instance) as result:
            assert result.success
        pids = load(tmp_path / "store", "joined")
        starts = _events(instance, result.run_id, dg.DagsterEventType.STEP_START)
    print(f"tiny graph on a 2-worker LocalCluster: {time.monotonic() - started:.1f} s")
    assert pids.pop("child_exit") == 0  # the workers are not daemonic
    assert set(pids) == {"left", "right", "slow", "joined"}
    assert len(set(pids.values())) >= 2, pids
    assert os.getpid() not in pids.values()
    assert {e.pid for e in starts} == set(pids.values())
    # Dagster's event values measure (dask.sizeof) cleanly: no warning per step.
    assert not [r for r in caplog.records if r.name == "distributed.sizeof"]


@pytest.mark.timeout(120)
def test_a_failed_step_abandons_its_dependents_and_reexecutes_from_failure(tmp_path):
    store = tmp_path / "store"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        job = reconstructable_tiny_job(store=str(store), workers=2, failing=True)
        with dg.execute_job(job, instance=instance, raise_on_error=False) as result:
            assert not result.success
            run_id = result.run_id
        failures = _events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
        starts = _events(instance, run_id, dg.DagsterEventType.STEP_START)
        messages = [e.user_message for e in instance.all_logs(run_id)]

        # Re-executed from the failure (the UI's button), now with broken mended: only broken and
        # its dependents run again, and after_broken reads left from the parent run.
        mended = {"ops": {"broken": {"config": {"fail": False}}}}
        options = dg.ReexecutionOptions.from_failure(run_id, instance)
        with dg.execute_job(
            job, instance=instance, run_config=mended, reexecution_options=options
        ) as again:
            assert again.success
        rerun = _events(instance, again.run_id, dg.DagsterEventType.STEP_START)

    # Only the broken step failed: its dependents never started (dagster-dask alone runs them,
    # and they fail loading an input that was never written); the independent branch ran.
    assert [e.step_key for e in failures] == ["broken"]
    assert {e.step_key for e in starts} == {"left", "broken"}
    assert "Dependencies for step after_broken failed: ['broken']. Not executing." in messages
    assert (
        "Dependencies for step after_after were not executed: ['after_broken']. Not executing."
        in messages
    )
    assert {e.step_key for e in rerun} == {"broken", "after_broken", "after_after"}
    assert load(store, "after_after") == 3


@pytest.fixture()
def cluster():
    """Two worker processes of a cluster the test owns (the executor's ``existing`` mode)."""
    # Not daemonic, as DAEMON_ENV tells users to start the workers of an existing cluster.
    daemon = {"distributed.worker.daemon": False}
    with dask.config.set(daemon), LocalCluster(**local_cluster_options(2)) as local:
        yield local


def _worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


@pytest.mark.timeout(180)
def test_killing_a_worker_mid_step_reruns_the_step_elsewhere(tmp_path, cluster):
    from dask.distributed import Client

    pid_file = tmp_path / "slow.pid"
    run_config = {"ops": {"slow": {"config": {"pid_file": str(pid_file), "seconds": 6.0}}}}
    store = tmp_path / "store"
    job = reconstructable_tiny_job(store=str(store), address=cluster.scheduler_address)
    outcome: dict = {}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        def run() -> None:
            with dg.execute_job(
                job, instance=instance, run_config=run_config, raise_on_error=False
            ) as result:
                outcome["success"] = result.success
                outcome["run_id"] = result.run_id

        thread = threading.Thread(target=run)
        started = time.monotonic()
        thread.start()
        with Client(cluster.scheduler_address) as client:
            workers_before = _worker_pids(client)
            victim = _wait_for_pid(pid_file, timeout=60)
            assert victim in workers_before
            os.kill(victim, signal.SIGKILL)
            pid_file.unlink()
            thread.join(timeout=150)
            assert not thread.is_alive()
            rerun_pid = int(pid_file.read_text())
        starts = _events(instance, outcome["run_id"], dg.DagsterEventType.STEP_START)
    print(f"killed worker {victim} mid-step; run ended in {time.monotonic() - started:.1f} s")
    # Dask noticed the dead worker and ran the task again on a live one: the run completes.
    assert outcome["success"], outcome
    assert rerun_pid != victim and load(store, "joined")["slow"] == rerun_pid
    assert [e.step_key for e in starts].count("slow") == 2  # the killed attempt and the rerun


def _wait_for_pid(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"no step wrote {path} in {timeout} s")


def test_the_documented_worker_variable_sets_the_daemon_key():
    # What existing-cluster workers are told to set is the key local clusters set.
    assert dask.config.collect(paths=[], env={DAEMON_ENV: "False"}) == {
        "distributed": {"worker": {"daemon": False}}
    }
