"""The category-level embedding assets: the tree's names, by the sentence encoder and by CLIP's
text tower under a zero-shot prompt. A few thousand rows: never sharded."""

import hashlib

import dagster as dg
import polars as pl

from catret_pipeline.embeddings.config import GROUP, KINDS, CategoryClipConfig, EmbeddingConfig
from catret_pipeline.embeddings.encoding import ChunkEncoder, ClipText, SentenceText
from catret_pipeline.embeddings.runner import EmbeddingJob, run_incremental
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.table_summary import summary_fields

KEYS = ("node_id", "name")


def sha1_text(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def category_texts(category_tree: pl.LazyFrame, template: str | None) -> pl.DataFrame:
    """node_id, name, the encoder's ``text`` (the name, or ``template`` with {name} replaced)
    and its ``content_hash``."""
    nodes = category_tree.select("node_id", "name").collect()
    names = nodes["name"].fill_null("").to_list()
    texts = [template.replace("{name}", n) for n in names] if template else names
    hashes = pl.Series("content_hash", [sha1_text(t) for t in texts], dtype=pl.String)
    return nodes.with_columns(pl.Series("text", texts, dtype=pl.String), hashes)


def _embed_categories(
    context, storage: CatretStorage, name: str, current: pl.DataFrame, encoder: ChunkEncoder, config
) -> tuple[pl.DataFrame, dict]:
    result = run_incremental(
        context.log, storage, EmbeddingJob(name, current, KEYS, encoder), config
    )
    return result.table, result.metadata()


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    description="Sentence-encoder embedding of every category name in the tree (query side).",
)
def category_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    text_encoder: TextEncoder,
    storage: CatretStorage,
    category_tree: pl.LazyFrame,
) -> dg.Output:
    current = category_texts(category_tree, None)
    encoder = SentenceText(text_encoder, "text")
    table, meta = _embed_categories(
        context, storage, "category_embeddings", current, encoder, config
    )
    return dg.Output(table, metadata=meta)


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    description="CLIP text-tower embedding of a prompt per category name (CLIP zero-shot baseline).",
    # The prompt travels in the file: `catret search` and the serving store encode new names
    # with the same prompt without asking the Dagster instance.
    metadata=summary_fields("prompt"),
)
def category_clip_embeddings(
    context: dg.AssetExecutionContext,
    config: CategoryClipConfig,
    clip: OpenClipEncoder,
    storage: CatretStorage,
    category_tree: pl.LazyFrame,
) -> dg.Output:
    if "{name}" not in config.prompt:
        raise ValueError(f"category prompt must contain {{name}}, got {config.prompt!r}")
    current = category_texts(category_tree, config.prompt)
    encoder = ClipText(clip, "text")
    table, meta = _embed_categories(
        context, storage, "category_clip_embeddings", current, encoder, config
    )
    meta["prompt"] = dg.MetadataValue.text(config.prompt)
    return dg.Output(table, metadata=meta)
