"""The whole build with every table and binary artefact on ``s3://`` (a moto S3 server on
127.0.0.1) gives the local build's outputs, and leaves only the DuckDB catalogue in the data dir."""

from __future__ import annotations

import io
import os
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from catret_pipeline.config import CatretConfig
from catret_pipeline.definitions import build_definitions
from catret_pipeline.fusion.assets import FusionModelsConfig
from catret_pipeline.sample.generator import generate_sample
from catret_pipeline.search.engine import search
from catret_pipeline.serving.images import resolve_image
from catret_pipeline.serving.snapshot import load_snapshot
from catret_pipeline.serving.store import search as serving_search
from catret_pipeline_tests.object_store import s3_server
from catret_pipeline_tests.support import TEST_ENV

pytestmark = pytest.mark.slow

N_PRODUCTS = 60
#: Columns that record how a run went (timings), not what it produced.
TIMINGS = {"seconds", "train_seconds", "build_seconds", "encode_seconds", "rate"}
#: Columns that name where a file was written: the data dir or the store's URL.
LOCATIONS = {
    "report.parquet": {"path"},
    # Views over the local files; copies of remote tables (DuckDB reads no s3fs store).
    "catret_duckdb.parquet": {"parquet", "kind"},
}
FUSION = FusionModelsConfig(epochs=2, min_steps=0, proj_dim=32, hidden_dims=[64], workers=1)


def config(root: Path, sample: Path, extra: dict[str, str]) -> CatretConfig:
    """The settings of a build of ``sample`` into ``root / 'data'``, plus ``extra``."""
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
        | TEST_ENV
        | {
            "CATRET_DATA_DIR": str(root / "data"),
            "CATRET_RAW_ROOT": str(sample / "xmarket"),
            "CATRET_IMAGE_MIRROR": str(sample / "images"),
        }
        | extra
    )
    return CatretConfig.from_env(env)


def build(root: Path, sample: Path, extra: dict[str, str]) -> dg.ExecuteInProcessResult:
    """The build job of ``sample`` into ``root / 'data'`` with ``extra`` settings."""
    defs = build_definitions(config=config(root, sample, extra))
    return defs.resolve_job_def("catret_build").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config=dg.RunConfig(ops={"fusion_models": FUSION}),
        raise_on_error=False,
    )


def _local_tables(assets: Path) -> dict[str, pl.DataFrame]:
    return {p.relative_to(assets).as_posix(): pl.read_parquet(p) for p in assets.rglob("*.parquet")}


def _remote_tables(fs, prefix: str) -> dict[str, pl.DataFrame]:
    out = {}
    for key in fs.find(prefix):
        if key.endswith(".parquet"):
            with fs.open(key, "rb") as fh:
                out[key[len(prefix) + 1 :]] = pl.read_parquet(io.BytesIO(fh.read()))
    return out


def assert_same_outputs(local: dict[str, pl.DataFrame], remote: dict[str, pl.DataFrame]) -> None:
    assert sorted(remote) == sorted(local)
    for name, want in local.items():
        got = remote[name]
        skip = TIMINGS | LOCATIONS.get(name, set())
        keep = [c for c in want.columns if c not in skip]
        assert got.columns == want.columns, name
        vectors = [c for c in keep if isinstance(want.schema[c], pl.Array | pl.List)]
        plain = [c for c in keep if c not in vectors]
        assert got.select(plain).equals(want.select(plain)), name
        for c in vectors:
            if want.schema[c].inner in (pl.Float32, pl.Float64):
                np.testing.assert_allclose(
                    np.asarray(got[c].to_list(), dtype=np.float64),
                    np.asarray(want[c].to_list(), dtype=np.float64),
                    atol=1e-5,
                    err_msg=f"{name}.{c}",
                )
            else:
                assert got[c].equals(want[c]), f"{name}.{c}"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("object-store-sample")
    return generate_sample(
        root / "sample", n_products=N_PRODUCTS, image_size=16, broken_lines=False
    ).out_dir


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, sample) -> Path:
    root = tmp_path_factory.mktemp("local")
    assert build(root, sample, {}).success
    return root / "data"


def test_every_artefact_on_s3_gives_the_local_outputs(tmp_path, sample, local_build, monkeypatch):
    with s3_server() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        bucket = s3.bucket("catret")
        store = {
            "CATRET_TABLE_STORE": f"{bucket}/assets",
            "CATRET_ARTEFACT_STORE": f"{bucket}/data",
        }
        result = build(tmp_path, sample, store)
        assert result.success
        fs = s3.filesystem()
        remote = _remote_tables(fs, "catret/assets")
        keys = [k[len("catret/data/") :] for k in fs.find("catret/data")]
        # Unchanged data, second run: every head and index is found on the store and reused.
        assert build(tmp_path, sample, store).success
        again = _remote_tables(fs, "catret/assets")
        # Search and serving read the same store: the local build's answers, and its images.
        name = remote["category_tree.parquet"].sort("node_id")["name"][-1]
        answers = {}
        for label, cfg in (
            ("local", config(local_build.parent, sample, {})),
            ("s3", config(tmp_path, sample, store)),
        ):
            hits = search(cfg.data_dir, name, model="clip-ita", setting="specific", config=cfg)
            snap = load_snapshot(cfg)
            served = serving_search(snap, name)
            image = next(h.image_path for h in served.hits if h.image_path)
            path, _ = resolve_image(snap, image)
            answers[label] = (
                [h.asin for h in hits],
                [h.asin for h in served.hits],
                path.read_bytes(),
            )
        assert answers["s3"] == answers["local"]

    assert_same_outputs(_local_tables(local_build / "assets"), remote)
    trained = again["fusion_models.parquet"].filter(pl.col("status") != "skipped")
    assert trained.height and set(trained["status"]) == {"reused"}
    built = again["hnsw_indexes.parquet"].filter(pl.col("action").is_not_null())
    assert built.height and set(built["action"]) == {"unchanged"}
    images = again["product_images.parquet"]
    assert images.equals(remote["product_images.parquet"])
    # The binaries of the local build, key for key (checkpoints are removed once complete).
    local_keys = sorted(
        p.relative_to(local_build).as_posix()
        for p in local_build.rglob("*")
        if p.is_file() and p.parts[len(local_build.parts)] != "assets" and p.name != "catret.duckdb"
    )
    assert sorted(keys) == local_keys
    assert {k.split("/")[0] for k in keys} >= {"indexes", "models", "image_cache", "reports"}
    # Nothing but DuckDB's own file is written to the data dir.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["catret.duckdb"]
