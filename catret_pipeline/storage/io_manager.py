"""Parquet IO manager: every table asset is ``<data_dir>/assets/<asset key>.parquet`` (zstd),
or ``<table_store>/<asset key>.parquet`` when ``table_store`` is a URL (see
:mod:`catret_pipeline.storage.tables`).

Writes are atomic (a temp file + rename locally, one whole-object upload remotely); loads are
lazy when the downstream parameter is annotated ``pl.LazyFrame``. Row count, column schema and a preview are
attached to every materialisation so the UI shows them without opening the file. An asset that
names summary fields (:mod:`catret_pipeline.storage.table_summary`) also gets those values of its
output metadata written into the file's footer, for code that reads them back.
"""

from __future__ import annotations

import polars as pl
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field

from catret_pipeline.markdown import frame_markdown
from catret_pipeline.storage.table_summary import wanted_summary, with_summary
from catret_pipeline.storage.tables import (
    TABLE_STORE_HELP,
    TablePath,
    asset_file,
    missing_message,
    missing_tables,
    read_tables,
    table_file,
    table_root,
    write_table,
)

__all__ = ["ParquetIOManager", "asset_file", "table_metadata", "table_schema"]

PREVIEW_ROWS = 5


def table_schema(df: pl.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in df.schema.items()])


def table_metadata(df: pl.DataFrame, path: TablePath | None = None) -> dict:
    meta = {
        "dagster/row_count": MetadataValue.int(df.height),
        "dagster/column_schema": table_schema(df),
        "preview": MetadataValue.md(frame_markdown(df, rows=PREVIEW_ROWS, max_chars=60)),
    }
    if path is not None:
        meta["path"] = MetadataValue.path(str(path))
    return meta


class ParquetIOManager(ConfigurableIOManager):
    """Stores polars DataFrames as Parquet under ``data_dir`` (or ``table_store``); ``None``
    outputs store nothing."""

    data_dir: str
    table_store: str = Field(default="", description=TABLE_STORE_HELP)

    def _file(self, asset_key_path: list[str], partition: str | None = None) -> TablePath:
        return table_file(table_root(self.data_dir, self.table_store), asset_key_path, partition)

    def handle_output(self, context: OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:
            return
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(
                f"Asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "the Parquet IO manager stores polars DataFrames (or None)"
            )
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._file(list(context.asset_key.path), partition)
        summary = wanted_summary(context.definition_metadata, context.output_metadata)
        write_table(with_summary(obj.to_arrow(), summary) if summary else obj, path)
        context.add_output_metadata(table_metadata(obj, path))

    def load_input(self, context: InputContext) -> pl.DataFrame | pl.LazyFrame:
        key_path = list(context.asset_key.path)
        if context.has_asset_partitions:
            paths = [self._file(key_path, key) for key in context.asset_partition_keys]
        else:
            paths = [self._file(key_path)]
        missing = missing_tables(paths)
        if missing:
            raise FileNotFoundError(missing_message(context.asset_key.to_user_string(), missing[0]))
        # A damaged file raises DamagedTable naming it: refused, not recovered, since an
        # input's last good state is that very file.
        return read_tables(paths, lazy=context.dagster_type.typing_type is pl.LazyFrame)
