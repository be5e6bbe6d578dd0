"""A materialisation SIGKILLed mid-embedding resumes from its checkpoints to the same table.

Runs ingest -> products -> attribute_embeddings in real subprocesses on a generated sample, with a
small ``chunk_rows`` so that encoding spans many checkpointed chunks; kills the first run as soon
as a checkpoint part exists, re-runs it, and compares with an uninterrupted run in another data dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from catret_pipeline.sample.generator import generate_sample
from catret_pipeline_tests.support import REPO, TEST_ENV

pytestmark = pytest.mark.slow

ASSET = "attribute_embeddings"
N_PRODUCTS = 80
# Full chunks are checkpointed; 4 rows per chunk gives ~20 chunks, a kill window of seconds.
CHUNK_ROWS = 4

DRIVER = """\
import json
import sys

import dagster as dg

from catret_pipeline.definitions import build_definitions

data_dir, raw_root, chunk_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
defs = build_definitions(data_dir, raw_root)
selection = dg.AssetSelection.assets("attribute_embeddings").upstream()
job = defs.resolve_job_def("catret_build").get_subset(
    asset_selection=selection.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
)
result = job.execute_in_process(
    run_config={"ops": {"attribute_embeddings": {"config": {"chunk_rows": chunk_rows}}}},
    instance=dg.DagsterInstance.ephemeral(),
    raise_on_error=False,
)
if not result.success:
    sys.exit("run failed")
mat = result.asset_materializations_for_node("attribute_embeddings")[0]
meta = {k: v.value for k, v in mat.metadata.items() if isinstance(v.value, (int, float, str))}
print("CATRET_META " + json.dumps(meta))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    sample = root / "sample"
    generate_sample(sample, n_products=N_PRODUCTS)
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    home = root / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    env |= TEST_ENV  # the fast test encoders (conftest.py)
    env |= {
        "CATRET_IMAGE_MIRROR": str(sample / "images"),
        "DAGSTER_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        # One thread each: the clean run overlaps the killed one, and the same thread count in
        # every process keeps the float reductions, hence the vectors, identical.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return {"root": root, "raw": sample / "xmarket", "driver": driver, "env": env}


def _start(setup: dict, data: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(setup["driver"]), str(data), str(setup["raw"]), str(CHUNK_ROWS)]
    with open(data.parent / f"{data.name}.log", "ab") as log:
        return subprocess.Popen(
            cmd, cwd=REPO, env=setup["env"], stdout=log, stderr=subprocess.STDOUT
        )


def _finish(proc: subprocess.Popen, data: Path, timeout: float = 300) -> dict:
    proc.wait(timeout=timeout)
    log = (data.parent / f"{data.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-4000:]
    line = next(x for x in reversed(log.splitlines()) if x.startswith("CATRET_META "))
    return json.loads(line.removeprefix("CATRET_META "))


def _parts(data: Path) -> list[Path]:
    return sorted((data / "checkpoints" / ASSET).glob("part-*.parquet"))


def test_sigkill_mid_embedding_then_rerun_resumes_to_identical_table(setup):
    crash, clean = setup["root"] / "crash", setup["root"] / "clean"
    crash.mkdir()
    clean.mkdir()
    final = crash / "assets" / f"{ASSET}.parquet"

    victim = _start(setup, crash)
    reference = _start(setup, clean)
    try:
        deadline = time.monotonic() + 300
        while not _parts(crash):
            assert victim.poll() is None, "the run ended before writing any checkpoint"
            assert time.monotonic() < deadline, "no checkpoint part appeared"
            time.sleep(0.01)
        assert not final.exists(), "asset finished before the kill could land"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == -signal.SIGKILL

    # The killed run left no table (there was no previous good one) and no half-written file.
    assert not final.exists()
    assert not list((crash / "assets").glob(f".{ASSET}.parquet*"))
    parts = _parts(crash)
    chunks = -(-N_PRODUCTS // CHUNK_ROWS)
    assert 1 <= len(parts) < chunks - 1, "the kill did not land mid-embedding"
    saved = [pl.read_parquet(p) for p in parts]  # every part is complete, valid Parquet
    for part in saved:
        assert part.height == CHUNK_ROWS
        assert part.schema["embedding"] == pl.Array(pl.Float32, 384)
        assert {"asin", "model_id", "content_hash", "has_attributes"} <= set(part.columns)
    checkpointed = pl.concat(saved)
    assert checkpointed["asin"].n_unique() == checkpointed.height

    resumed_meta = _finish(_start(setup, crash), crash)
    clean_meta = _finish(reference, clean)

    assert clean_meta["encoded"] == N_PRODUCTS and clean_meta["reused"] == 0
    assert resumed_meta["reused"] == checkpointed.height
    assert resumed_meta["encoded"] == N_PRODUCTS - checkpointed.height
    assert resumed_meta["encoded"] < N_PRODUCTS
    assert not (crash / "checkpoints" / ASSET).exists()

    resumed = pl.read_parquet(final)
    expected = pl.read_parquet(clean / "assets" / f"{ASSET}.parquet")
    assert resumed.height == N_PRODUCTS
    assert resumed.drop("embedding").equals(expected.drop("embedding"))
    np.testing.assert_allclose(
        np.stack(resumed["embedding"].to_numpy()),
        np.stack(expected["embedding"].to_numpy()),
        atol=1e-6,
        rtol=0,
    )
    # The reused rows are the checkpointed vectors themselves, not re-encodings.
    reused = resumed.join(checkpointed.select("asin", "embedding"), on="asin", suffix="_ckpt")
    assert reused.height == checkpointed.height
    np.testing.assert_array_equal(
        np.stack(reused["embedding"].to_numpy()), np.stack(reused["embedding_ckpt"].to_numpy())
    )
