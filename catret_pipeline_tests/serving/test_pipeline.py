"""``catret serve`` on a data dir built by the real pipeline (slow: one tiny Dagster build)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import polars as pl
import pytest

from catret_pipeline.serving.store import Store
from catret_pipeline_tests.search.test_search import TRAINED, _known, project  # noqa: F401 (fixture)
from catret_pipeline_tests.serving.conftest import http_get
from catret_pipeline_tests.support import query_encoders

pytestmark = pytest.mark.slow


def test_whole_catalogue_vectors_equal_the_pipelines(project):  # noqa: F811
    data, _ = project
    store = Store(data, interval=0)
    fused = pl.read_parquet(data / "assets" / "fused_representations.parquet")
    n_products = pl.read_parquet(data / "assets" / "products.parquet").height
    for setting, view in store.snapshot.settings.items():
        assert view.choice.model == TRAINED and view.choice.reason == "validation"
        assert view.index.n == n_products  # every product, not only the test split
        ref = fused.filter(
            (pl.col("model") == TRAINED)
            & (pl.col("setting") == setting)
            & (pl.col("kind") == "product")
        )
        pos = {a: i for i, a in enumerate(view.index.asins)}
        got = view.index.vectors[[pos[a] for a in ref["key"]]]
        want = ref["embedding"].to_numpy()
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_catret_serve_command_answers(project, tmp_path):  # noqa: F811
    data, pairs = project
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catret_pipeline.cli",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if http_get(f"{base}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "catret serve did not come up"
            time.sleep(0.5)
        name = _known(pairs, "all")
        r = http_get(f"{base}/api/search?q={urllib.parse.quote(name)}&k=30")
        assert r.status == 200
        body = r.json()
        assert body["model"] == TRAINED and body["query_source"] == "precomputed"
        test = set(pairs["asin"])
        assert any(h["asin"] not in test for h in body["hits"])
        url = next(h["image_url"] for h in body["hits"] if h["image_url"])
        img = http_get(base + url)
        assert img.headers["content-type"] in ("image/jpeg", "image/png")
        assert img.body[:3] == b"\xff\xd8\xff" or img.body[:4] == b"\x89PNG"
        assert http_get(base + "/").headers["content-type"].startswith("text/html")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_category_rankings_with_a_trained_head_are_the_servers_pages(project):  # noqa: F811
    import dagster as dg

    from catret_pipeline.delivery.assets import VECTOR_TABLES, category_rankings, serving_models
    from catret_pipeline.serving.store import category_page
    from catret_pipeline.storage.io_manager import ParquetIOManager
    from catret_pipeline.storage.resources import CatretStorage

    data, _ = project
    upstream = ("fusion_models", "evaluation_pairs", "category_tree", "products", "product_images")
    result = dg.materialize(
        [
            *(dg.AssetSpec(k) for k in (*upstream, *VECTOR_TABLES)),
            serving_models,
            category_rankings,
        ],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data)),
            "storage": CatretStorage(data_dir=str(data)),
            **query_encoders(),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    ranked = pl.read_parquet(data / "assets" / "category_rankings.parquet")
    assert set(ranked["model"]) == {TRAINED}
    snap = Store(data, interval=0).snapshot
    for setting, view in snap.settings.items():
        assert view.choice.model == TRAINED
        assert len(view.pages) == len(snap.nodes), setting
        node = snap.nodes[-1]
        assert category_page(snap, node, 10, setting).query_source == "category_rankings"
