"""Per-modality embedding tables (group ``embeddings``), all incremental.

Each asset reads its own last good table (``storage.read_previous``), re-encodes only rows whose
``content_hash`` or the encoder's ``model_id`` changed, and drops rows of removed keys. While
encoding it writes checkpoint parts under ``checkpoints/<asset key>/`` so that a killed run
resumes where it stopped; the parts are removed once the asset finishes. torch / open_clip /
sentence_transformers load only when something has to be encoded.

With ``build_assets(shards)`` and ``shards > 1`` each product-level asset becomes ``shards``
hash-shard assets (``embedding_shards/<asset>/shard_<i>_of_<n>``, separate steps, so the
multiprocess or a cluster executor runs them side by side) and a merge under the original key;
see docs/scaling.md. Category tables are a few thousand rows and stay unsharded.

The parts: :mod:`.runner` (one table brought up to date: :class:`~.runner.EmbeddingJob`,
:func:`~.runner.run_incremental`), :mod:`.encoding` (the chunk encoder per modality),
:mod:`.product_assets`, :mod:`.shard_assets` (the merge) and :mod:`.category_assets`.
"""

import dagster as dg

from catret_pipeline.embeddings.category_assets import category_clip_embeddings, category_embeddings
from catret_pipeline.embeddings.config import DEFAULT_CATEGORY_PROMPT
from catret_pipeline.embeddings.product_assets import build_product_assets

__all__ = ["ASSETS", "CHECKS", "DEFAULT_CATEGORY_PROMPT", "build_assets"]


def build_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """Every embedding asset, the product-level ones split into ``shards`` hash shards."""
    return [*build_product_assets(shards), category_embeddings, category_clip_embeddings]


ASSETS = build_assets(1)
CHECKS: list = []
