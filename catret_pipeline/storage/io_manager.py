"""Parquet IO manager: every table asset is ``<data_dir>/assets/<asset key>.parquet`` (zstd).

Writes are atomic (see :mod:`catret_pipeline.storage.atomic`); loads are lazy when the
downstream parameter is annotated ``pl.LazyFrame``. Row count, column schema and a preview are
attached to every materialisation so the UI shows them without opening the file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.atomic import atomic_write_parquet

PREVIEW_ROWS = 5


def asset_file(
    data_dir: str | Path, asset_key_path: list[str], partition_key: str | None = None
) -> Path:
    base = Path(data_dir) / "assets" / Path(*asset_key_path)
    if partition_key is None:
        return base.with_suffix(".parquet")
    # Partition keys may hold '|' (multi-partitions) or '/', neither wanted in a file name.
    safe = partition_key.replace("/", "_").replace("|", "__")
    return base / f"{safe}.parquet"


def table_schema(df: pl.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in df.schema.items()])


def preview_markdown(df: pl.DataFrame, rows: int = PREVIEW_ROWS, max_chars: int = 60) -> str:
    def clip(value: object) -> str:
        text = str(value)
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    return markdown_table(df.columns, [[clip(v) for v in row] for row in df.head(rows).iter_rows()])


def table_metadata(df: pl.DataFrame, path: Path | None = None) -> dict:
    meta = {
        "dagster/row_count": MetadataValue.int(df.height),
        "dagster/column_schema": table_schema(df),
        "preview": MetadataValue.md(preview_markdown(df)),
    }
    if path is not None:
        meta["path"] = MetadataValue.path(str(path))
    return meta


class ParquetIOManager(ConfigurableIOManager):
    """Stores polars DataFrames as Parquet under ``data_dir``; ``None`` outputs store nothing."""

    data_dir: str

    def _path(self, context: OutputContext | InputContext) -> Path:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return asset_file(self.data_dir, list(context.asset_key.path), partition)

    def handle_output(self, context: OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:
            return
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        path = self._path(context)
        atomic_write_parquet(obj, path)
        context.add_output_metadata(table_metadata(obj, path))

    def load_input(self, context: InputContext) -> pl.DataFrame | pl.LazyFrame:
        key_path = list(context.asset_key.path)
        if context.has_asset_partitions:
            paths = [
                asset_file(self.data_dir, key_path, key) for key in context.asset_partition_keys
            ]
        else:
            paths = [asset_file(self.data_dir, key_path)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"Asset {context.asset_key.to_user_string()} has no materialisation at {missing[0]}; "
                "materialise it first (e.g. `catret materialize`)."
            )
        lazy = pl.scan_parquet([str(p) for p in paths])
        if context.dagster_type.typing_type is pl.LazyFrame:
            return lazy
        return lazy.collect()
