"""The merge of a sharded product-level embedding: ``shards`` shard tables back into one.

With ``CATRET_EMBED_SHARDS`` > 1 each product-level embedding is ``shards`` assets
``embedding_shards/<asset>/shard_<i>_of_<n>`` (:mod:`.product_assets`) and the merge below under
the unsharded key, in the unsharded table's row order (see docs/scaling.md).
"""

from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from catret_pipeline.embeddings.config import GROUP
from catret_pipeline.embeddings.incremental import embedding_dim
from catret_pipeline.embeddings.sharding import SHARD_GROUP, merge_shards, shard_name
from catret_pipeline.fan_out import FanOut
from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.table_summary import read_summary

if TYPE_CHECKING:
    from catret_pipeline.embeddings.product_assets import ProductEmbedding

#: Summed over the shards in the merge's metadata.
COUNTS = ("encoded", "reused", "dropped", "failed")

#: What a shard keeps of its run metadata in its own file, for the merge to read.
SHARD_SUMMARY = (*COUNTS, "rate", "model_id", "failures")


def shard_key(asset: str, shard: int, shards: int) -> dg.AssetKey:
    """``embedding_shards/<asset>/shard_<i>_of_<n>``: a folder per asset in the UI's catalogue and
    ``assets/embedding_shards/<asset>/`` on disk (no DuckDB view: not a contract table)."""
    return dg.AssetKey([SHARD_GROUP, asset, shard_name(shard, shards)])


def _merge_metadata(storage: CatretStorage, keys: list[dg.AssetKey]) -> dict:
    """Encoded / reused / dropped / failed summed over the shard tables being merged, from the
    summary each shard keeps in its own file (``storage.table_summary``), so the totals
    describe exactly the rows merged, whichever Dagster instance built them."""
    totals = dict.fromkeys(COUNTS, 0)
    rows, failures, model_ids = [], [], []
    for key in keys:
        summary = read_summary(storage.asset_path(*key.path))
        for name in totals:
            totals[name] += int(summary.get(name, 0))
        model_ids.append(str(summary.get("model_id", "")))
        shard = key.path[-1]
        rows.append([shard, *(summary.get(n, 0) for n in (*totals, "rate"))])
        if summary.get("failures"):
            failures.append(f"**{shard}**\n\n{summary['failures']}")
    meta = {name: dg.MetadataValue.int(v) for name, v in totals.items()}
    meta["shards"] = dg.MetadataValue.int(len(keys))
    meta["per_shard"] = dg.MetadataValue.md(markdown_table(["shard", *totals, "rows/s"], rows))
    known = sorted({m for m in model_ids if m})
    if known:
        meta["model_id"] = dg.MetadataValue.text(", ".join(known))
    if failures:
        meta["failures"] = dg.MetadataValue.md("\n\n".join(failures))
    return meta


def _merge(
    spec: "ProductEmbedding",
    context: dg.AssetExecutionContext,
    products: pl.LazyFrame,
    product_images: pl.LazyFrame | None,
    tables: dict[str, pl.DataFrame],
    fan: FanOut,
) -> dg.Output:
    current = spec.current(context, products, product_images)
    ordered, _ = fan.split(tables)
    merged, stale = merge_shards(ordered, current.select("asin"), ["asin"])
    if stale:
        context.log.warning(
            f"{spec.name}: {stale} shard rows are no longer in the input and were left out; "
            "materialise the shard assets together with the merge"
        )
    meta = _merge_metadata(context.resources.storage, list(fan.keys))
    meta["stale_rows_left_out"] = dg.MetadataValue.int(stale)
    dim = embedding_dim(merged)
    if dim is not None:
        meta["dim"] = dg.MetadataValue.int(dim)
    if spec.finish is not None:
        spec.finish(merged, meta)
    return dg.Output(merged, metadata=meta)


def shard_fan_out(name: str, shards: int) -> FanOut:
    """The ``shards`` shard keys of the embedding table ``name``, in shard order."""
    return FanOut(tuple(shard_key(name, i, shards) for i in range(shards)))


def merge_asset(spec: "ProductEmbedding", fan: FanOut) -> dg.AssetsDefinition:
    """``spec``'s table under its own key, merged from the shard assets of ``fan``."""
    shards = len(fan.keys)
    options = {
        "name": spec.name,
        "group_name": GROUP,
        "kinds": {"polars", "parquet"},
        "description": f"{spec.description} Merged from {shards} hash shards "
        f"(group {SHARD_GROUP}), rows in the same order as the unsharded asset.",
        "ins": fan.ins,
        "required_resource_keys": {"storage"},
    }
    if spec.needs_images:

        @dg.asset(**options)
        def merge_with_images(
            context: dg.AssetExecutionContext,
            products: pl.LazyFrame,
            product_images: pl.LazyFrame,
            **shard_tables: pl.DataFrame,
        ) -> dg.Output:
            return _merge(spec, context, products, product_images, shard_tables, fan)

        return merge_with_images

    @dg.asset(**options)
    def merge_from_products(
        context: dg.AssetExecutionContext, products: pl.LazyFrame, **shard_tables: pl.DataFrame
    ) -> dg.Output:
        return _merge(spec, context, products, None, shard_tables, fan)

    return merge_from_products
