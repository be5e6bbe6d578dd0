"""Reading the materialised tables a search needs, with errors that say what to do."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from catret_pipeline.config import CatretConfig
from catret_pipeline.search.results import BM25_MODEL, MATERIALIZE_HINT, SearchError
from catret_pipeline.storage.tables import TablePath, read_tables, table_file, table_root


def search_config(data_dir: str | os.PathLike, config: CatretConfig | None) -> CatretConfig:
    """``config`` (default: read from the environment, the CLI's) for ``data_dir``."""
    base = CatretConfig.from_env() if config is None else config
    return base.with_data_dir(data_dir)


def tables_root(cfg: CatretConfig) -> TablePath:
    # Tables follow the table store like the pipeline's; binaries stay under the data dir.
    return table_root(cfg.data_dir, cfg.table_store)


def asset_path(cfg: CatretConfig, name: str) -> TablePath:
    return table_file(tables_root(cfg), [name])


def _unreadable(path: TablePath, exc: Exception) -> SearchError:
    # Reads go through one open handle, so a build's rename cannot mix two versions; what
    # still fails is a file caught mid-replace or one that is damaged. Only the second needs
    # a rebuild: while a build runs, a retry is the remedy.
    from catret_pipeline.serving.store import build_running

    if isinstance(path, Path) and any(build_running(p) for p in path.parents[:3]):
        return SearchError(
            f"cannot read {path} while a build rewrites it ({type(exc).__name__}); "
            "retry in a moment"
        )
    return SearchError(
        f"cannot read {path}: the file is damaged (empty, truncated or not Parquet: {exc}); "
        "re-run `catret materialize` to rebuild it"
    )


def scan(path: TablePath) -> pl.LazyFrame:
    try:
        return read_tables([path], lazy=True)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def read_table(cfg: CatretConfig, name: str, what: str) -> pl.DataFrame:
    path = asset_path(cfg, name)
    if not path.exists():
        raise SearchError(f"{what} needs the {name} table, missing at {path}: {MATERIALIZE_HINT}")
    return scan(path).collect()


def available_text(indexes: pl.DataFrame) -> str:
    built = indexes.filter(pl.col("index_path").is_not_null())
    by_model: dict[str, list[str]] = {}
    for m, s in built.select("model", "setting").sort("model", "setting").iter_rows():
        by_model.setdefault(m, []).append(s)
    parts = [f"{m} ({', '.join(s)})" for m, s in by_model.items()]
    return "; ".join([f"{BM25_MODEL} (every setting with test pairs)", *parts])


def available_models(
    data_dir: str | os.PathLike, config: CatretConfig | None = None
) -> dict[str, list[str]]:
    """Model -> settings that can be searched in ``data_dir`` (empty when nothing is built)."""
    cfg = search_config(data_dir, config)
    out: dict[str, list[str]] = {}
    pairs_path = asset_path(cfg, "evaluation_pairs")
    if pairs_path.exists():
        settings = (
            scan(pairs_path)
            .filter(pl.col("split") == "test")
            .select(pl.col("setting").unique())
            .collect()["setting"]
            .to_list()
        )
        if settings:
            out[BM25_MODEL] = sorted(settings)
    idx_path = asset_path(cfg, "hnsw_indexes")
    if idx_path.exists():
        built = scan(idx_path).collect().filter(pl.col("index_path").is_not_null())
        for m, s in built.select("model", "setting").sort("model", "setting").iter_rows():
            out.setdefault(m, []).append(s)
    return out
