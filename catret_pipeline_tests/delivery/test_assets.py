"""serving_models, category_rankings and serving_indexes: pure ranking / fingerprint logic, then real materialize
on the serving tests' tiny data dir (text baseline; no trained head)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl

from catret_pipeline.delivery import rankings
from catret_pipeline.delivery.assets import (
    VECTOR_TABLES,
    category_rankings,
    serving_index_recall,
    serving_indexes,
    serving_models,
)
from catret_pipeline.fusion.schemas import FUSION_MODELS_SCHEMA
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.serving.tiny import write_catalogue
from catret_pipeline_tests.support import query_encoders, query_text_model

UPSTREAM = ("fusion_models", "evaluation_pairs", "category_tree", "products", "product_images")


def test_rank_nodes_is_exact_top_k_and_fingerprints_follow_inputs():
    rng = np.random.default_rng(0)
    asins = [f"A{i:03d}" for i in range(40)][::-1]
    labels, unit = rankings.unit_catalogue(asins, rng.normal(size=(40, 8)))
    assert list(labels) == sorted(asins)
    fp = rankings.catalogue_fingerprint(labels, unit)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    nodes = [(f"n{i}", f"name{i}", q[i], "x") for i in range(3)]
    df = rankings.rank_nodes("all", "m", labels, unit, nodes, 5, fp, chunk=2)
    assert df.height == 15
    for i in range(3):
        want = np.argsort(-(unit @ (q[i] / np.linalg.norm(q[i]))))[:5]
        assert df.filter(pl.col("node_id") == f"n{i}")["asin"].to_list() == labels[want].tolist()
    base = rankings.node_fingerprint("a", q[0], "m", 5, fp)
    assert base == rankings.node_fingerprint("a", q[0] + 1e-7, "m", 5, fp)
    assert base != rankings.node_fingerprint("b", q[0], "m", 5, fp)
    assert base != rankings.node_fingerprint("a", q[1], "m", 5, fp)
    assert base != rankings.node_fingerprint("a", q[0], "m2", 5, fp)
    assert base != rankings.node_fingerprint("a", q[0], "m", 6, fp)
    other = rankings.catalogue_fingerprint(labels, unit[::-1])
    assert base != rankings.node_fingerprint("a", q[0], "m", 5, other)


def _fusion(val: dict[str, float], test_note: str = "") -> pl.DataFrame:
    rows = [
        {
            "model": m,
            "setting": s,
            "status": "trained",
            "reason": test_note,
            "val_rprec_best": v,
            "val_loss_best": 1.0,
        }
        for m, v in val.items()
        for s in ("all", "general", "specific")
    ]
    return pl.DataFrame(rows, schema=FUSION_MODELS_SCHEMA)


def _run(data: str, select, run_config=None):
    specs = [dg.AssetSpec(k) for k in (*UPSTREAM, *VECTOR_TABLES)]
    return dg.materialize(
        [*specs, *select],
        resources={
            "io_manager": ParquetIOManager(data_dir=data),
            "storage": CatretStorage(data_dir=data),
            **query_encoders(),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config or {},
    )


def _meta(result, key: str) -> int:
    mats = result.asset_materializations_for_node("category_rankings")
    return mats[-1].metadata[key].value


def test_serving_models_chooses_on_validation_only(tmp_path):
    data = tmp_path / "data"
    write_catalogue(data)
    assets = data / "assets"
    atomic_write_parquet(
        _fusion({"clip-ita": 0.5, "clip-ita-res": 0.7}), assets / "fusion_models.parquet"
    )
    # A test-metrics table that says the other head is better: never read.
    metrics = pl.DataFrame({"model": ["clip-ita", "clip-ita-res"], "r_precision": [0.9, 0.1]})
    atomic_write_parquet(metrics, assets / "metrics.parquet")
    assert _run(str(data), [serving_models]).success
    got = pl.read_parquet(assets / "serving_models.parquet")
    assert set(got["model"]) == {"clip-ita-res"} and set(got["reason"]) == {"validation"}
    assert got["candidates"][0].to_list() == [
        {"model": "clip-ita", "val_r_precision": 0.5},
        {"model": "clip-ita-res", "val_r_precision": 0.7},
    ]
    metrics = metrics.with_columns(pl.Series("r_precision", [0.1, 0.9]))
    atomic_write_parquet(metrics, assets / "metrics.parquet")
    assert _run(str(data), [serving_models]).success
    assert set(pl.read_parquet(assets / "serving_models.parquet")["model"]) == {"clip-ita-res"}
    atomic_write_parquet(
        _fusion({"clip-ita": 0.8, "clip-ita-res": 0.7}), assets / "fusion_models.parquet"
    )
    assert _run(str(data), [serving_models]).success
    assert set(pl.read_parquet(assets / "serving_models.parquet")["model"]) == {"clip-ita"}
    cfg = {"ops": {"serving_models": {"config": {"override": "specific=clip-ita-res"}}}}
    assert _run(str(data), [serving_models], cfg).success
    got = pl.read_parquet(assets / "serving_models.parquet")
    assert dict(got.select("setting", "reason").rows())["specific"] == "override"


def test_category_rankings_cover_the_tree_and_reuse_unchanged_nodes(tmp_path):
    data = tmp_path / "data"
    write_catalogue(data)
    assets = data / "assets"
    # No head has a validation number: the text baseline serves (needs no artefact).
    atomic_write_parquet(_fusion({}), assets / "fusion_models.parquet")
    cfg = {"ops": {"category_rankings": {"config": {"k": 5}}}}
    first = _run(str(data), [serving_models, category_rankings], cfg)
    assert first.success
    df = pl.read_parquet(assets / "category_rankings.parquet")
    tree = pl.read_parquet(assets / "category_tree.parquet")
    pairs = pl.read_parquet(assets / "evaluation_pairs.parquet")
    settings = set(pairs["setting"])
    for s in settings:
        rows = df.filter(pl.col("setting") == s)
        assert set(rows["node_id"]) == set(tree["node_id"])
        assert rows.group_by("node_id").len()["len"].to_list() == [5] * tree.height
    test_asins = set(pairs.filter(pl.col("split") == "test")["asin"])
    assert set(df["asin"]) - test_asins, "only test-split products ranked"
    assert df["title"].null_count() == 0 and df["image_path"].null_count() < df.height
    n = tree.height
    assert _meta(first, "all.nodes_recomputed") == n and _meta(first, "all.nodes_reused") == 0

    second = _run(str(data), [dg.AssetSpec("serving_models"), category_rankings], cfg)
    assert _meta(second, "all.nodes_recomputed") == 0 and _meta(second, "all.nodes_reused") == n
    assert pl.read_parquet(assets / "category_rankings.parquet").equals(df)

    # Rename one node (tree and its query vector): only that node is ranked again.
    node = tree.filter(pl.col("name") == "Lamps")["node_id"][0]
    tree = tree.with_columns(
        pl.when(pl.col("node_id") == node).then(pl.lit("Lanterns")).otherwise("name").alias("name")
    )
    cats = pl.read_parquet(assets / "category_embeddings.parquet")
    vec = np.asarray(query_text_model(data).encode(["Lanterns"]), dtype=np.float32)[0]
    emb = [
        vec if i == node else e
        for i, e in zip(cats["node_id"], cats["embedding"].to_numpy(), strict=True)
    ]
    cats = cats.with_columns(
        pl.when(pl.col("node_id") == node).then(pl.lit("Lanterns")).otherwise("name").alias("name"),
        pl.Series("embedding", np.stack(emb), dtype=cats.schema["embedding"]),
    )
    atomic_write_parquet(cats, assets / "category_embeddings.parquet")
    atomic_write_parquet(tree, assets / "category_tree.parquet")
    third = _run(str(data), [dg.AssetSpec("serving_models"), category_rankings], cfg)
    assert _meta(third, "all.nodes_recomputed") == 1 and _meta(third, "all.nodes_reused") == n - 1
    got = pl.read_parquet(assets / "category_rankings.parquet")
    assert got.filter(pl.col("node_id") == node)["node_name"].unique().to_list() == ["Lanterns"]

    # A node added to the tree (a category created after training, no products yet): only it
    # is ranked, and its page comes from the whole catalogue.
    new = tree.filter(pl.col("node_id") == node).with_columns(
        pl.lit("n-new").alias("node_id"), pl.lit("Garden lights").alias("name")
    )
    tree = pl.concat([tree, new])
    vec = np.asarray(query_text_model(data).encode(["Garden lights"]), dtype=np.float32)
    added = cats.filter(pl.col("node_id") == node).with_columns(
        pl.lit("n-new").alias("node_id"),
        pl.lit("Garden lights").alias("name"),
        pl.Series("embedding", vec, dtype=cats.schema["embedding"]),
    )
    atomic_write_parquet(pl.concat([cats, added]), assets / "category_embeddings.parquet")
    atomic_write_parquet(tree, assets / "category_tree.parquet")
    fourth = _run(str(data), [dg.AssetSpec("serving_models"), category_rankings], cfg)
    assert _meta(fourth, "all.nodes_recomputed") == 1 and _meta(fourth, "all.nodes_reused") == n
    got = pl.read_parquet(assets / "category_rankings.parquet")
    page = got.filter((pl.col("node_id") == "n-new") & (pl.col("setting") == "all"))
    assert page.height == 5 and page["node_name"].unique().to_list() == ["Garden lights"]


def _index_meta(result, key: str):
    return result.asset_materializations_for_node("serving_indexes")[-1].metadata[key].value


def test_serving_indexes_hold_every_product_and_the_server_loads_them(tmp_path, monkeypatch):
    from catret_pipeline.config import ENV_SERVE_INDEX
    from catret_pipeline.serving.store import Store, search

    data = tmp_path / "data"
    write_catalogue(data)
    assets = data / "assets"
    atomic_write_parquet(_fusion({}), assets / "fusion_models.parquet")
    select = [serving_models, serving_indexes, serving_index_recall]
    first = _run(str(data), select)
    assert first.success
    checks = first.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    df = pl.read_parquet(assets / "serving_indexes.parquet")
    pairs = pl.read_parquet(assets / "evaluation_pairs.parquet")
    n_products = pl.read_parquet(assets / "products.parquet")["asin"].n_unique()
    assert set(df["setting"]) == set(pairs["setting"])
    assert df["n_items"].to_list() == [n_products] * df.height
    assert (df["action"] == "built").all() and (df["recall_at_10"] >= df["recall_bound"]).all()
    assert n_products > pairs.filter(pl.col("split") == "test")["asin"].n_unique()

    second = _run(str(data), [dg.AssetSpec("serving_models"), serving_indexes])
    assert _index_meta(second, "all.action") == "unchanged"

    monkeypatch.setenv(ENV_SERVE_INDEX, "hnsw")
    snap = Store(data, interval=0).snapshot
    assert {v.index.source for v in snap.settings.values()} == {"serving_indexes"}
    monkeypatch.setenv(ENV_SERVE_INDEX, "exact")
    exact = Store(data, interval=0).snapshot
    for node in snap.nodes[:5]:
        got = [h.asin for h in search(snap, node.name, 5, "all")]
        assert got == [h.asin for h in search(exact, node.name, 5, "all")]

    # A new catalogue: every vector moves, so the saved graph is not this snapshot's until the
    # asset runs again (the server builds one in memory meanwhile), then it is updated/rebuilt.
    write_catalogue(data, title_suffix=" v2")
    monkeypatch.setenv(ENV_SERVE_INDEX, "hnsw")
    stale = Store(data, interval=0).snapshot
    assert {v.index.source for v in stale.settings.values()} == {"built"}
    third = _run(str(data), [dg.AssetSpec("serving_models"), serving_indexes])
    assert _index_meta(third, "all.action") in ("built", "updated")
    fresh = Store(data, interval=0).snapshot
    assert {v.index.source for v in fresh.settings.values()} == {"serving_indexes"}


def test_the_server_reads_fresh_pages_and_the_built_choice(tmp_path):
    from catret_pipeline.serving.store import Store, category_page, search

    data = tmp_path / "data"
    write_catalogue(data)
    assets = data / "assets"
    atomic_write_parquet(_fusion({}), assets / "fusion_models.parquet")
    cfg = {"ops": {"category_rankings": {"config": {"k": 5}}}}
    assert _run(str(data), [serving_models, category_rankings], cfg).success
    snap = Store(data, interval=0).snapshot
    built = pl.read_parquet(assets / "serving_models.parquet")
    for setting, view in snap.settings.items():
        assert view.choice.reason == dict(built.select("setting", "reason").rows())[setting]
        assert len(view.pages) == len(snap.nodes)
        for node in snap.nodes:
            page = category_page(snap, node, 5, setting)
            assert page.query_source == "category_rankings"
            live = search(snap, node.name, 5, setting)
            assert [h.asin for h in page] == [h.asin for h in live]
            # Deeper than stored: computed on request.
            assert category_page(snap, node, 6, setting).query_source != "category_rankings"
    # A new catalogue (titles change every product vector): the stored pages are stale.
    write_catalogue(data, title_suffix=" v2")
    stale = Store(data, interval=0).snapshot
    assert all(len(v.pages) == 0 for v in stale.settings.values())
