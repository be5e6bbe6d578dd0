"""Dagster run config of the retrieval assets and checks.

``IndexConfig`` declares no HNSW parameter of its own: it derives from the option groups of
``hnsw_params`` (graph, recall, update), which also make up :class:`HnswParams` and
:class:`UpdatePolicy`, so every name, default, bound and description is declared once and the
run config keys are those field names (``M``, ``ef_construction``, ``ef``, ``seed``,
``ef_max``, ``recall_sample_queries``, ``recall_bound``, ``rebuild_fraction``,
``max_deleted_fraction``, ``force_rebuild``) plus ``threads``.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from catret_pipeline.retrieval.hnsw_params import (
    GraphOptions,
    HnswParams,
    RecallOptions,
    UpdateOptions,
    UpdatePolicy,
    hnsw_params,
    update_policy,
)
from catret_pipeline.retrieval.schemas import ACCEPTANCE_COLUMNS


# Fields come in reverse base order: graph, recall, update options, then threads.
class IndexConfig(dg.Config, UpdateOptions, RecallOptions, GraphOptions):
    """HNSW build and acceptance settings (defaults and their reasons: docs/retrieval.md)."""

    threads: int = Field(
        default=1,
        description="Build threads; 1 gives the same graph on every run (fixed seed).",
    )


class IndexMergeConfig(dg.Config):
    """No options: with per-model index steps, IndexConfig goes to each
    ``index_shards__hnsw_indexes__<model>`` op (``index_config_ops`` writes that run config).
    Declared empty so that IndexConfig values given to this op are refused, not ignored."""


class RecallCheckConfig(dg.Config):
    """Overrides for the hnsw_recall check; unset values come from the hnsw_indexes table (the
    settings its indexes were built with)."""

    recall_bound: float | None = Field(default=None, description="Fail below this recall@10.")
    recall_sample_queries: int | None = Field(default=None, description="Sampled queries.")
    seed: int | None = Field(default=None, description="Seed of the query sample.")


def index_params(config: IndexConfig) -> tuple[HnswParams, UpdatePolicy]:
    """The library parameters of an IndexConfig (the same fields, copied by name)."""
    return hnsw_params(config), update_policy(config)


def acceptance_settings(config: IndexConfig) -> dict:
    """The settings an index table row records for the recall check (``ACCEPTANCE_COLUMNS``)."""
    return {name: getattr(config, name) for name in ACCEPTANCE_COLUMNS}
