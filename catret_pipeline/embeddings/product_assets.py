"""The product-level embedding assets (images, titles twice, attributes), optionally hash-sharded.

Each is a :class:`ProductEmbedding` (its input rows, its encoder) made into an asset; with
``shards > 1`` into ``shards`` shard assets and a merge (:mod:`.shard_assets`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import polars as pl

from catret_pipeline.embeddings.config import GROUP, KINDS, EmbeddingConfig
from catret_pipeline.embeddings.encoding import (
    ChunkEncoder,
    ClipImages,
    ClipText,
    SentenceAttributes,
    SentenceText,
)
from catret_pipeline.embeddings.runner import EmbeddingJob, run_incremental
from catret_pipeline.embeddings.shard_assets import (
    SHARD_SUMMARY,
    merge_asset,
    shard_fan_out,
    shard_key,
)
from catret_pipeline.embeddings.sharding import SHARD_GROUP, shard_mask
from catret_pipeline.fan_out import assemble
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.table_summary import summary_fields

#: Current input of one product-level embedding: (context, products, product_images or None).
CurrentFn = Callable[..., pl.DataFrame]


@dataclass(frozen=True)
class ProductEmbedding:
    """One product-level embedding asset: its input rows and its encoder."""

    name: str
    description: str
    resource: str  # resource key: "clip" or "text_encoder"
    current: CurrentFn
    encoder: Callable[[object, CatretStorage], ChunkEncoder]  # (resource, storage)
    needs_images: bool = False
    finish: Callable[[pl.DataFrame, dict], None] | None = None  # table-derived metadata


def _image_current(context, products: pl.LazyFrame, product_images: pl.LazyFrame) -> pl.DataFrame:
    asins = products.select("asin")
    current = (
        product_images.filter(pl.col("status") == "ok")
        .join(asins, on="asin", how="semi")
        .select("asin", pl.col("sha256").alias("content_hash"), "cache_path")
        .collect()
    )
    dup = current["asin"].is_duplicated()
    if dup.any():
        context.log.warning(
            f"image_embeddings: {int(dup.sum())} duplicate ok image rows; keeping the first per asin"
        )
        current = current.unique(subset=["asin"], keep="first", maintain_order=True)
    return current


def _titles(context, products: pl.LazyFrame, product_images=None) -> pl.DataFrame:
    return products.select("asin", "title", pl.col("title_hash").alias("content_hash")).collect()


def _attributes_current(context, products: pl.LazyFrame, product_images=None) -> pl.DataFrame:
    return products.select(
        "asin", "attributes", pl.col("attributes_hash").alias("content_hash")
    ).collect()


def _attributes_finish(table: pl.DataFrame, meta: dict) -> None:
    meta["without_attributes"] = dg.MetadataValue.int(int((~table["has_attributes"]).sum()))


PRODUCT_EMBEDDINGS: tuple[ProductEmbedding, ...] = (
    ProductEmbedding(
        name="image_embeddings",
        description="CLIP image-tower embedding per product with an ok cached image (none otherwise).",
        resource="clip",
        current=_image_current,
        encoder=ClipImages,
        needs_images=True,
    ),
    ProductEmbedding(
        name="title_embeddings",
        description="Sentence-encoder (MiniLM / MPNet) embedding of each product title.",
        resource="text_encoder",
        current=_titles,
        encoder=lambda enc, storage: SentenceText(enc, "title"),
    ),
    ProductEmbedding(
        name="title_clip_embeddings",
        description="CLIP text-tower embedding of each product title.",
        resource="clip",
        current=_titles,
        encoder=lambda clip, storage: ClipText(clip, "title"),
    ),
    ProductEmbedding(
        name="attribute_embeddings",
        description="Mean of the sentence-encoder embeddings of a product's attribute strings "
        "(re-normalised); zero vector and has_attributes=false when it has none.",
        resource="text_encoder",
        current=_attributes_current,
        encoder=lambda enc, storage: SentenceAttributes(enc),
        finish=_attributes_finish,
    ),
)


def product_job(
    spec: ProductEmbedding,
    current: pl.DataFrame,
    encoder: ChunkEncoder,
    shard: tuple[int, int] | None = None,
) -> EmbeddingJob:
    """The job of ``spec``'s table, or of one hash shard of it: the shard's rows of ``current``,
    its own previous table, and the merged table's rows to reuse (so a new shard count, or a
    shard whose own table is older than the merge, re-encodes nothing that is unchanged)."""
    if shard is None:
        return EmbeddingJob(spec.name, current, ("asin",), encoder)
    key_path = tuple(shard_key(spec.name, *shard).path)
    return EmbeddingJob(
        name="/".join(key_path),
        current=current.filter(shard_mask(current["asin"], *shard)),
        keys=("asin",),
        encoder=encoder,
        key_path=key_path,
        reuse_from=(spec.name,),
    )


def _embed_products(
    spec: ProductEmbedding,
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    products: pl.LazyFrame,
    product_images: pl.LazyFrame | None,
    shard: tuple[int, int] | None,
) -> dg.Output:
    """One product-level embedding table, or the rows of one hash shard of it."""
    storage: CatretStorage = context.resources.storage
    encoder = spec.encoder(getattr(context.resources, spec.resource), storage)
    current = spec.current(context, products, product_images)
    result = run_incremental(
        context.log, storage, product_job(spec, current, encoder, shard), config
    )
    meta = result.metadata()
    if shard is not None:
        meta["shard"] = dg.MetadataValue.text(f"{shard[0]} of {shard[1]}")
    if spec.finish is not None:
        spec.finish(result.table, meta)
    return dg.Output(result.table, metadata=meta)


def _product_asset(
    spec: ProductEmbedding, shard: tuple[int, int] | None = None
) -> dg.AssetsDefinition:
    if shard is None:
        options = {"name": spec.name, "group_name": GROUP, "description": spec.description}
    else:
        options = {
            "key": shard_key(spec.name, *shard),
            "group_name": SHARD_GROUP,
            "description": f"Hash shard {shard[0]} of {shard[1]} of {spec.name} "
            f"(asins with sha1(asin) mod {shard[1]} == {shard[0]}). {spec.description}",
            "metadata": summary_fields(*SHARD_SUMMARY),
        }
    options |= {"kinds": KINDS, "required_resource_keys": {spec.resource, "storage"}}
    if spec.needs_images:

        @dg.asset(**options)
        def with_images(
            context: dg.AssetExecutionContext,
            config: EmbeddingConfig,
            products: pl.LazyFrame,
            product_images: pl.LazyFrame,
        ) -> dg.Output:
            return _embed_products(spec, context, config, products, product_images, shard)

        return with_images

    @dg.asset(**options)
    def from_products(
        context: dg.AssetExecutionContext, config: EmbeddingConfig, products: pl.LazyFrame
    ) -> dg.Output:
        return _embed_products(spec, context, config, products, None, shard)

    return from_products


def build_product_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """The product-level embedding assets; with ``shards > 1`` each is ``shards`` hash-shard
    assets (group ``embedding_shards``, separate steps that executors run side by side) plus a
    merge under the unsharded key that everything downstream depends on."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return [_product_asset(spec) for spec in PRODUCT_EMBEDDINGS]
    out: list[dg.AssetsDefinition] = []
    for spec in PRODUCT_EMBEDDINGS:
        fan = shard_fan_out(spec.name, shards)
        parts = [_product_asset(spec, (i, shards)) for i in range(shards)]
        out.extend(assemble(fan, parts, merge_asset(spec, fan)))
    return out
