"""The DuckDB catalogue asset, materialised after every table asset it depends on."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.duckdb_catalog import build_catalog, catalog_sources
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.tables import is_remote

CATALOG_FILE = "catret.duckdb"


def build_duckdb_catalog_asset(upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        name="catret_duckdb",
        group_name="storage",
        kinds={"duckdb"},
        deps=list(upstream),
        description=(
            "DuckDB file with one view per Parquet asset (paths relative to the table root); "
            "with a remote "
            "table_store (not file://) each table is copied into the file instead."
        ),
    )
    def catret_duckdb(context: dg.AssetExecutionContext, storage: CatretStorage) -> pl.DataFrame:
        # DuckDB's own file, opened by `catret sql` on this machine: always under the local
        # data dir, whatever the artefact store.
        db_path = storage.local_path(CATALOG_FILE)
        root = storage.tables_root
        views, copies = catalog_sources(root)
        # its own listing is not a view worth having
        views.pop("catret_duckdb", None)
        copies.pop("catret_duckdb", None)
        counts = build_catalog(db_path, views, copies)
        sources = {name: str(path) for name, path in views.items()}
        for name, paths in copies.items():
            single = len(paths) == 1 and paths[0].parent == root
            sources[name] = str(paths[0]) if single else str(root / name / "*.parquet")
        table = pl.DataFrame(
            {
                "view": list(counts),
                "parquet": [sources[v] for v in counts],
                "rows": list(counts.values()),
                "kind": ["table" if v in copies else "view" for v in counts],
            }
        )
        mode = (
            f"tables copied from {root} (DuckDB cannot read this scheme offline); "
            "re-materialise this asset to refresh them"
            if is_remote(root)
            else "views over the Parquet files (always the last good materialisation)"
        )
        context.add_output_metadata(
            {
                "duckdb_path": dg.MetadataValue.path(str(db_path)),
                "table_store": dg.MetadataValue.text(str(root)),
                "mode": dg.MetadataValue.text(mode),
                "views": dg.MetadataValue.md(
                    markdown_table(["view", "rows"], list(counts.items()))
                ),
                "example": dg.MetadataValue.text(
                    f'catret sql --data-dir {storage.root} "select * from products limit 5"'
                    if is_remote(root)
                    else f"duckdb -readonly {db_path} -cmd \"set file_search_path='{root}'\" "
                    '-c "select * from products limit 5"'
                ),
            }
        )
        return table

    return catret_duckdb
