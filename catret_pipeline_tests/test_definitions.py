"""The definitions load, and the webserver serves the asset graph over GraphQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from catret_pipeline import config as catret_config
from catret_pipeline.definitions import build_definitions, defs
from catret_pipeline_tests.support import REPO

EXPECTED_ASSETS = {
    "raw_products",
    "quarantine",
    "products",
    "category_tree",
    "product_splits",
    "evaluation_pairs",
    "product_images",
    "image_embeddings",
    "title_embeddings",
    "attribute_embeddings",
    "category_embeddings",
    "fusion_models",
    "fused_representations",
    "hnsw_indexes",
    "hybrid_weights",
    "hybrid_runs",
    "retrieval_runs",
    "metrics",
    "baseline_margins",
    "report",
    "catret_duckdb",
}


def test_definitions_validate_loadable():
    dg.Definitions.validate_loadable(defs)


def test_expected_assets_and_jobs_present(tmp_path):
    d = build_definitions(data_dir=str(tmp_path))
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS
    assert d.resolve_job_def("catret_build") is not None


def test_importing_definitions_does_not_import_torch():
    code = "import sys, catret_pipeline.definitions; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_webserver_serves_asset_graph(tmp_path):
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), DAGSTER_DISABLE_TELEMETRY="1")
    env[catret_config.ENV_DATA_DIR] = str(tmp_path / "data")
    (tmp_path / "home").mkdir()
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        keys: set[str] = set()
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, "{ assetNodes { assetKey { path } } }")
                keys = {"/".join(n["assetKey"]["path"]) for n in data["data"]["assetNodes"]}
                if keys:
                    break
            except OSError:
                pass
            assert proc.poll() is None, "webserver exited early"
            time.sleep(1)
        assert keys >= EXPECTED_ASSETS
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_refresh_schedule_targets_the_build_job(monkeypatch, tmp_path):
    monkeypatch.setenv("CATRET_REFRESH_CRON", "15 4 * * *")
    d = build_definitions(data_dir=str(tmp_path))
    schedule = d.resolve_schedule_def("catalogue_refresh")
    assert schedule.cron_schedule == "15 4 * * *"
    assert schedule.job_name == "catret_build"
    assert schedule.tags["catret/refresh"] == "true"


def test_default_graph_has_no_shard_assets(tmp_path, monkeypatch):
    monkeypatch.delenv("CATRET_EMBED_SHARDS", raising=False)
    keys = build_definitions(data_dir=str(tmp_path)).resolve_asset_graph().get_all_asset_keys()
    explicit = build_definitions(data_dir=str(tmp_path), shards=1).resolve_asset_graph()
    assert keys == explicit.get_all_asset_keys()
    assert not [k for k in keys if k.path[0] == "embedding_shards"]


def test_sharded_graph_merges_shards_under_the_original_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("CATRET_EMBED_SHARDS", "3")
    d = build_definitions(data_dir=str(tmp_path))
    dg.Definitions.validate_loadable(d)
    graph = d.resolve_asset_graph()
    for name in ("image_embeddings", "title_embeddings", "title_clip_embeddings"):
        shards = {dg.AssetKey(["embedding_shards", name, f"shard_{i}_of_3"]) for i in range(3)}
        assert shards <= graph.get(dg.AssetKey(name)).parent_keys
        assert all(graph.get(k).group_name == "embedding_shards" for k in shards)
    assert dg.AssetKey("category_embeddings") in graph.get_all_asset_keys()
    sharded = {k.path[1] for k in graph.get_all_asset_keys() if k.path[0] == "embedding_shards"}
    assert sharded == {
        "image_embeddings",
        "title_embeddings",
        "title_clip_embeddings",
        "attribute_embeddings",
    }
    # downstream still reads the merged table; the DuckDB catalogue has no shard views
    assert dg.AssetKey("image_embeddings") in graph.get(dg.AssetKey("fusion_models")).parent_keys
    catalog_parents = graph.get(dg.AssetKey("catret_duckdb")).parent_keys
    assert not [k for k in catalog_parents if k.path[0] == "embedding_shards"]


def test_executor_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("CATRET_EXECUTOR", raising=False)
    default = build_definitions(data_dir=str(tmp_path)).resolve_job_def("catret_build")
    assert default.executor_def.name == dg.multi_or_in_process_executor.name
    job = build_definitions(data_dir=str(tmp_path), executor="in_process").resolve_job_def(
        "catret_build"
    )
    assert job.executor_def.name == "in_process"
    monkeypatch.setenv("CATRET_EXECUTOR", "multiprocess")
    monkeypatch.setenv("CATRET_MAX_CONCURRENT", "3")
    job = build_definitions(data_dir=str(tmp_path)).resolve_job_def("catret_build")
    assert job.executor_def.name == "multiprocess"
    with pytest.raises(ValueError, match="executor must be one of"):
        build_definitions(data_dir=str(tmp_path), executor="celery")


def test_build_job_rebuilds_from_the_given_environment(tmp_path, monkeypatch):
    from catret_pipeline.definitions import catret_build_job

    # catret_build_job rewrites CATRET_* in os.environ (it runs in a throwaway step process)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    os.environ["CATRET_EMBED_SHARDS"] = "5"  # replaced, as in a forkserver child
    job = catret_build_job({"CATRET_DATA_DIR": str(tmp_path), "CATRET_EMBED_SHARDS": "2"})
    keys = {k.to_user_string() for k in job.asset_layer.asset_graph.get_all_asset_keys()}
    assert "embedding_shards/title_embeddings/shard_1_of_2" in keys
    assert not [k for k in keys if k.endswith("_of_5")]


def test_decode_workers_reach_the_clip_resource(tmp_path, monkeypatch):
    from catret_pipeline.definitions import build_resources

    monkeypatch.delenv("CATRET_CLIP_DECODE_WORKERS", raising=False)
    assert build_resources(str(tmp_path))["clip"].decode_workers == 1
    monkeypatch.setenv("CATRET_CLIP_DECODE_WORKERS", "6")
    assert build_resources(str(tmp_path))["clip"].decode_workers == 6
    monkeypatch.setenv("CATRET_CLIP_DECODE_PROCESSES", "4")
    assert build_resources(str(tmp_path))["clip"].decode_processes == 4
    monkeypatch.setenv("CATRET_CLIP_DECODE_WORKERS", "0")
    with pytest.raises(ValueError, match="CATRET_CLIP_DECODE_WORKERS"):
        build_resources(str(tmp_path))
