"""SIGKILL a build at every writing step of the graph in turn; the resumed data dir equals a clean one.

The driver (fault_injection_driver.py) runs in real subprocesses: an uninterrupted reference
build in one data dir and, beside it, the kill chain in another (kill in the first step not killed
yet, right after its first file landed; resume; repeat until a run ends by itself). Then every
table, model, index, image and report is compared. Only provenance may differ: wall-clock
seconds, the data dir's own path, and why an index was kept or rebuilt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from catret_pipeline.sample.generator import generate_sample
from catret_pipeline_tests.support import REPO, TEST_ENV

pytestmark = pytest.mark.slow

N_PRODUCTS = 150
#: Columns that record how a run went rather than what it produced.
PROVENANCE = {
    "fusion_models": {"seconds"},
    # A resumed index step can find the index already saved by the killed run: it keeps it
    # ("unchanged") where the clean run built it; the index files themselves must be equal.
    "hnsw_indexes": {"build_seconds", "action", "reason", "n_added", "n_removed", "n_changed"},
    "serving_indexes": {"build_seconds", "action", "reason", "n_added", "n_removed", "n_changed"},
}
#: Keys of the head sidecars (models/<model>/<setting>.json) that are timings.
TIMING_KEYS = {"seconds", "train_seconds"}
#: Steps the kill chain must reach: the whole graph, not only the embeddings.
MUST_KILL = {
    "ingest_raw",
    "products",
    "product_images",
    "attribute_embeddings",
    "image_embeddings",
    "fusion_models",
    "fused_representations",
    "hnsw_indexes",
    "retrieval_runs",
    "metrics",
    "report",
    "category_rankings",
    "catret_duckdb",
}


def _env(sample: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    return (
        env
        | TEST_ENV
        | {
            "CATRET_IMAGE_MIRROR": str(sample / "images"),
            "HF_HUB_OFFLINE": "1",
            # The same single thread in every process keeps float reductions, hence outputs, equal.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )


def _driver(data: Path, raw: Path, mode: str, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "catret_pipeline_tests.integration.fault_injection_driver"]
    log = open(data.parent / f"{data.name}.log", "wb")  # noqa: SIM115 - closed in _summary
    proc = subprocess.Popen(
        [*cmd, str(data), str(raw), mode], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log
    )
    proc.log = log
    return proc


def _summary(proc: subprocess.Popen, data: Path) -> dict:
    out, _ = proc.communicate(timeout=900)
    proc.log.close()
    err = (data.parent / f"{data.name}.log").read_text(errors="replace")
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def _normalised(df: pl.DataFrame, root: Path) -> pl.DataFrame:
    # Absolute paths into the data dir (the report and catalogue tables list them) name the dir.
    return df.with_columns(
        pl.col(c).str.replace_all(str(root), "<data>", literal=True)
        for c, t in df.schema.items()
        if t == pl.String
    )


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults")
    sample = root / "sample"
    generate_sample(sample, n_products=N_PRODUCTS)
    env = _env(sample)
    clean, crashed = root / "clean", root / "crashed"
    # Side by side: one thread each, two cores.
    reference = _driver(clean, sample / "xmarket", "reference", env)
    chain = _driver(crashed, sample / "xmarket", "chain", env)
    return {
        "clean": clean,
        "crashed": crashed,
        "chain": _summary(chain, crashed),
        "reference": _summary(reference, clean),
    }


def test_every_writing_step_was_killed_once_and_the_chain_finished(runs):
    ref, chain = runs["reference"], runs["chain"]
    assert ref["code"] == 0
    assert "error" not in chain, chain.get("error")
    assert chain["final_code"] == 0
    targets = [k["target"] for k in chain["kills"]]
    assert len(targets) == len(set(targets)), "a step was killed twice"
    assert "?" not in targets and "?" not in ref["steps"], "a file was written outside any step"
    # Every step that writes in an uninterrupted build was killed mid-write once.
    assert set(targets) == set(ref["steps"])
    assert set(targets) >= MUST_KILL


def test_resumed_tables_equal_the_uninterrupted_build(runs):
    clean, crashed = runs["clean"], runs["crashed"]
    tables = sorted(p.name for p in (clean / "assets").glob("*.parquet"))
    assert tables == sorted(p.name for p in (crashed / "assets").glob("*.parquet"))
    assert len(tables) >= len(MUST_KILL)
    for name in tables:
        table = name.removesuffix(".parquet")
        drop = PROVENANCE.get(table, set())
        want = _normalised(pl.read_parquet(clean / "assets" / name).drop(drop), clean)
        got = _normalised(pl.read_parquet(crashed / "assets" / name).drop(drop), crashed)
        assert got.equals(want), f"{table} differs after the kill chain"


def test_resumed_binaries_equal_the_uninterrupted_build(runs):
    clean, crashed = runs["clean"], runs["crashed"]
    want, got = _files(clean), _files(crashed)
    # No temporary survives (the next run sweeps the killed runs'), nothing is missing or extra.
    assert got == want
    assert not [f for f in got if Path(f).name.startswith(".") and f.endswith(".tmp")]
    compared = 0
    for rel in sorted(want):
        if rel.startswith("assets/"):
            continue  # compared as tables above
        a, b = clean / rel, crashed / rel
        if rel.startswith("models/") and rel.endswith(".json"):
            assert _without_timings(json.loads(b.read_text())) == _without_timings(
                json.loads(a.read_text())
            ), rel
        else:
            assert b.read_bytes() == a.read_bytes(), rel
        compared += 1
    kinds = {rel.split("/")[0] for rel in want}
    assert {"models", "indexes", "image_cache", "reports"} <= kinds
    assert compared > 100
