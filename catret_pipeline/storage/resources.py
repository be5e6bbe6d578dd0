"""The data-directory resource: one place that knows where non-table artefacts live."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import ConfigurableResource

from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.io_manager import asset_file


class CatretStorage(ConfigurableResource):
    """Root of everything the pipeline writes.

    Layout (see docs/architecture.md): ``assets/`` Parquet per asset (the IO manager's),
    ``indexes/`` HNSW binaries, ``models/`` trained heads, ``image_cache/`` content-addressed
    images, ``reports/`` Markdown + PNG, ``checkpoints/`` resumable part files,
    ``catret.duckdb`` the SQL catalogue.
    """

    data_dir: str

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def path(self, *parts: str) -> Path:
        """An artefact path under the data dir, refusing anything that escapes it."""
        p = (self.root / Path(*parts)).resolve()
        if self.root != p and self.root not in p.parents:
            raise ValueError(f"path {p} escapes the data directory {self.root}")
        return p

    def asset_path(self, *asset_key: str) -> Path:
        return asset_file(self.root, list(asset_key))

    def read_previous(self, *asset_key: str) -> pl.DataFrame | None:
        """The last good materialisation of an asset, for incremental reuse (None if absent)."""
        p = self.asset_path(*asset_key)
        return pl.read_parquet(p) if p.exists() else None

    def write_table(self, df: pl.DataFrame, *parts: str) -> Path:
        return atomic_write_parquet(df, self.path(*parts))
