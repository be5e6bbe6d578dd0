"""Ingest assets: ``raw_products`` + ``quarantine`` (one pass over the files) and ``products``."""

import json
import time

import dagster as dg
import polars as pl

from catret_pipeline.ingest.cleaning import clean_record
from catret_pipeline.ingest.reader import read_catalogue
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.markdown import markdown_table

GROUP = "ingest"

PRODUCTS_SCHEMA = {
    "asin": pl.String,
    "market": pl.String,
    "source_file": pl.String,
    "title": pl.String,
    "category_path": pl.List(pl.String),
    "attributes": pl.List(pl.String),
    "image_url": pl.String,
    "description": pl.String,
    "title_hash": pl.String,
    "attributes_hash": pl.String,
    "image_hash": pl.String,
}


@dg.multi_asset(
    outs={
        "raw_products": dg.AssetOut(
            group_name=GROUP,
            kinds={"polars"},
            description="Parsed, validated metadata lines, one row per asin (record as JSON).",
        ),
        "quarantine": dg.AssetOut(
            group_name=GROUP,
            kinds={"polars"},
            description="Every line that did not become a raw product, with a reason code.",
        ),
    },
)
def ingest_raw(context: dg.AssetExecutionContext, xmarket: XMarketSource):
    files = xmarket.source_files()
    started = time.perf_counter()
    result = read_catalogue(files, xmarket.market_priority, xmarket.max_line_bytes)
    seconds = time.perf_counter() - started
    # Checked again here so the asset cannot publish tables that do not reconcile.
    result.check_invariant()
    raw, quarantine = result.raw_products, result.quarantine
    context.log.info(
        f"{len(files)} files, {result.lines_read} lines: {raw.height} products, "
        f"{quarantine.height} quarantined in {seconds:.1f}s"
    )
    reasons_md = markdown_table(
        ["reason", "rows"], [[r, n] for r, n in sorted(result.reasons.items())] or [["-", 0]]
    )
    files_md = markdown_table(
        ["source_file", "lines", "kept", "quarantined"],
        [[f["source_file"], f["lines"], f["kept"], f["quarantined"]] for f in result.per_file],
    )
    common = {
        "lines_read": dg.MetadataValue.int(result.lines_read),
        "products": dg.MetadataValue.int(raw.height),
        "quarantined": dg.MetadataValue.int(quarantine.height),
        "files": dg.MetadataValue.int(len(files)),
        "parsed_as_python_literal": dg.MetadataValue.int(result.via.get("python_literal", 0)),
        "quarantine_by_reason": dg.MetadataValue.md(reasons_md),
        "per_file": dg.MetadataValue.md(files_md),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    per_reason = {
        f"quarantine/{reason}": dg.MetadataValue.int(n) for reason, n in result.reasons.items()
    }
    yield dg.Output(raw, output_name="raw_products", metadata=common)
    yield dg.Output(quarantine, output_name="quarantine", metadata={**common, **per_reason})


class ProductsConfig(dg.Config):
    """Options for cleaning; which fields feed ``attributes`` is the ``xmarket`` resource's."""

    max_attributes: int = 0
    """Keep at most this many attribute strings per product (0 = all)."""


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Cleaned products: normalised title, category path, attributes, largest image.",
)
def products(
    context: dg.AssetExecutionContext,
    config: ProductsConfig,
    xmarket: XMarketSource,
    raw_products: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    fields = list(xmarket.attribute_fields)
    cols: dict[str, list] = {k: [] for k in PRODUCTS_SCHEMA}
    for asin, market, source_file, record in raw_products.select(
        "asin", "market", "source_file", "record"
    ).iter_rows():
        row = clean_record(json.loads(record), fields, config.max_attributes)
        row.update(asin=asin, market=market, source_file=source_file)
        for k in PRODUCTS_SCHEMA:
            cols[k].append(row[k])
    df = pl.DataFrame(cols, schema=PRODUCTS_SCHEMA)
    n_attr = df.get_column("attributes").list.len()
    meta = {
        "products": dg.MetadataValue.int(df.height),
        "with_image": dg.MetadataValue.int(df.get_column("image_url").is_not_null().sum()),
        "attributes_total": dg.MetadataValue.int(int(n_attr.sum() or 0)),
        "attributes_mean": dg.MetadataValue.float(float(n_attr.mean() or 0.0)),
        "without_attributes": dg.MetadataValue.int(int((n_attr == 0).sum())),
        "attribute_fields": dg.MetadataValue.text(", ".join(fields)),
        "path_depth_max": dg.MetadataValue.int(
            int(df.get_column("category_path").list.len().max() or 0)
        ),
    }
    return dg.Output(df, metadata=meta)


ASSETS = [ingest_raw, products]
CHECKS: list = []
