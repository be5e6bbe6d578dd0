"""The data-directory resource: one place that knows where non-table artefacts live."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import ConfigurableResource
from pydantic import Field

from catret_pipeline.storage.artefacts import (
    ARTEFACT_STORE_HELP,
    ArtefactPath,
    artefact_path,
    artefact_root,
)
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.tables import (
    TABLE_STORE_HELP,
    TablePath,
    read_tables,
    table_file,
    table_root,
)
from catret_pipeline.storage.tables import read_previous as read_previous_table


class CatretStorage(ConfigurableResource):
    """Root of everything the pipeline writes.

    Layout (see docs/architecture.md): ``assets/`` Parquet per asset (the IO manager's),
    ``indexes/`` HNSW binaries, ``models/`` trained heads, ``image_cache/`` content-addressed
    images, ``reports/`` Markdown + PNG, ``checkpoints/`` resumable part files,
    ``catret.duckdb`` the SQL catalogue. With ``table_store`` set the table assets live at that
    URL instead of ``assets/``; with ``artefact_store`` set the binary artefacts live at that
    URL (same relative layout); ``catret.duckdb``, ``model_cache/`` and the build lock stay
    under ``data_dir``.
    """

    data_dir: str
    table_store: str = Field(default="", description=TABLE_STORE_HELP)
    artefact_store: str = Field(default="", description=ARTEFACT_STORE_HELP)

    @property
    def root(self) -> Path:
        """The local data directory (the DuckDB catalogue, model cache and locks)."""
        return Path(self.data_dir).resolve()

    def local_path(self, *parts: str) -> Path:
        """A file that stays under the local data dir (``catret.duckdb``), never on a store."""
        return artefact_path(self.root, *parts)

    @property
    def artefact_root(self) -> ArtefactPath:
        """What artefact keys are relative to: the data dir, or the artefact store's URL."""
        return artefact_root(self.root, self.artefact_store)

    def path(self, *parts: str) -> ArtefactPath:
        """An artefact path (local or on the artefact store), refusing anything that escapes
        its root."""
        return artefact_path(self.artefact_root, *parts)

    @property
    def tables_root(self) -> TablePath:
        """Folder of the table assets: a local ``Path``, or a ``UPath`` for a remote store."""
        return table_root(self.root, self.table_store)

    def asset_path(self, *asset_key: str) -> TablePath:
        return table_file(self.tables_root, asset_key)

    def read_previous(self, *asset_key: str) -> pl.DataFrame | None:
        """The last good materialisation of an asset, for incremental reuse (None if absent)."""
        return read_previous_table(self.tables_root, asset_key)

    def scan_asset(self, *asset_key: str) -> pl.LazyFrame | None:
        """An unpartitioned asset as a LazyFrame (a lazy scan locally, read whole from a remote
        store), or None if it was never materialised."""
        path = self.asset_path(*asset_key)
        return read_tables([path], lazy=True) if path.exists() else None

    def write_table(self, df: pl.DataFrame, *parts: str) -> ArtefactPath:
        """A Parquet artefact (checkpoints) on the artefact store, not a table asset."""
        return atomic_write_parquet(df, self.path(*parts))
