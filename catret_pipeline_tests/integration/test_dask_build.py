"""The whole build on a 2-worker Dask cluster, with every table and binary artefact on ``s3://``
(moto's S3 server on 127.0.0.1), equals the same build in one process on the local disk.

Both builds run the driver (dask_build_driver.py: ``catret materialize``'s ``execute_build``) in
a subprocess on the same small generated catalogue, side by side; the cluster's workers share
nothing but the store. :func:`build` takes the variables of one build.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from catret_pipeline_tests.object_store import s3_server
from catret_pipeline_tests.support import REPO, TEST_ENV

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: What differs between two correct builds: wall-clock seconds, and why an index was kept.
#: The killed worker held the results of steps it had finished; Dask recomputes those, so such a
#: step runs twice and its second run finds its own artefacts: heads "reused", an index kept, as
#: for a resumed step in test_fault_injection.py. The heads and index files are equal.
RERUN = {"status", "reason", "data_change_fraction"}
INDEX_RERUN = {"build_seconds", "action", "reason", "n_added", "n_removed", "n_changed"}
PROVENANCE = {
    "fusion_models": {"seconds"} | RERUN,
    "hnsw_indexes": INDEX_RERUN,
    "serving_indexes": INDEX_RERUN,
    # Views over local files; copies of the tables on the store (DuckDB reads no s3fs store).
    "catret_duckdb": {"parquet", "kind"},
}
#: Vector columns are compared within this (the builds run in different processes).
VECTOR_ATOL = 1e-5
DASK = {"CATRET_EXECUTOR": "dask", "CATRET_MAX_CONCURRENT": "2"}


def _env(raw_root: Path) -> dict[str, str]:
    """The test environment of a build of ``raw_root``: the tiny encoders, offline, one thread."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    return (
        base
        | TEST_ENV
        | {
            "CATRET_RAW_ROOT": str(raw_root),
            "CATRET_IMAGE_MIRROR": str(raw_root.parent / "images"),
            "HF_HUB_OFFLINE": "1",
            # One thread in every process (the Dask nanny sets the same in its workers), so float
            # reductions agree between the builds.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )


def build(env: dict[str, str], data_dir: Path, raw_root: Path) -> subprocess.Popen:
    """Start one build of ``raw_root`` into ``data_dir`` with ``env`` on top of the test
    environment (the tiny encoders, one thread per process); :func:`finish` waits for it."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115 - closed in finish
    cmd = [sys.executable, "-m", "catret_pipeline_tests.integration.dask_build_driver"]
    proc = subprocess.Popen(
        [*cmd, str(data_dir)],
        cwd=REPO,
        env=_env(raw_root) | env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, data_dir: Path) -> dict:
    out, _ = proc.communicate(timeout=600)
    proc.log.close()
    log = (data_dir.parent / f"{data_dir.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["success"], (summary["failed"], log[-4000:])
    summary["log"] = log
    return summary


BUCKET = "catret"
#: Every table and every binary artefact on the S3 server: the workers share only the store.
STORES = {
    "CATRET_TABLE_STORE": f"s3://{BUCKET}/assets",
    "CATRET_ARTEFACT_STORE": f"s3://{BUCKET}/data",
}


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        server.bucket(BUCKET)
        yield server


def remote_tables(s3) -> dict[str, pl.DataFrame]:
    """Every table on the store, by its key under the table store (``metrics.parquet``)."""
    fs, prefix = s3.filesystem(), f"{BUCKET}/assets/"
    out = {}
    for key in fs.find(prefix):
        if key.endswith(".parquet"):
            with fs.open(key, "rb") as fh:
                out[key.removeprefix(prefix)] = pl.read_parquet(io.BytesIO(fh.read()))
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory, small_raw_root, s3) -> dict:
    root = tmp_path_factory.mktemp("dask-build")
    plain, dask = root / "plain", root / "dask"
    started = time.monotonic()
    cluster = DASK | STORES | s3.env
    procs = {
        "plain": build({}, plain, small_raw_root),
        "dask": build(cluster, dask, small_raw_root),
    }
    killed: dict = {}
    killer = threading.Thread(target=_kill_mid_step, args=(dask, KILL_STEP, killed), daemon=True)
    killer.start()
    with ThreadPoolExecutor(2) as pool:
        dirs = {"plain": plain, "dask": dask}
        done = dict(zip(procs, pool.map(lambda k: finish(procs[k], dirs[k]), procs), strict=True))
    print(
        f"\nin-process build {done['plain']['seconds']} s, dask build {done['dask']['seconds']} s, "
        f"both side by side {time.monotonic() - started:.1f} s"
    )
    killer.join(timeout=5)
    return {"dirs": dirs, "tables": remote_tables(s3), "killed": killed, **done}


#: The step whose worker is killed mid-step (the longest of the small build: 3-17 s here, most
#: of it loading the image tower, so 0.5 s after its start it is still running).
KILL_STEP = "image_embeddings"
#: How long after the step's start the worker is killed.
KILL_AFTER_S = 0.5


def _kill_mid_step(data_dir: Path, step: str, out: dict, timeout: float = 300) -> None:
    """SIGKILL the Dask worker process that runs ``step``, ``KILL_AFTER_S`` after it started
    (the pid is in the step's STEP_START log line, as Dagster logs every event)."""
    pattern = re.compile(rf" - (\d+) - {re.escape(step)} - STEP_START - ")
    log = data_dir.parent / f"{data_dir.name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        if m:
            time.sleep(KILL_AFTER_S)
            out["pid"] = int(m.group(1))
            os.kill(out["pid"], signal.SIGKILL)
            return
        time.sleep(0.2)


def test_a_worker_killed_mid_step_had_its_step_rerun_on_a_live_worker(builds):
    """Dask noticed the dead worker and ran the task again: the build still succeeded (fixture),
    its outputs equal the local build's (test_tables_equal_the_in_process_build)."""
    victim = builds["killed"].get("pid")
    assert victim is not None, f"{KILL_STEP} never started"
    starts = re.findall(rf" - (\d+) - {KILL_STEP} - STEP_START - ", builds["dask"]["log"])
    assert len(starts) == 2 and int(starts[0]) == victim and int(starts[1]) != victim, starts


def test_the_dask_build_ran_its_steps_on_two_workers(builds):
    dask, plain = builds["dask"], builds["plain"]
    assert set(dask["step_pids"]) == set(plain["step_pids"])
    workers = set(dask["step_pids"].values())
    assert len(workers) >= 2 and dask["pid"] not in workers, workers
    assert set(plain["step_pids"].values()) == {plain["pid"]}
    # dask.sizeof measured every step's events without a warning.
    assert "Sizeof calculation" not in dask["log"]
    assert "daemonic processes are not allowed to have children" not in dask["log"]


#: What a run worker does with a run launched from the UI's "Materialize" button: rebuild the
#: implicit asset job from the code location's module (the module-level ``defs``, configured by
#: the environment) and execute it with the executor it carries.
UI_RUN = """
import io
import json
import os
import re
import signal
import threading
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

job = ReconstructableRepository.for_module("catret_pipeline.definitions", "defs")
job = job.get_reconstructable_job("__ASSET_JOB")
keys = [dg.AssetKey(k) for k in ("raw_products", "quarantine", "products", "category_tree")]
with dg.DagsterInstance.get() as instance:
    with dg.execute_job(job, instance=instance, asset_selection=keys) as result:
        pids = {e.step_key: e.pid for e in result.all_events if e.is_step_start}
        executor = job.get_definition().executor_def.name
        print(json.dumps({"success": result.success, "pid": os.getpid(), "step_pids": pids,
                          "executor": executor}))
"""


def test_a_run_launched_like_the_ui_runs_on_the_dask_cluster(tmp_path, small_raw_root):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**_env(small_raw_root), **DASK, "CATRET_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run(
        [sys.executable, "-c", UI_RUN],
        cwd=REPO,
        env=env | {"DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["success"]
    assert {"ingest_raw", "products", "category_tree"} <= set(summary["step_pids"])
    # Dask workers, not the run worker (the subprocess) itself.
    assert summary["pid"] not in summary["step_pids"].values()
    assert summary["executor"] == "dask"


def test_catret_materialize_runs_on_the_dask_cluster(tmp_path, small_raw_root):
    import dagster as dg

    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "materialize", "--data-dir", str(data)]
    proc = subprocess.Popen(
        [*cmd, "--executor", "dask", "--select", "+key:products or key:catret_duckdb"],
        cwd=REPO,
        env=_env(small_raw_root) | {"CATRET_MAX_CONCURRENT": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    assert "DuckDB catalogue at" in out
    with dg.DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        (run,) = instance.get_runs()
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
    pids = {e.dagster_event.step_key: e.dagster_event.pid for e in starts}
    assert set(pids) == {"ingest_raw", "products", "catret_duckdb"}
    assert proc.pid not in pids.values()  # Dask workers, not the CLI process


def _normalised(df: pl.DataFrame, root: Path | str) -> pl.DataFrame:
    # Absolute paths into the data dir or store (the report table lists them) name the root.
    return df.with_columns(
        pl.col(c).str.replace_all(str(root), "<data>", literal=True)
        for c, t in df.schema.items()
        if t == pl.String
    )


def _vector_columns(df: pl.DataFrame) -> list[str]:
    return [
        c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Array)) and t.inner.is_float()
    ]


def test_tables_equal_the_in_process_build(builds):
    plain, remote = builds["dirs"]["plain"] / "assets", builds["tables"]
    names = sorted(p.relative_to(plain).as_posix() for p in plain.rglob("*.parquet"))
    assert names == sorted(remote)
    assert len(names) > 20
    worst: dict[str, float] = {}
    for name in names:
        table = name.removesuffix(".parquet")
        drop = PROVENANCE.get(table, set())
        want = _normalised(pl.read_parquet(plain / name).drop(drop), plain.parent)
        got = _normalised(remote[name].drop(drop), f"s3://{BUCKET}/data")
        vectors = _vector_columns(want)
        differ = [c for c in want.columns if c not in vectors and not got[c].equals(want[c])]
        assert not differ, (table, {c: (want[c].to_list(), got[c].to_list()) for c in differ})
        for column in vectors:
            a = np.array(want[column].to_list(), dtype=np.float64)
            b = np.array(got[column].to_list(), dtype=np.float64)
            np.testing.assert_allclose(b, a, atol=VECTOR_ATOL, rtol=0, err_msg=f"{table}.{column}")
            worst[f"{table}.{column}"] = float(np.abs(b - a).max()) if a.size else 0.0
    print("\nlargest vector differences:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert len(worst) >= 5


def test_workers_shared_nothing_but_the_store(builds, s3):
    """The binaries of the local build, key for key, are on the store, and the cluster build
    wrote nothing to its data dir but DuckDB's own file and the Dagster instance."""
    plain = builds["dirs"]["plain"]
    local_keys = sorted(
        p.relative_to(plain).as_posix()
        for p in plain.rglob("*")
        if p.is_file()
        and p.relative_to(plain).parts[0] not in ("assets", "dagster_home")
        and p.name != "catret.duckdb"
    )
    prefix = f"{BUCKET}/data/"
    keys = sorted(k.removeprefix(prefix) for k in s3.filesystem().find(prefix))
    assert keys == local_keys
    assert {k.split("/")[0] for k in keys} >= {"indexes", "models", "image_cache", "reports"}
    assert sorted(p.name for p in builds["dirs"]["dask"].iterdir()) == [
        "catret.duckdb",
        "dagster_home",
    ]


def _config(raw_root: Path, data_dir: Path, extra: dict[str, str]):
    from catret_pipeline.config import CatretConfig

    return CatretConfig.from_env(_env(raw_root) | {"CATRET_DATA_DIR": str(data_dir)} | extra)


def test_a_fresh_machine_reuses_the_store_and_answers_like_the_local_build(
    builds, s3, small_raw_root, tmp_path, monkeypatch
):
    """A build on an empty data dir (another machine) against the same store finds every head
    and index there and reuses them; search and serving then read indexes, heads and images
    from the store and answer as the local build does."""
    from catret_pipeline.search.engine import search
    from catret_pipeline.serving.images import resolve_image
    from catret_pipeline.serving.snapshot import load_snapshot
    from catret_pipeline.serving.store import search as serving_search

    again = finish(build(STORES | s3.env, tmp_path / "data", small_raw_root), tmp_path / "data")
    assert again["success"]
    tables = remote_tables(s3)
    trained = tables["fusion_models.parquet"].filter(pl.col("status") != "skipped")
    assert trained.height and set(trained["status"]) == {"reused"}
    built = tables["hnsw_indexes.parquet"].filter(pl.col("action").is_not_null())
    assert built.height and set(built["action"]) == {"unchanged"}

    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    query = tables["category_tree.parquet"].sort("node_id")["name"][-1]
    answers = {}
    for label, cfg in (
        ("local", _config(small_raw_root, builds["dirs"]["plain"], {})),
        ("store", _config(small_raw_root, tmp_path / "data", STORES)),
    ):
        hits = search(cfg.data_dir, query, model="clip-ita", setting="specific", config=cfg)
        snap = load_snapshot(cfg)
        served = serving_search(snap, query)
        image = next(h.image_path for h in served.hits if h.image_path)
        path, _ = resolve_image(snap, image)
        answers[label] = [h.asin for h in hits], [h.asin for h in served.hits], path.read_bytes()
    assert answers["store"] == answers["local"]
