"""The embedding assets' run config and the names they share (group, kinds, the CLIP prompt)."""

import dagster as dg
from pydantic import Field

GROUP = "embeddings"
KINDS = {"pytorch", "parquet"}
DEFAULT_CATEGORY_PROMPT = "a photo of a {name}."


class EmbeddingConfig(dg.Config):
    chunk_rows: int = Field(
        default=2048, description="Rows encoded between checkpoint writes (resume granularity)."
    )
    log_every_batches: int = Field(default=10, description="Log progress every N encoder batches.")


class CategoryClipConfig(EmbeddingConfig):
    prompt: str = Field(
        default=DEFAULT_CATEGORY_PROMPT,
        description="CLIP zero-shot prompt; {name} is replaced by the category name.",
    )
