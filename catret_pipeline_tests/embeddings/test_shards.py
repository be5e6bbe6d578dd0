"""Hash-sharded embedding steps: the assignment, the merge, and the whole thing equal to unsharded.

Fast tests cover the shard assignment (stable, a partition of the keys), ``merge_shards`` and
the sharded assets in-process on a tiny fixture catalogue. The slow acceptance test builds a
generated sample twice: unsharded in-process, and with 3 shards under the multiprocess executor
(``dg.execute_job`` on a reconstructable job, a persistent instance; the indexes then built by one
step per vector model), then compares every embedding table and the fusion / index / ranked-list
outputs downstream of them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from catret_pipeline import config as catret_config
from catret_pipeline.cli.environment import flag_values
from catret_pipeline.cli.main import build_parser
from catret_pipeline.definitions import build_definitions, reconstructable_build_job
from catret_pipeline.embeddings.assets import build_assets
from catret_pipeline.embeddings.config import EmbeddingConfig
from catret_pipeline.embeddings.encoding import Encoded
from catret_pipeline.embeddings.product_assets import PRODUCT_EMBEDDINGS
from catret_pipeline.embeddings.runner import EmbeddingJob, run_incremental
from catret_pipeline.embeddings.shard_assets import shard_key
from catret_pipeline.embeddings.sharding import (
    SHARD_GROUP,
    merge_shards,
    shard_ids,
    shard_mask,
    shard_of,
)
from catret_pipeline.encoders.openclip import TINY_MODEL
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.retrieval.hnsw_store import read_index_meta
from catret_pipeline.retrieval.index_assets import INDEX_SHARD_GROUP, index_models
from catret_pipeline.retrieval.vectors import BM25_MODEL, ZERO_SHOT_MODELS
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.duckdb_catalog import view_sources
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.vectors_math import embedding_matrix
from catret_pipeline_tests.embeddings.test_assets import write_tree
from catret_pipeline_tests.support import TEST_ENV

PRODUCT_ASSETS = [spec.name for spec in PRODUCT_EMBEDDINGS]
ALL_EMBEDDINGS = [*PRODUCT_ASSETS, "category_embeddings", "category_clip_embeddings"]

# ---- the assignment ---------------------------------------------------------------------------


def test_shard_of_is_pinned():
    # Fixed values: a change of hash would silently re-home every row (and re-encode it).
    keys = ["B000000001", "B07XJ8C8F5", "A1", ""]
    assert [shard_of(k, 4) for k in keys] == [3, 1, 3, 1]
    assert [shard_of(k, 3) for k in keys] == [2, 1, 0, 2]
    assert [shard_of(k, 256) for k in keys] == [3, 5, 223, 13]
    assert shard_of("anything", 1) == 0


def test_shard_assignment_does_not_depend_on_the_process():
    keys = [f"B{i:09d}" for i in range(200)]
    here = shard_ids(pl.Series(keys), 7).tolist()
    code = (
        "import json, sys; from catret_pipeline.embeddings.sharding import shard_ids; "
        "print(json.dumps(shard_ids(json.loads(sys.stdin.read()), 7).tolist()))"
    )
    import json

    for seed in ("1", "2"):  # Python's str hash() would change with the seed; ours must not
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(keys),
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        assert json.loads(out.stdout) == here
    assert len(set(here)) == 7  # 200 keys reach every one of 7 shards


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.text(min_size=0, max_size=12), unique=True, max_size=60),
    shards=st.integers(min_value=1, max_value=9),
)
def test_shards_partition_the_keys(keys, shards):
    series = pl.Series("asin", keys, dtype=pl.String)
    masks = np.stack([shard_mask(series, i, shards).to_numpy() for i in range(shards)])
    assert masks.shape == (shards, len(keys))
    # every key in exactly one shard, the one shard_of names
    assert (masks.sum(axis=0) == 1).all()
    ids = shard_ids(series, shards)
    assert ids.tolist() == [shard_of(k, shards) for k in keys]
    assert all(masks[ids[j], j] for j in range(len(keys)))


def test_bad_shard_arguments_are_refused():
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_of("a", 0)
    with pytest.raises(ValueError, match="shard must be in"):
        shard_mask(pl.Series(["a"]), 3, 3)
    with pytest.raises(ValueError, match="shards must be >= 1"):
        build_assets(0)


# ---- the merge --------------------------------------------------------------------------------


def _fake_vectors(texts: list[str], dim: int = 6) -> np.ndarray:
    """Deterministic unit vectors from the text alone (batch-independent, no model)."""
    out = np.array(
        [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[: dim * 4], dtype=np.uint32)
            for t in texts
        ],
        dtype=np.float64,
    ).reshape(len(texts), dim)
    out = out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12)
    return out.astype(np.float32)


class _FakeEncoder:
    model_id, dim, extra = "fake", 6, ()

    def encode(self, rows: pl.DataFrame, progress) -> Encoded:
        # Row "T07" fails, like an undecodable image: absent from the table, reported.
        failed = {i: "corrupt" for i, a in enumerate(rows["asin"].to_list()) if a == "T07"}
        ok = rows.with_row_index("__i").filter(~pl.col("__i").is_in(list(failed))).drop("__i")
        vectors = _fake_vectors(ok["title"].to_list()).reshape(ok.height, 6)
        progress(rows.height, rows.height)
        return Encoded(ok, vectors, failed)


def _fixture_current(n: int = 40) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    order = rng.permutation(n)  # not sorted by asin: the merge must restore the input order
    titles = [f"title {i}" for i in order]
    return pl.DataFrame(
        {"asin": [f"T{i:02d}" for i in order], "title": titles, "content_hash": titles}
    )


def test_merged_shards_equal_the_unsharded_table(tmp_path):
    current = _fixture_current()
    log = dg.build_asset_context().log
    cfg = EmbeddingConfig(chunk_rows=5)
    storage = CatretStorage(data_dir=str(tmp_path))
    whole = run_incremental(
        log, storage, EmbeddingJob("t", current, ("asin",), _FakeEncoder()), cfg
    )
    parts, failed = [], 0
    for i in range(3):
        rows = current.filter(shard_mask(current["asin"], i, 3))
        job = EmbeddingJob(
            f"t/shard_{i}",
            rows,
            ("asin",),
            _FakeEncoder(),
            key_path=("shards", "t", f"shard_{i}"),
        )
        part = run_incremental(log, storage, job, cfg)
        assert set(part.table["asin"]) <= set(rows["asin"])
        parts.append(part.table)
        failed += part.metadata()["failed"].value
    merged, stale = merge_shards(parts, current.select("asin"), ["asin"])
    assert stale == 0
    assert merged.equals(whole.table)
    assert whole.table.height == current.height - 1
    assert failed == whole.failures.height == 1
    assert whole.failures.to_dicts() == [{"asin": "T07", "reason": "corrupt"}]
    assert all(p.height for p in parts)  # 40 keys: no shard empty, so this really merged three


def test_merge_shards_orders_drops_stale_and_refuses_overlaps():
    order = pl.DataFrame({"asin": ["c", "a", "b"]})
    s0 = pl.DataFrame({"asin": ["a", "zz"], "v": [1, 9]})  # "zz" no longer in the input
    s1 = pl.DataFrame({"asin": ["b", "c"], "v": [2, 3]})
    merged, stale = merge_shards([s0, s1], order, ["asin"])
    assert merged["asin"].to_list() == ["c", "a", "b"] and merged["v"].to_list() == [3, 1, 2]
    assert stale == 1
    empty, stale = merge_shards([s0.clear(), s1.clear()], order, ["asin"])
    assert empty.height == 0 and empty.schema == s0.schema and stale == 0
    with pytest.raises(ValueError, match="share a key across shards"):
        merge_shards([s0, s0], order, ["asin"])


# ---- sharded assets in-process on a fixture catalogue ----------------------------------------

ASINS = [f"P{i:02d}" for i in range(12)]


def _write_catalogue(data: Path) -> None:
    attrs = {a: [f"Colour: c{i % 3}", f"Size: s{i % 4}"][: i % 3] for i, a in enumerate(ASINS)}
    titles = {a: f"product {i} {'shoe' if i % 2 else 'scarf'}" for i, a in enumerate(ASINS)}
    sha = lambda s: hashlib.sha1(s.encode()).hexdigest()  # noqa: E731
    products = pl.DataFrame(
        {
            "asin": ASINS,
            "title": [titles[a] for a in ASINS],
            "attributes": [attrs[a] for a in ASINS],
            "title_hash": [sha(titles[a]) for a in ASINS],
            "attributes_hash": [sha("\x1f".join(attrs[a])) for a in ASINS],
        },
        schema_overrides={"attributes": pl.List(pl.String)},
    )
    atomic_write_parquet(products, data / "assets" / "products.parquet")
    rows = []
    for i, asin in enumerate(ASINS):
        rel = f"image_cache/{i:02d}/{asin}.png"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype("uint8")).save(data / rel)
        status = "missing" if asin == "P03" else "ok"
        rows.append(
            {
                "asin": asin,
                "status": status,
                "cache_path": rel if status == "ok" else None,
                "sha256": hashlib.sha256((data / rel).read_bytes()).hexdigest(),
            }
        )
    (data / rows[5]["cache_path"]).write_bytes(b"not an image")  # P05: reported, not fatal
    atomic_write_parquet(pl.DataFrame(rows).reverse(), data / "assets" / "product_images.parquet")
    write_tree(data)


@pytest.fixture(scope="module")
def encoders():
    clip = OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", batch_size=4)
    text = TextEncoder(
        model_name_or_path="bundled:all-MiniLM-L6-v2", precision="fp32", batch_size=4
    )
    clip.model()
    text.model()
    return clip, text


def _materialize(
    data: Path, shards: int, encoders, only: list[str] | None = None
) -> dict[str, dict]:
    clip, text = encoders
    assets = build_assets(shards)
    upstream = [dg.AssetSpec(n) for n in ("products", "product_images", "category_tree")]
    result = dg.materialize(
        [*upstream, *assets],
        selection=only or [k for a in assets for k in a.keys],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data)),
            "storage": CatretStorage(data_dir=str(data)),
            "clip": clip,
            "text_encoder": text,
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = {}
    for name in only or ALL_EMBEDDINGS:
        mat = result.asset_materializations_for_node(name)[0]
        meta[name] = {k: v.value for k, v in mat.metadata.items()}
    return meta


def _table(data: Path, *key: str) -> pl.DataFrame:
    return pl.read_parquet(data / "assets" / Path(*key).with_suffix(".parquet"))


def _assert_tables_match(a: pl.DataFrame, b: pl.DataFrame, atol: float = 1e-5) -> None:
    assert a.schema == b.schema
    assert a.drop("embedding").equals(b.drop("embedding"))
    diff = np.abs(embedding_matrix(a["embedding"]) - embedding_matrix(b["embedding"]))
    assert diff.size == 0 or diff.max() <= atol, diff.max()


def test_sharded_assets_equal_unsharded_and_shard_count_changes_reuse(tmp_path, encoders):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    _write_catalogue(plain)
    _write_catalogue(sharded)
    ref = _materialize(plain, 1, encoders)
    got = _materialize(sharded, 3, encoders)
    for name in ALL_EMBEDDINGS:
        _assert_tables_match(_table(plain, name), _table(sharded, name))
    for name in PRODUCT_ASSETS:
        for field in ("encoded", "reused", "dropped", "failed"):
            assert got[name][field] == ref[name][field], (name, field)
        assert got[name]["shards"] == 3 and got[name]["stale_rows_left_out"] == 0
        shard_rows = [_table(sharded, *shard_key(name, i, 3).path) for i in range(3)]
        assert sum(t.height for t in shard_rows) == _table(sharded, name).height
        for i, t in enumerate(shard_rows):
            assert all(shard_of(a, 3) == i for a in t["asin"])
    assert ref["image_embeddings"]["failed"] == 1 and ref["image_embeddings"]["encoded"] == 10
    assert "P05" in got["image_embeddings"]["failures"]
    assert got["attribute_embeddings"]["without_attributes"] == 4
    # no DuckDB view for shard files: they sit two folders down
    views = view_sources(sharded / "assets")
    assert SHARD_GROUP not in views and set(PRODUCT_ASSETS) <= set(views)
    # The merge alone, on an instance that never saw the shard runs: the totals come from the
    # shard files it merges (their summaries), not from an event log.
    merged = _materialize(sharded, 3, encoders, only=["image_embeddings"])["image_embeddings"]
    for field in ("encoded", "reused", "dropped", "failed"):
        assert merged[field] == got["image_embeddings"][field], field
    assert merged["encoded"] == 10 and "P05" in merged["failures"]

    # 3 -> 2 shards: the new shards start from the merged table, nothing is re-encoded
    again = _materialize(sharded, 2, encoders)
    for name in PRODUCT_ASSETS:
        assert again[name]["encoded"] == 0, name
        _assert_tables_match(_table(plain, name), _table(sharded, name))
    # 2 -> 1: the unsharded asset reads the merged table as its own previous table
    back = _materialize(sharded, 1, encoders)
    for name in PRODUCT_ASSETS:
        assert back[name]["encoded"] == 0, name


# ---- settings, definitions, CLI flags ---------------------------------------------------------


def test_shards_and_executor_settings(monkeypatch):
    for name in ("CATRET_EMBED_SHARDS", "CATRET_EXECUTOR", "CATRET_MAX_CONCURRENT"):
        monkeypatch.delenv(name, raising=False)
    assert catret_config.CatretConfig.from_env().embed_shards == 1
    assert catret_config.CatretConfig.from_env().executor is None
    assert catret_config.CatretConfig.from_env().max_concurrent == 0
    monkeypatch.setenv("CATRET_EMBED_SHARDS", "0")
    with pytest.raises(ValueError, match="CATRET_EMBED_SHARDS must be >= 1"):
        catret_config.CatretConfig.from_env()
    monkeypatch.setenv("CATRET_EMBED_SHARDS", "four")
    with pytest.raises(ValueError, match="must be an integer"):
        catret_config.CatretConfig.from_env()
    # Every variable is checked at once: one bad value at a time.
    monkeypatch.delenv("CATRET_EMBED_SHARDS")
    monkeypatch.setenv("CATRET_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="CATRET_EXECUTOR"):
        catret_config.CatretConfig.from_env()
    monkeypatch.delenv("CATRET_EXECUTOR")
    monkeypatch.setenv("CATRET_START_METHOD", "fork")
    with pytest.raises(ValueError, match="CATRET_START_METHOD"):
        catret_config.CatretConfig.from_env()


def test_cli_flags_set_the_environment(monkeypatch):
    monkeypatch.delenv("CATRET_EMBED_SHARDS", raising=False)
    monkeypatch.delenv("CATRET_EXECUTOR", raising=False)
    args = build_parser().parse_args(["materialize", "--shards", "4", "--executor", "multiprocess"])
    values = flag_values(args)
    assert values["CATRET_EMBED_SHARDS"] == "4"
    assert values["CATRET_EXECUTOR"] == "multiprocess"
    config = catret_config.CatretConfig.from_env().overridden(values)
    assert (config.embed_shards, config.executor) == (4, "multiprocess")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["materialize", "--executor", "celery"])


# ---- acceptance: sharded multiprocess build == unsharded in-process build ----------------------

N_PRODUCTS = 100
SHARDS = 3
#: The product-level tables and everything up to the ranked lists (fusion heads trained on them).
TARGETS = ["title_clip_embeddings", "retrieval_runs"]
#: Scores may differ this much: fused vectors differ by ~2e-5 between the builds.
SCORE_ATOL = 1e-4
# Few epochs: the point is that the same inputs give the same heads, not a good model. One
# worker: the heads train in the step's own process, not in a pool spawned (and importing torch
# again) in each build; the pool is tested in fusion/test_train.py and workers/.
RUN_CONFIG = {"ops": {"fusion_models": {"config": {"epochs": 3, "min_steps": 0, "workers": 1}}}}


def _selection(defs: dg.Definitions) -> list[dg.AssetKey]:
    selection = dg.AssetSelection.assets(*TARGETS).upstream().required_multi_asset_neighbors()
    return sorted(selection.resolve(defs.resolve_asset_graph()))


def _step_spans(instance, run_id: str) -> dict[str, dict]:
    spans: dict[str, dict] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        span = spans.setdefault(event.step_key, {})
        if event.is_step_start:
            span["start"], span["pid"] = entry.timestamp, event.pid
        elif event.is_step_success:
            span["end"] = entry.timestamp
    return spans


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sharded_multiprocess_build_equals_unsharded_in_process(tmp_path, monkeypatch):
    from catret_pipeline.sample.generator import generate_sample

    sample = tmp_path / "sample"
    generate_sample(sample, n_products=N_PRODUCTS)
    for name in [n for n in os.environ if n.startswith("CATRET_")]:
        monkeypatch.delenv(name)
    # Back to the test encoders at fp32: bf16 (auto on some CPUs) gives batch-dependent vectors,
    # and shards batch differently from one process.
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CATRET_RAW_ROOT", str(sample / "xmarket"))
    monkeypatch.setenv("CATRET_IMAGE_MIRROR", str(sample / "images"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")

    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    monkeypatch.setenv("CATRET_DATA_DIR", str(plain))
    defs = build_definitions(shards=1, executor="in_process")
    job = defs.resolve_job_def("catret_build").get_subset(asset_selection=set(_selection(defs)))
    ref = job.execute_in_process(run_config=RUN_CONFIG, instance=dg.DagsterInstance.ephemeral())
    assert ref.success

    # The step processes rebuild the definitions from these variables.
    monkeypatch.setenv("CATRET_DATA_DIR", str(sharded))
    monkeypatch.setenv("CATRET_EMBED_SHARDS", str(SHARDS))
    monkeypatch.setenv("CATRET_EXECUTOR", "multiprocess")
    monkeypatch.setenv("CATRET_MAX_CONCURRENT", str(SHARDS))
    sharded_defs = build_definitions()
    keys = _selection(sharded_defs)
    shard_steps = {k.to_python_identifier() for k in keys if k.path[0] == SHARD_GROUP}
    assert len(shard_steps) == SHARDS * len(PRODUCT_ASSETS)
    index_steps = {k.to_python_identifier() for k in keys if k.path[0] == INDEX_SHARD_GROUP}
    assert len(index_steps) == len(index_models())
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        with dg.execute_job(
            reconstructable_build_job(),
            instance=instance,
            run_config=RUN_CONFIG,
            asset_selection=keys,
        ) as result:
            assert result.success
            run_id = result.run_id
            # the merge sums its shards' counts into what the unsharded asset reports
            for name in PRODUCT_ASSETS:
                want = ref.asset_materializations_for_node(name)[0].metadata
                got = result.asset_materializations_for_node(name)[0].metadata
                for field in ("encoded", "reused", "dropped", "failed"):
                    assert got[field].value == want[field].value, (name, field)
        spans = _step_spans(instance, run_id)

    # Every shard ran as its own step in its own process, and some of them at the same time.
    assert shard_steps <= set(spans) and index_steps <= set(spans)
    pids = {spans[s]["pid"] for s in shard_steps | index_steps}
    assert len(pids) == len(shard_steps | index_steps) and os.getpid() not in pids
    intervals = [(spans[s]["start"], spans[s]["end"]) for s in shard_steps]
    overlapping = sum(
        1
        for i, (a0, a1) in enumerate(intervals)
        for b0, b1 in intervals[i + 1 :]
        if a0 < b1 and b0 < a1
    )
    assert overlapping > 0, intervals

    for name in ALL_EMBEDDINGS:
        _assert_tables_match(_table(plain, name), _table(sharded, name))
    for name in PRODUCT_ASSETS:
        parts = [_table(sharded, *shard_key(name, i, SHARDS).path) for i in range(SHARDS)]
        assert sum(p.height for p in parts) == _table(plain, name).height

    # Downstream: the heads trained on either build embed everything alike, and the indexes agree.
    fused_a, fused_b = (
        _table(plain, "fused_representations"),
        _table(sharded, "fused_representations"),
    )
    _assert_tables_match(fused_a, fused_b, atol=1e-4)
    _assert_same_indexes(plain, sharded)
    _assert_same_runs(_table(plain, "retrieval_runs"), _table(sharded, "retrieval_runs"))
    models_a, models_b = _table(plain, "fusion_models"), _table(sharded, "fusion_models")
    assert models_a.select("model", "setting", "status").equals(
        models_b.select("model", "setting", "status")
    )
    np.testing.assert_allclose(
        models_a["val_loss_best"].to_numpy(), models_b["val_loss_best"].to_numpy(), rtol=1e-4
    )


def _assert_same_indexes(plain: Path, sharded: Path) -> None:
    """hnsw_indexes but for timing, and the label maps; the indexes of vectors that are
    bit-identical in both builds (zero-shot) are the same graph, byte for byte."""
    a, b = _table(plain, "hnsw_indexes"), _table(sharded, "hnsw_indexes")
    assert set(a["model"]) - set(ZERO_SHOT_MODELS), "no trained model: nothing fused compared"
    loose = ["recall_at_10"]  # measured on graphs built from vectors ~2e-5 apart
    assert a.drop("build_seconds", *loose).equals(b.drop("build_seconds", *loose))
    np.testing.assert_allclose(
        a["recall_at_10"].to_numpy(), b["recall_at_10"].to_numpy(), atol=0.02
    )
    for row in a.filter(pl.col("index_path").is_not_null()).iter_rows(named=True):
        path_a, path_b = plain / row["labels_path"], sharded / row["labels_path"]
        assert pl.read_parquet(path_a).equals(pl.read_parquet(path_b)), row["labels_path"]
        meta_a, meta_b = read_index_meta(path_a), read_index_meta(path_b)
        if row["model"] not in ZERO_SHOT_MODELS:
            meta_a.pop("index_sha256"), meta_b.pop("index_sha256")
        assert meta_a == meta_b, row["labels_path"]


def _assert_same_runs(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Baselines identical; fused models: the same lists, scores within SCORE_ATOL, and the same
    asin at every rank whose score is not within SCORE_ATOL of a neighbour's (not tied)."""
    exact = pl.col("model").is_in([BM25_MODEL, *ZERO_SHOT_MODELS])
    assert a.filter(exact).equals(b.filter(exact))
    keys = ["model", "setting", "query", "rank"]
    assert a.select(keys).equals(b.select(keys))
    assert a["search"].equals(b["search"])
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=SCORE_ATOL)
    lists = ["model", "setting", "query"]
    gap = pl.min_horizontal(
        (pl.col("score") - pl.col("score").shift(1).over(lists)).abs(),
        (pl.col("score") - pl.col("score").shift(-1).over(lists)).abs(),
    ).fill_null(float("inf"))
    clear = a.with_columns(gap.alias("gap"), b["asin"].alias("asin_b")).filter(
        pl.col("gap") > 2 * SCORE_ATOL
    )
    assert clear.height > 0.9 * a.height, (clear.height, a.height)
    moved = clear.filter(pl.col("asin") != pl.col("asin_b"))
    assert moved.is_empty(), moved
