"""The whole build on a 2-worker Dask cluster equals the same build in one process.

Both builds run the driver (dask_build_driver.py: ``catret materialize``'s ``execute_build``) in
a subprocess on the same small generated catalogue, side by side. :func:`build` takes the
variables of one build, so a test of another setting (an object-store ``CATRET_TABLE_STORE``,
say) passes them to both builds and compares the same way.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from catret_pipeline_tests.support import REPO, TEST_ENV

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: What differs between two correct builds: wall-clock seconds, and why an index was kept.
PROVENANCE = {
    "fusion_models": {"seconds"},
    "hnsw_indexes": {"build_seconds"},
    "serving_indexes": {"build_seconds"},
}
#: Vector columns are compared within this (the builds run in different processes).
VECTOR_ATOL = 1e-5
DASK = {"CATRET_EXECUTOR": "dask", "CATRET_MAX_CONCURRENT": "2"}


def build(env: dict[str, str], data_dir: Path, raw_root: Path) -> subprocess.Popen:
    """Start one build of ``raw_root`` into ``data_dir`` with ``env`` on top of the test
    environment (the tiny encoders, one thread per process); :func:`finish` waits for it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    full = (
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
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115 - closed in finish
    cmd = [sys.executable, "-m", "catret_pipeline_tests.integration.dask_build_driver"]
    proc = subprocess.Popen(
        [*cmd, str(data_dir)], cwd=REPO, env=full | env, stdout=subprocess.PIPE, stderr=log
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


@pytest.fixture(scope="module")
def builds(tmp_path_factory, small_raw_root) -> dict:
    root = tmp_path_factory.mktemp("dask-build")
    plain, dask = root / "plain", root / "dask"
    started = time.monotonic()
    procs = {"plain": build({}, plain, small_raw_root), "dask": build(DASK, dask, small_raw_root)}
    with ThreadPoolExecutor(2) as pool:
        dirs = {"plain": plain, "dask": dask}
        done = dict(zip(procs, pool.map(lambda k: finish(procs[k], dirs[k]), procs), strict=True))
    print(
        f"\nin-process build {done['plain']['seconds']} s, dask build {done['dask']['seconds']} s, "
        f"both side by side {time.monotonic() - started:.1f} s"
    )
    return {"dirs": dirs, **done}


def test_the_dask_build_ran_its_steps_on_two_workers(builds):
    dask, plain = builds["dask"], builds["plain"]
    assert set(dask["step_pids"]) == set(plain["step_pids"])
    workers = set(dask["step_pids"].values())
    assert len(workers) >= 2 and dask["pid"] not in workers, workers
    assert set(plain["step_pids"].values()) == {plain["pid"]}
    # dask.sizeof measured every step's events without a warning.
    assert "Sizeof calculation" not in dask["log"]
    assert "daemonic processes are not allowed to have children" not in dask["log"]


def _normalised(df: pl.DataFrame, root: Path) -> pl.DataFrame:
    # Absolute paths into the data dir (the report and catalogue tables list them) name the dir.
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
    plain, dask = builds["dirs"]["plain"] / "assets", builds["dirs"]["dask"] / "assets"
    names = sorted(p.relative_to(plain).as_posix() for p in plain.rglob("*.parquet"))
    assert names == sorted(p.relative_to(dask).as_posix() for p in dask.rglob("*.parquet"))
    assert len(names) > 20
    compared_vectors = 0
    for name in names:
        table = name.removesuffix(".parquet")
        drop = PROVENANCE.get(table, set())
        want = _normalised(pl.read_parquet(plain / name).drop(drop), plain.parent)
        got = _normalised(pl.read_parquet(dask / name).drop(drop), dask.parent)
        vectors = _vector_columns(want)
        assert got.drop(vectors).equals(want.drop(vectors)), f"{table} differs"
        for column in vectors:
            a = np.array(want[column].to_list(), dtype=np.float64)
            b = np.array(got[column].to_list(), dtype=np.float64)
            np.testing.assert_allclose(b, a, atol=VECTOR_ATOL, rtol=0, err_msg=f"{table}.{column}")
            compared_vectors += 1
    assert compared_vectors >= 5
