"""The DuckDB catalogue asset, materialised after every table asset it depends on."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.duckdb_catalog import build_catalog, view_sources
from catret_pipeline.storage.resources import CatretStorage

CATALOG_FILE = "catret.duckdb"


def build_duckdb_catalog_asset(upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        name="catret_duckdb",
        group_name="storage",
        kinds={"duckdb"},
        deps=list(upstream),
        description="DuckDB file with one view per Parquet asset (absolute paths).",
    )
    def catret_duckdb(context: dg.AssetExecutionContext, storage: CatretStorage) -> pl.DataFrame:
        db_path = storage.path(CATALOG_FILE)
        sources = view_sources(storage.path("assets"))
        sources.pop("catret_duckdb", None)  # its own listing is not a view worth having
        counts = build_catalog(db_path, sources)
        table = pl.DataFrame(
            {
                "view": list(counts),
                "parquet": [str(sources[v]) for v in counts],
                "rows": list(counts.values()),
            }
        )
        context.add_output_metadata(
            {
                "duckdb_path": dg.MetadataValue.path(str(db_path)),
                "views": dg.MetadataValue.md(
                    markdown_table(["view", "rows"], list(counts.items()))
                ),
                "example": dg.MetadataValue.text(
                    f'duckdb -readonly {db_path} -c "select * from products limit 5"'
                ),
            }
        )
        return table

    return catret_duckdb
