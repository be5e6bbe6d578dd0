"""The retrieval domain's assets and checks, assembled: ``hnsw_indexes`` (``index_assets``),
its ``hnsw_recall`` check (``checks``) and ``retrieval_runs`` (``run_assets``); see
docs/retrieval.md. ``catret_pipeline.definitions`` takes ``build_assets(shards)`` and
``CHECKS`` from here (catret-hybrid's assets are ``hybrid_assets``). Other names are imported
from the module that defines them.
"""

import dagster as dg

from catret_pipeline.retrieval.checks import CHECKS
from catret_pipeline.retrieval.index_assets import index_assets
from catret_pipeline.retrieval.run_assets import retrieval_runs

__all__ = ["ASSETS", "CHECKS", "build_assets"]


def build_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """The retrieval assets. With ``shards > 1`` (``CATRET_EMBED_SHARDS``) ``hnsw_indexes`` is
    one step per possible vector model (group ``index_shards``) and a merge under the same key,
    so the executor builds the models' indexes side by side; 1 gives the single-step graph."""
    return [*index_assets(shards), retrieval_runs]


ASSETS = build_assets(1)
