"""``search``: the top-k products of a setting's test collection for a category name, from the
saved HNSW index of a vector model or BM25 over the titles."""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from catret_pipeline.config import CatretConfig
from catret_pipeline.search.queries import query_vector
from catret_pipeline.search.reading import (
    asset_path,
    available_text,
    read_table,
    scan,
    search_config,
    tables_root,
)
from catret_pipeline.search.results import (
    BM25_MODEL,
    MATERIALIZE_HINT,
    SETTINGS,
    Hit,
    SearchError,
    SearchResults,
)
from catret_pipeline.storage.artefacts import artefact_path, artefact_root


def _bm25(cfg: CatretConfig, setting: str, name: str, k: int) -> tuple[list[str], np.ndarray]:
    from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker
    from catret_pipeline.retrieval.collection import collection_asins, held_out_pairs

    pairs = held_out_pairs(read_table(cfg, "evaluation_pairs", "bm25"))
    asins = collection_asins(pairs, setting)
    if not asins:
        have = sorted(pairs["setting"].unique().to_list())
        raise SearchError(
            f"bm25: setting {setting!r} has no test products; settings with test pairs: "
            f"{', '.join(have) or 'none'} ({MATERIALIZE_HINT})"
        )
    titles = (
        read_table(cfg, "products", "bm25")
        .select("asin", "title")
        .unique(subset="asin", keep="first")
    )
    collection = pl.DataFrame({"asin": asins}).join(titles, on="asin", how="left")
    # The same parameters as retrieval_runs, so scores match the evaluated run.
    ranker = Bm25Ranker(collection["title"].to_list(), collection["asin"].to_list(), Bm25Params())
    return ranker.rank(name, k)


def _missing_index(model: str, setting: str, indexes: pl.DataFrame) -> str:
    from catret_pipeline.fusion.features import MODEL_SPECS

    if model in indexes["model"].to_list():
        return f"model {model!r} has no index for setting {setting!r} ({MATERIALIZE_HINT})"
    if model in ("mpnet", "clip", *MODEL_SPECS):
        return (
            f"model {model!r} is not materialised in this data dir (trained models: "
            f"fusion_models config `models`; {MATERIALIZE_HINT})"
        )
    return f"unknown model {model!r}"


def _vector_search(
    cfg: CatretConfig, model: str, setting: str, name: str, k: int
) -> tuple[list[str], np.ndarray, str, list[str]]:
    from catret_pipeline.retrieval.hnsw_search import search as hnsw_search
    from catret_pipeline.retrieval.hnsw_store import load_index

    indexes = read_table(cfg, "hnsw_indexes", "vector search")
    row = indexes.filter((pl.col("model") == model) & (pl.col("setting") == setting))
    if row.is_empty():
        raise SearchError(
            f"{_missing_index(model, setting, indexes)}; available: {available_text(indexes)}"
        )
    rec = row.row(0, named=True)
    if rec["index_path"] is None:
        raise SearchError(
            f"{model}/{setting} has no index: the setting's test products have no {model} "
            f"vectors; available: {available_text(indexes)}"
        )
    try:
        root = artefact_root(cfg.data_dir, cfg.artefact_store)
        loaded = load_index(
            artefact_path(root, rec["index_path"]), artefact_path(root, rec["labels_path"])
        )
    except (FileNotFoundError, ValueError) as exc:
        raise SearchError(f"{model}/{setting}: {exc} ({MATERIALIZE_HINT})") from exc
    vec, source, notes = query_vector(cfg, model, setting, name)
    if vec.shape[-1] != loaded.dim:
        raise SearchError(
            f"{model}/{setting}: the query vector has dimension {vec.shape[-1]}, the index "
            f"{loaded.dim}: the index and the query tables come from different builds "
            f"(re-run `catret materialize`)"
        )
    if not np.any(vec):
        notes.append("the query vector is all zeros: every score is 0")
    res = hnsw_search(loaded, vec[None, :], k)
    if res.method[0] == "exact":
        notes.append("answered by exact search (the HNSW graph could not fill k results)")
    return res.asins[0].tolist(), res.scores[0], source, notes


def _attach(cfg: CatretConfig, asins: list[str], scores: np.ndarray) -> tuple[list[Hit], list[str]]:
    notes: list[str] = []
    info = pl.DataFrame({"asin": asins}, schema={"asin": pl.String})
    products_path = asset_path(cfg, "products")
    if products_path.exists():
        products = (
            scan(products_path)
            .filter(pl.col("asin").is_in(asins))
            .select("asin", "title", "category_path")
            .collect()
            .unique(subset="asin", keep="first")
        )
        info = info.join(products, on="asin", how="left")
    else:
        notes.append(f"no products table at {products_path}: titles unknown")
        info = info.with_columns(
            pl.lit(None, pl.String).alias("title"),
            pl.lit(None, pl.List(pl.String)).alias("category_path"),
        )
    images_path = asset_path(cfg, "product_images")
    if images_path.exists():
        images = (
            scan(images_path)
            .filter((pl.col("status") == "ok") & pl.col("cache_path").is_not_null())
            .filter(pl.col("asin").is_in(asins))
            .select("asin", "cache_path")
            .collect()
            .unique(subset="asin", keep="first")
        )
        info = info.join(images, on="asin", how="left")
    else:
        info = info.with_columns(pl.lit(None, pl.String).alias("cache_path"))
    by_asin = {r["asin"]: r for r in info.iter_rows(named=True)}
    hits = [
        Hit(
            rank=i + 1,
            asin=a,
            score=float(s),
            title=by_asin[a]["title"],
            category_path=list(by_asin[a]["category_path"] or []),
            image_path=by_asin[a]["cache_path"],
        )
        for i, (a, s) in enumerate(zip(asins, scores, strict=True))
    ]
    return hits, notes


def search(
    data_dir: str | os.PathLike,
    query: str,
    model: str = "clip-ita",
    setting: str = "specific",
    k: int = 10,
    config: CatretConfig | None = None,
) -> SearchResults:
    """Top-``k`` products of ``setting``'s test collection for the category name ``query``.

    Raises :class:`SearchError` (with what to do) when the data dir, table, index, model or
    setting is missing, or when an unseen name would be encoded by another encoder than the one
    the index was built with.
    """
    name = (query or "").strip()
    if not name:
        raise SearchError("the query is empty: give a category name")
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    if setting not in SETTINGS:
        raise SearchError(f"unknown setting {setting!r}; expected one of {', '.join(SETTINGS)}")
    cfg = search_config(data_dir, config)
    if not tables_root(cfg).is_dir():
        raise SearchError(f"no materialised assets under {tables_root(cfg)}: {MATERIALIZE_HINT}")
    if model == BM25_MODEL:
        asins, scores = _bm25(cfg, setting, name, k)
        source, notes = "bm25", []
        if not asins:
            notes.append("no title shares a term with the query")
    else:
        asins, scores, source, notes = _vector_search(cfg, model, setting, name, k)
    hits, more = _attach(cfg, asins, scores)
    return SearchResults(name, model, setting, hits, source, [*notes, *more])
