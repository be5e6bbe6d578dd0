"""The retrieval domain's assets and checks, assembled: ``hnsw_indexes`` (``index_assets``),
its ``hnsw_recall`` check (``checks``) and ``retrieval_runs`` (``run_assets``); see
docs/retrieval.md. ``catret_pipeline.definitions`` takes ``build_assets(shards)`` and
``CHECKS`` from here (catret-hybrid's assets are ``hybrid_assets``).

The names other packages import from this module (config, shard keys, collection helpers,
the index table's schema) are re-exported from where they now live.
"""

import dagster as dg

from catret_pipeline.retrieval.checks import CHECKS, hnsw_recall
from catret_pipeline.retrieval.collection import collection_asins, held_out_pairs, query_plan
from catret_pipeline.retrieval.config import (
    IndexConfig,
    IndexMergeConfig,
    RecallCheckConfig,
    index_params,
)
from catret_pipeline.retrieval.index_assets import (
    GROUP,
    INDEX_SHARD_GROUP,
    ZERO_SHOT_INPUTS,
    hnsw_indexes,
    index_assets,
    index_config_ops,
    index_metadata,
    index_models,
    index_shard_key,
)
from catret_pipeline.retrieval.index_table import build_index_rows, merge_index_rows
from catret_pipeline.retrieval.run_assets import retrieval_runs
from catret_pipeline.retrieval.schemas import INDEX_COLUMNS, RECALL_K, SUMMARY_COLUMNS

__all__ = [
    "CHECKS",
    "GROUP",
    "INDEX_COLUMNS",
    "INDEX_SHARD_GROUP",
    "RECALL_K",
    "SUMMARY_COLUMNS",
    "ZERO_SHOT_INPUTS",
    "ASSETS",
    "IndexConfig",
    "IndexMergeConfig",
    "RecallCheckConfig",
    "build_assets",
    "build_index_rows",
    "collection_asins",
    "held_out_pairs",
    "hnsw_indexes",
    "hnsw_recall",
    "index_config_ops",
    "index_metadata",
    "index_models",
    "index_params",
    "index_shard_key",
    "merge_index_rows",
    "query_plan",
    "retrieval_runs",
]


def build_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """The retrieval assets. With ``shards > 1`` (``CATRET_EMBED_SHARDS``) ``hnsw_indexes`` is
    one step per possible vector model (group ``index_shards``) and a merge under the same key,
    so the executor builds the models' indexes side by side; 1 gives the single-step graph."""
    return [*index_assets(shards), retrieval_runs]


ASSETS = build_assets(1)
