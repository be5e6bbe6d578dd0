"""``catret search`` against a project materialised once by the real pipeline on a tiny sample."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from catret_pipeline import config as catret_config
from catret_pipeline.cli import main
from catret_pipeline.definitions import build_resources
from catret_pipeline.fusion.assets import FusionModelsConfig
from catret_pipeline.search import (
    Hit,
    SearchError,
    SearchResults,
    format_results,
    recover_prompt,
    search,
    write_contact_sheet,
)

pytestmark = pytest.mark.slow

STAGES = ("ingest", "catalogue", "images", "embeddings", "fusion", "retrieval")
UNSEEN = "Moon Boots For Cats"
TRAINED = "clip-ita"


def _stage_defs() -> list:
    mods = [importlib.import_module(f"catret_pipeline.{s}.assets") for s in STAGES]
    mods.append(importlib.import_module("catret_pipeline.retrieval.hybrid_assets"))
    return [a for m in mods for a in (*m.ASSETS, *m.CHECKS)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from catret_pipeline.sample.generator import ensure_sample

    root = tmp_path_factory.mktemp("search")
    sample = ensure_sample(root / "sample", n_products=150, image_size=32)
    data = root / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(catret_config.ENV_IMAGE_MIRROR, str(sample.out_dir / "images"))
        mp.setenv(catret_config.ENV_DATA_DIR, str(data))
        result = dg.materialize(
            _stage_defs(),
            selection=dg.AssetSelection.assets("hnsw_indexes")
            .upstream()
            .required_multi_asset_neighbors(),
            resources=build_resources(str(data), str(sample.out_dir / "xmarket")),
            run_config=dg.RunConfig(
                ops={
                    "fusion_models": FusionModelsConfig(
                        models=[TRAINED], epochs=2, min_steps=0, proj_dim=32, hidden_dims=[64]
                    )
                }
            ),
            instance=dg.DagsterInstance.ephemeral(),
        )
    assert result.success
    test_pairs = pl.read_parquet(data / "assets" / "evaluation_pairs.parquet").filter(
        pl.col("split") == "test"
    )
    return data, test_pairs


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    # The CLI writes these into os.environ; set through monkeypatch, they are put back afterwards.
    monkeypatch.setenv(catret_config.ENV_DATA_DIR, str(tmp_path / "unused"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")


def _known(test_pairs: pl.DataFrame, setting: str) -> str:
    """The setting's most frequent test category name (a query the evaluation also asks)."""
    top = (
        test_pairs.filter(pl.col("setting") == setting)
        .group_by("category_name")
        .len()
        .sort(["len", "category_name"], descending=[True, False])
    )
    return top["category_name"][0]


def _assert_ranked(res: SearchResults, k: int, exact_k: bool = True) -> None:
    assert (len(res) == k) if exact_k else (1 <= len(res) <= k)
    assert [h.rank for h in res] == list(range(1, len(res) + 1))
    scores = [h.score for h in res]
    assert scores == sorted(scores, reverse=True)
    assert all(h.title for h in res)
    assert all(h.category_path for h in res)
    assert len({h.asin for h in res}) == len(res)


@pytest.mark.parametrize("model", ["bm25", "mpnet", "clip", TRAINED])
def test_known_category(project, model):
    data, pairs = project
    name = _known(pairs, "specific")
    res = search(data, name, model, "specific", 5)
    _assert_ranked(res, 5, exact_k=model != "bm25")
    assert res.query_source == ("bm25" if model == "bm25" else "precomputed")
    collection = set(pairs.filter(pl.col("setting") == "specific")["asin"])
    assert {h.asin for h in res} <= collection


def test_trained_model_scores_equal_exact_cosine(project):
    data, pairs = project
    name = _known(pairs, "all")
    fused = pl.read_parquet(data / "assets" / "fused_representations.parquet").filter(
        (pl.col("model") == TRAINED) & (pl.col("setting") == "all")
    )
    prods = fused.filter(pl.col("kind") == "product")
    q = fused.filter((pl.col("kind") == "category") & (pl.col("key") == name))["embedding"]
    cos = prods["embedding"].to_numpy() @ q.to_numpy()[0]
    k = min(8, prods.height)
    res = search(data, name, TRAINED, "all", k)
    np.testing.assert_allclose([h.score for h in res], np.sort(cos)[::-1][:k], atol=1e-4)
    by_asin = dict(zip(prods["key"], cos, strict=True))
    np.testing.assert_allclose([by_asin[h.asin] for h in res], [h.score for h in res], atol=1e-4)


@pytest.mark.parametrize("model", ["mpnet", "clip", TRAINED])
def test_unseen_name_is_encoded_on_the_fly(project, model):
    data, _ = project
    res = search(data, UNSEEN, model, "specific", 6)
    _assert_ranked(res, 6)
    assert res.query_source == "encoded"
    if model == "clip":
        assert any("a photo of a {name}." in n for n in res.notes)


def test_custom_clip_prompt_is_read_from_the_table_not_the_instance(project, tmp_path):
    """A build with its own prompt, run on an instance ``catret search`` never sees (here an
    ephemeral one): the prompt still comes back, from category_clip_embeddings' own file."""
    from catret_pipeline.embeddings.config import CategoryClipConfig

    src, _ = project
    data = tmp_path / "data"
    shutil.copytree(src, data)
    custom = "catalogue picture: {name}"
    result = dg.materialize(
        _stage_defs(),
        selection=["category_clip_embeddings"],
        resources=build_resources(str(data)),
        run_config=dg.RunConfig(
            ops={"category_clip_embeddings": CategoryClipConfig(prompt=custom)}
        ),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    res = search(data, UNSEEN, "clip", "specific", 3)
    assert res.query_source == "encoded"
    assert any(custom in n for n in res.notes), res.notes
    assert not any("could not be recovered" in n for n in res.notes)


def test_on_the_fly_encoding_reproduces_stored_vectors(project):
    """The unseen-name path must land in the space the index was built in."""
    from catret_pipeline.fusion.inference import encode_queries
    from catret_pipeline.storage.resources import CatretStorage

    data, pairs = project
    name = _known(pairs, "specific")
    text = build_resources(str(data))["text_encoder"]
    cats = pl.read_parquet(data / "assets" / "category_embeddings.parquet")
    stored = cats.filter(pl.col("name") == name).sort("node_id")["embedding"].to_numpy()[0]
    np.testing.assert_allclose(text.encode([name])[0], stored, atol=1e-5)
    fused = pl.read_parquet(data / "assets" / "fused_representations.parquet").filter(
        (pl.col("model") == TRAINED)
        & (pl.col("setting") == "specific")
        & (pl.col("kind") == "category")
        & (pl.col("key") == name)
    )
    vec = encode_queries(
        CatretStorage(data_dir=str(data)), TRAINED, "specific", [name], text.encode
    )
    np.testing.assert_allclose(vec[0], fused["embedding"].to_numpy()[0], atol=1e-5)


def test_missing_index_file(project, tmp_path):
    data, pairs = project
    other = tmp_path / "data"
    shutil.copytree(data / "assets", other / "assets")
    shutil.copytree(data / "indexes", other / "indexes")
    (other / "indexes" / "mpnet" / "specific.bin").unlink()
    with pytest.raises(SearchError, match=r"HNSW index file missing.*catret materialize"):
        search(other, _known(pairs, "specific"), "mpnet", "specific", 5)
    (other / "assets" / "hnsw_indexes.parquet").unlink()
    with pytest.raises(SearchError, match=r"hnsw_indexes table.*run `catret materialize` first"):
        search(other, "x", "mpnet", "specific", 5)
    # BM25 needs no index: it still answers
    assert search(other, _known(pairs, "specific"), "bm25", "specific", 3).hits


def test_unknown_or_unbuilt_model_lists_what_exists(project, tmp_path):
    data, _ = project
    with pytest.raises(SearchError, match=r"unknown model 'nope'.*available: bm25.*clip-ita \(all"):
        search(data, "x", "nope", "specific", 5)
    with pytest.raises(SearchError, match=r"'clip-i' is not materialised.*mpnet \(all"):
        search(data, "x", "clip-i", "specific", 5)
    with pytest.raises(SearchError, match="unknown setting"):
        search(data, "x", "mpnet", "deepest", 5)
    with pytest.raises(SearchError, match=r"no materialised assets.*catret materialize"):
        search(tmp_path / "empty", "x", "mpnet", "specific", 5)
    with pytest.raises(SearchError, match="empty"):
        search(data, "  ", "mpnet", "specific", 5)


def test_other_encoder_is_refused(project, monkeypatch):
    data, _ = project
    monkeypatch.setenv("CATRET_CLIP_PRECISION", "bf16")
    with pytest.raises(SearchError, match="another CLIP encoder"):
        search(data, UNSEEN, "clip", "specific", 5)
    monkeypatch.setenv("CATRET_TEXT_MODEL", str(data / "no-such-model"))
    with pytest.raises(SearchError, match="another text encoder"):
        search(data, UNSEEN, TRAINED, "specific", 5)
    with pytest.raises(SearchError, match="another text encoder"):
        search(data, UNSEEN, "mpnet", "specific", 5)


def test_recover_prompt_proves_candidates_by_hash():
    names = ["Hoops", "USB Cables"]

    def table(prompt):
        texts = [prompt.replace("{name}", n) for n in names]
        hashes = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        return pl.DataFrame({"name": names, "content_hash": hashes})

    custom = "an image of {name}, product photo"
    assert recover_prompt(table(custom), ["a photo of a {name}.", custom]) == custom
    assert recover_prompt(table(custom), ["a photo of a {name}."]) is None
    assert recover_prompt(table("{name}"), ["a photo of a {name}.", "{name}"]) == "{name}"


def test_cli_prints_table_and_writes_sheet(project, cli_env, tmp_path, capsys):
    data, pairs = project
    name = _known(pairs, "specific")
    sheet = tmp_path / "out" / "sheet.png"
    rc = main(
        ["search", name, "--model", TRAINED, "--setting", "specific", "-k", "7"]
        + ["--data-dir", str(data), "--sheet", str(sheet)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert f'query "{name}"' in lines[0] and TRAINED in lines[0]
    rows = [ln for ln in lines if ln[:4].strip().isdigit()]
    assert [int(r.split()[0]) for r in rows] == list(range(1, 8))
    assert str(sheet) in out
    with Image.open(sheet) as im:
        im.load()
        assert im.format == "PNG" and im.width >= 5 * 160 and im.height > 2 * 160
    assert not list(sheet.parent.glob(".*.tmp"))  # atomic write left no temp file

    rc = main(["search", name, "--model", "nope", "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: unknown model 'nope'") and "Traceback" not in err


def test_sheet_placeholders_and_empty(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    hits = [
        Hit(1, "A1", 0.9, "A very long product title " * 5, ["Root", "Leaf"], None),
        Hit(2, "A2", 0.5, None, [], "broken.jpg"),
    ]
    res = SearchResults("Moon Boots", "mpnet", "all", hits, "encoded")
    path = write_contact_sheet(res, tmp_path, tmp_path / "s.png", title="Moon Boots")
    with Image.open(path) as im:
        im.load()
        assert im.size[0] >= 2 * 160
        # the placeholder tile is light grey, not the white sheet background
        assert im.getpixel((40, 120)) != (255, 255, 255)
    empty = SearchResults("q", "bm25", "all", [], "bm25", ["no title shares a term with the query"])
    with Image.open(write_contact_sheet(empty, tmp_path, tmp_path / "e.png", "q")) as im:
        im.load()
    text = format_results(empty, "q", "bm25", "all")
    assert "no results" in text and "note: no title shares" in text


def test_search_reads_tables_from_a_remote_table_store(project, monkeypatch, tmp_path):
    """With CATRET_TABLE_STORE set, search reads the tables there (fsspec memory://) while
    indexes and models stay under the data dir: same hits as the local layout."""
    import fsspec

    data, pairs = project
    name = _known(pairs, "specific")
    local = {m: search(data, name, m, "specific", 5) for m in ("bm25", TRAINED)}
    fs = fsspec.filesystem("memory")
    store = "memory://catret-search-test/tables"
    # Only the binaries, no local assets/ folder: every table must come from the store.
    moved = tmp_path / "data"
    shutil.copytree(data, moved, ignore=shutil.ignore_patterns("assets"))
    try:
        for f in (data / "assets").glob("*.parquet"):
            fs.pipe_file(f"{store}/{f.name}", f.read_bytes())
        monkeypatch.setenv(catret_config.ENV_TABLE_STORE, store)
        for m, want in local.items():
            got = search(moved, name, m, "specific", 5)
            assert [(h.asin, h.title) for h in got] == [(h.asin, h.title) for h in want], m
            assert [h.score for h in got] == pytest.approx([h.score for h in want]), m
        monkeypatch.setenv(catret_config.ENV_TABLE_STORE, "memory://catret-search-test/empty")
        with pytest.raises(SearchError, match="no materialised assets"):
            search(moved, name, TRAINED, "specific", 5)
    finally:
        fs.rm("/catret-search-test", recursive=True)


def test_damaged_tables_are_named_without_a_traceback(project, cli_env, tmp_path, capsys):
    # Issue #12 item 5: a truncated products.parquet printed a polars traceback.
    data, pairs = project
    other = tmp_path / "data"
    shutil.copytree(data / "assets", other / "assets")
    shutil.copytree(data / "indexes", other / "indexes")
    products = other / "assets" / "products.parquet"
    products.write_bytes(products.read_bytes()[: products.stat().st_size // 2])
    name = _known(pairs, "specific")
    rc = main(["search", name, "--model", "mpnet", "--data-dir", str(other)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert str(products) in err and "damaged" in err and "catret materialize" in err
    (other / "assets" / "hnsw_indexes.parquet").write_bytes(b"")
    with pytest.raises(SearchError, match=r"hnsw_indexes\.parquet: the file is damaged"):
        search(other, name, "mpnet", "specific", 5)
