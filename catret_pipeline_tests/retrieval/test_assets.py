"""hnsw_indexes + hnsw_recall + retrieval_runs through dg.materialize on fixture Parquet tables."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from catret_pipeline.retrieval.checks import CHECKS, hnsw_recall
from catret_pipeline.retrieval.collection import query_plan
from catret_pipeline.retrieval.exact import exact_topk
from catret_pipeline.retrieval.hnsw_store import load_index
from catret_pipeline.retrieval.index_assets import hnsw_indexes
from catret_pipeline.retrieval.run_assets import retrieval_runs
from catret_pipeline.retrieval.schemas import ACCEPTANCE_COLUMNS, RUN_COLUMNS
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.vectors_math import l2_normalize

UPSTREAM = [
    "evaluation_pairs",
    "products",
    "title_embeddings",
    "image_embeddings",
    "category_embeddings",
    "category_clip_embeddings",
    "fused_representations",
    "hybrid_runs",
]
LEAVES = [
    ("Electronics", "Antennas"),
    ("Electronics", "Accessories"),
    ("Electronics", "Cables"),
    ("Home", "Accessories"),  # same name as a node under Electronics: one query
    ("Home", "Lamps"),
    ("Home", "Rugs"),
]


def arr(m):
    m = np.asarray(m, dtype=np.float32)
    return pl.Series("embedding", m).cast(pl.Array(pl.Float32, m.shape[1]))


def write_fixtures(data_dir: Path, n: int = 120, hard: bool = False) -> dict:
    """Upstream tables in the IO manager's layout; returns facts the tests check against."""
    rng = np.random.default_rng(0)
    asins = [f"P{i:04d}" for i in range(n)]
    leaf = [(i // 3) % len(LEAVES) for i in range(n)]
    split = ["test" if i % 3 == 0 else "train" for i in range(n)]
    pairs = []
    for setting, level in (("all", 1), ("general", 0)):
        for i in range(n):
            root, name = LEAVES[leaf[i]]
            cat_name = name if level else root
            cat_id = f"{root}/{name}" if level else root
            pairs.append((setting, asins[i], cat_id, cat_name, level + 1, split[i], True))
    evaluation_pairs = pl.DataFrame(
        pairs,
        schema=[
            "setting",
            "asin",
            "category_id",
            "category_name",
            "category_depth",
            "split",
            "seen_in_train",
        ],
        orient="row",
    )

    def vectors(dim):
        centers = rng.normal(size=(len(LEAVES), dim))
        if hard:
            items = rng.normal(size=(n, dim))  # no structure: graph search has nothing to use
        else:
            items = centers[leaf] + 0.15 * rng.normal(size=(n, dim))
        roots = {
            r: centers[[j for j, (rr, _) in enumerate(LEAVES) if rr == r]].mean(0)
            for r in ("Electronics", "Home")
        }
        return centers, items, roots

    dim = 64 if hard else 16
    text_c, text_items, text_roots = vectors(dim)
    clip_c, clip_items, clip_roots = vectors(12)
    fused_c, fused_items, fused_roots = vectors(8)
    node_ids = [f"n{j}" for j in range(len(LEAVES))] + ["r0", "r1"]
    node_names = [name for _, name in LEAVES] + ["Electronics", "Home"]

    has_image = [i % 5 != 0 for i in range(n)]
    tables = {
        "evaluation_pairs": evaluation_pairs,
        "products": pl.DataFrame(
            {
                "asin": asins,
                "title": [
                    None if i == 3 else f"{LEAVES[leaf[i]][1]} product number {i}" for i in range(n)
                ],
                "market": "us",
            }
        ),
        "title_embeddings": pl.DataFrame(
            {"asin": asins, "model_id": "st:test-mpnet", "content_hash": "h"}
        ).with_columns(arr(text_items)),
        "image_embeddings": pl.DataFrame(
            {"asin": [a for a, ok in zip(asins, has_image, strict=True) if ok], "model_id": "clip"}
        ).with_columns(arr(clip_items[has_image])),
        "category_embeddings": pl.DataFrame(
            {
                "node_id": node_ids,
                "name": node_names,
                "model_id": "st:test-mpnet",
                "content_hash": "h",
            }
        ).with_columns(arr(np.vstack([text_c, text_roots["Electronics"], text_roots["Home"]]))),
        # no CLIP vector for "Rugs": that query cannot be answered by CLIP
        "category_clip_embeddings": pl.DataFrame(
            {"node_id": node_ids[:5] + node_ids[6:], "name": node_names[:5] + node_names[6:]}
        ).with_columns(arr(np.vstack([clip_c[:5], clip_roots["Electronics"], clip_roots["Home"]]))),
    }
    fused = []
    for setting in ("all", "general"):
        fused.append(
            pl.DataFrame(
                {"model": "clip-ita", "setting": setting, "kind": "product", "key": asins}
            ).with_columns(arr(fused_items))
        )
        names = [name for _, name in LEAVES] if setting == "all" else ["Electronics", "Home"]
        vecs = (
            fused_c
            if setting == "all"
            else np.vstack([fused_roots["Electronics"], fused_roots["Home"]])
        )
        fused.append(
            pl.DataFrame(
                {"model": "clip-ita", "setting": setting, "kind": "category", "key": names}
            ).with_columns(arr(vecs))
        )
    tables["fused_representations"] = pl.concat(fused)
    # catret-hybrid has its own tests (test_retrieval_hybrid*.py); here it ranks nothing.
    tables["hybrid_runs"] = pl.DataFrame(schema=RUN_COLUMNS)
    for name, df in tables.items():
        atomic_write_parquet(df, data_dir / "assets" / f"{name}.parquet")
    test = [i for i in range(n) if split[i] == "test"]
    return {
        "n_test": len(test),
        "no_image_test": {asins[i] for i in test if not has_image[i]},
        "text_items": text_items,
        "text_c": text_c,
        "asins": asins,
        "evaluation_pairs": evaluation_pairs,
    }


def run(data_dir: Path, selection, run_config=None):
    return dg.materialize(
        [*(dg.AssetSpec(k) for k in UPSTREAM), *selection],
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config or {},
        raise_on_error=False,
    )


def run_check(data_dir: Path, run_config=None):
    """hnsw_recall alone, in a fresh instance: no event of hnsw_indexes to read anything from."""
    return dg.materialize(
        [*(dg.AssetSpec(k) for k in UPSTREAM), hnsw_indexes, hnsw_recall],
        selection=dg.AssetSelection.checks(hnsw_recall),
        resources={
            "io_manager": ParquetIOManager(data_dir=str(data_dir)),
            "storage": CatretStorage(data_dir=str(data_dir)),
        },
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config or {},
        raise_on_error=False,
    )


def check_config(**cfg):
    return {"ops": {hnsw_recall.node_def.name: {"config": cfg}}}


def test_checks_export():
    assert [hnsw_recall] == CHECKS


def test_indexes_check_and_runs_on_toy_data(tmp_path):
    facts = write_fixtures(tmp_path)
    result = run(tmp_path, [hnsw_indexes, hnsw_recall, retrieval_runs])
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["min_recall_at_10"].value >= 0.98
    assert "clip-ita" in evaluation.metadata["recall"].value

    idx = pl.read_parquet(tmp_path / "assets" / "hnsw_indexes.parquet")
    assert sorted(zip(idx["model"], idx["setting"], strict=True)) == [
        (m, s) for m in ("clip", "clip-ita", "mpnet") for s in ("all", "general")
    ]
    clip = idx.filter(pl.col("model") == "clip").row(0, named=True)
    assert clip["n_missing_vectors"] == len(facts["no_image_test"])
    assert clip["n_items"] == facts["n_test"] - len(facts["no_image_test"])
    mpnet = idx.filter((pl.col("model") == "mpnet") & (pl.col("setting") == "all")).row(
        0, named=True
    )
    assert mpnet["index_path"] == "indexes/mpnet/all.bin"
    assert mpnet["dim"] == 16 and mpnet["M"] == 16 and mpnet["ef"] == 100
    assert mpnet["recall_at_10"] >= 0.98 and mpnet["bytes"] > 0
    loaded = load_index(tmp_path / mpnet["index_path"], tmp_path / mpnet["labels_path"])
    assert loaded.n == facts["n_test"] and loaded.meta["model"] == "mpnet"

    runs = pl.read_parquet(tmp_path / "assets" / "retrieval_runs.parquet")
    assert runs.columns == ["model", "setting", "query", "rank", "asin", "score", "search"]
    assert set(runs["model"]) == {"bm25", "mpnet", "clip", "clip-ita"}
    # ranks are 1..n, no asin twice in a list
    per_list = runs.group_by("model", "setting", "query").agg(
        pl.col("rank").min().alias("lo"),
        pl.col("rank").max().alias("hi"),
        pl.len().alias("n"),
        pl.col("asin").n_unique().alias("distinct"),
    )
    assert (per_list["lo"] == 1).all()
    assert (per_list["hi"] == per_list["n"]).all()
    assert (per_list["distinct"] == per_list["n"]).all()

    # depth = max(10, R): 40 test products, 21 under Electronics, 19 under Home
    pairs = facts["evaluation_pairs"].filter(pl.col("split") == "test")
    plan = query_plan(pairs, "general")
    assert plan["query"].to_list() == ["Electronics", "Home"]
    assert plan["n_relevant"].to_list() == [21, 19] and plan["depth"].to_list() == [21, 19]
    depth = {
        s: dict(query_plan(pairs, s).select("query", "depth").iter_rows())
        for s in ("all", "general")
    }
    assert depth["all"]["Accessories"] == 14 and depth["all"]["Antennas"] == 10
    mp = per_list.filter(pl.col("model") == "mpnet")
    for setting, query, n in mp.select("setting", "query", "n").iter_rows():
        assert n == depth[setting][query], (setting, query)
    assert mp.height == 5 + 2  # "Accessories" is one query for two tree nodes

    # mpnet lists are the exact lists
    mp_acc = runs.filter(
        (pl.col("model") == "mpnet")
        & (pl.col("setting") == "all")
        & (pl.col("query") == "Antennas")
    ).sort("rank")
    test_rows = sorted(i for i, a in enumerate(facts["asins"]) if a in set(pairs["asin"]))
    ids, scores = exact_topk(
        l2_normalize(facts["text_items"][test_rows]), l2_normalize(facts["text_c"][0:1]), 10
    )
    assert mp_acc["asin"].to_list() == [facts["asins"][test_rows[j]] for j in ids[0]]
    np.testing.assert_allclose(mp_acc["score"].to_numpy(), scores[0], atol=1e-5)

    # CLIP: image-less products are never retrieved; a name without a CLIP vector gets no list
    clip_runs = runs.filter(pl.col("model") == "clip")
    assert not set(clip_runs["asin"]) & facts["no_image_test"]
    assert "Rugs" not in set(clip_runs["query"])
    assert "Rugs" in set(runs.filter(pl.col("model") == "mpnet")["query"])
    # BM25 returns only titles sharing a term with the query, all scored > 0
    bm = runs.filter(pl.col("model") == "bm25")
    assert (bm["score"] > 0).all() and set(bm["search"]) == {"bm25"}
    assert set(runs.filter(pl.col("model") != "bm25")["search"]) <= {"hnsw", "exact"}
    bm_lamps = bm.filter((pl.col("setting") == "all") & (pl.col("query") == "Lamps"))
    assert bm_lamps.height == 6  # the 6 test titles that say "Lamps"


def test_recall_check_fails_above_one_and_blocks_runs(tmp_path):
    write_fixtures(tmp_path)
    result = run(
        tmp_path, [hnsw_indexes, hnsw_recall, retrieval_runs], check_config(recall_bound=1.01)
    )
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["recall_bound"].value == pytest.approx(1.01)
    assert not (tmp_path / "assets" / "retrieval_runs.parquet").exists()


def test_recall_check_fails_for_a_starved_graph_on_structureless_data(tmp_path):
    write_fixtures(tmp_path, n=1500, hard=True)
    starved = {"ops": {"hnsw_indexes": {"config": {"M": 2, "ef_construction": 2, "ef": 1}}}}
    result = run(tmp_path, [hnsw_indexes, hnsw_recall], starved)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["min_recall_at_10"].value < 0.9
    # the bound the asset was configured with governs the check
    assert evaluation.metadata["recall_bound"].value == pytest.approx(0.98)


def index_config(**cfg):
    return {"ops": {"hnsw_indexes": {"config": cfg}}}


def test_the_check_takes_the_build_settings_from_the_index_table(tmp_path):
    write_fixtures(tmp_path)
    settings = {"recall_bound": 1.01, "recall_sample_queries": 7, "seed": 3}
    assert run(tmp_path, [hnsw_indexes], index_config(**settings)).success
    table_path = tmp_path / "assets" / "hnsw_indexes.parquet"
    table = pl.read_parquet(table_path)
    assert table.select(ACCEPTANCE_COLUMNS).unique().rows() == [(1.01, 7, 3)]

    # Another instance, which never saw the materialisation: the table alone carries them.
    result = run_check(tmp_path)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["recall_bound"].value == pytest.approx(1.01)
    # 7 sampled products + the 5 (all) / 2 (general) category query vectors of the setting
    recall_table = evaluation.metadata["recall"].value
    assert "| mpnet | all | 40 | 12 |" in recall_table
    assert "| mpnet | general | 40 | 9 |" in recall_table
    assert run_check(tmp_path, check_config(recall_bound=0.5)).success

    # A table written before the columns existed: the IndexConfig defaults.
    atomic_write_parquet(table.drop(ACCEPTANCE_COLUMNS), table_path)
    (evaluation,) = run_check(tmp_path).get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["recall_bound"].value == pytest.approx(0.98)


def _index_rows(data_dir: Path) -> dict:
    idx = pl.read_parquet(data_dir / "assets" / "hnsw_indexes.parquet")
    return {(r["model"], r["setting"]): r for r in idx.iter_rows(named=True)}


def _change_collection(data_dir: Path, facts: dict) -> dict:
    """Two test products leave the collection, two train products join it, two test products
    get new title vectors. Every one of them has an image, so CLIP sees the same moves."""
    asins = facts["asins"]
    removed, added, changed = [asins[6], asins[9]], [asins[7], asins[8]], [asins[12], asins[21]]
    path = data_dir / "assets"
    pairs = pl.read_parquet(path / "evaluation_pairs.parquet").with_columns(
        split=pl.when(pl.col("asin").is_in(removed))
        .then(pl.lit("train"))
        .when(pl.col("asin").is_in(added))
        .then(pl.lit("test"))
        .otherwise(pl.col("split"))
    )
    atomic_write_parquet(pairs, path / "evaluation_pairs.parquet")
    text_items = facts["text_items"].copy()
    rows = [asins.index(a) for a in changed]
    text_items[rows] = np.random.default_rng(9).normal(size=(len(rows), text_items.shape[1]))
    titles = pl.read_parquet(path / "title_embeddings.parquet").drop("embedding")
    atomic_write_parquet(titles.with_columns(arr(text_items)), path / "title_embeddings.parquet")
    return {"removed": removed, "added": added, "changed": changed, "text_items": text_items}


def test_a_second_run_updates_the_indexes_in_place(tmp_path):
    facts = write_fixtures(tmp_path)
    assets = [hnsw_indexes, hnsw_recall, retrieval_runs]
    assert run(tmp_path, assets).success
    first = _index_rows(tmp_path)
    assert {r["action"] for r in first.values()} == {"built"}
    assert {r["reason"] for r in first.values()} == {"no previous index"}

    change = _change_collection(tmp_path, facts)
    result = run(tmp_path, assets)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed  # the recall check loads the updated indexes from disk
    rows = _index_rows(tmp_path)
    for (model, _), r in rows.items():
        n_changed = 2 if model == "mpnet" else 0  # only the title vectors moved
        assert r["action"] == "updated", r
        assert (r["n_added"], r["n_removed"], r["n_changed"]) == (2, 2, n_changed), r
        assert r["reason"] == f"2 added, 2 removed, {n_changed} changed"
        assert r["recall_at_10"] >= 0.98
    (mat,) = result.asset_materializations_for_node("hnsw_indexes")
    assert mat.metadata["n_updated"].value == 6 and mat.metadata["n_built"].value == 0
    assert "| updated |" in mat.metadata["indexes"].value

    runs = pl.read_parquet(tmp_path / "assets" / "retrieval_runs.parquet")
    assert runs.filter(pl.col("asin").is_in(change["removed"])).is_empty()
    assert set(change["added"]) <= set(runs.filter(pl.col("model") == "clip")["asin"])
    # mpnet lists are the exact lists over the new collection and the new vectors
    pairs = pl.read_parquet(tmp_path / "assets" / "evaluation_pairs.parquet")
    test_asins = set(pairs.filter(pl.col("split") == "test")["asin"])
    test_rows = sorted(i for i, a in enumerate(facts["asins"]) if a in test_asins)
    vectors = l2_normalize(change["text_items"][test_rows])
    for query, centre in (("Antennas", 0), ("Cables", 2)):
        got = runs.filter(
            (pl.col("model") == "mpnet") & (pl.col("setting") == "all") & (pl.col("query") == query)
        ).sort("rank")
        ids, scores = exact_topk(vectors, l2_normalize(facts["text_c"][centre : centre + 1]), 10)
        assert got["asin"].to_list() == [facts["asins"][test_rows[j]] for j in ids[0]]
        np.testing.assert_allclose(got["score"].to_numpy(), scores[0], atol=1e-5)

    # Nothing changed: every index is reused as it is, no file rewritten.
    files = sorted((tmp_path / "indexes").rglob("*"))
    stamps = [(f.stat().st_mtime_ns, f.stat().st_size) for f in files]
    assert run(tmp_path, assets).success
    assert {(r["action"], r["reason"]) for r in _index_rows(tmp_path).values()} == {
        ("unchanged", "no change")
    }
    assert sorted((tmp_path / "indexes").rglob("*")) == files
    assert [(f.stat().st_mtime_ns, f.stat().st_size) for f in files] == stamps

    result = run(tmp_path, assets, index_config(force_rebuild=True))
    assert result.success
    assert {(r["action"], r["reason"]) for r in _index_rows(tmp_path).values()} == {
        ("built", "forced (force_rebuild)")
    }
