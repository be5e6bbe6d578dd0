"""The parameters of the HNSW indexes, declared once.

Each group of options is a pydantic model holding its fields, defaults, bounds and the
descriptions the Dagster UI shows: :class:`GraphOptions` (graph and search), :class:`UpdateOptions`
(when a saved index is updated in place and when it is rebuilt) and :class:`RecallOptions` (the
recall the build tunes ``ef`` for and the ``hnsw_recall`` check asserts). The library objects
add what only the code sets - :class:`HnswParams` (+ ``space``), :class:`UpdatePolicy`
(+ ``tolerance``) - and the Dagster config ``IndexConfig`` (``retrieval/config.py``) derives from
all three groups, so its run config keys are these field names. No Dagster import here: serving
builds indexes with this module alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Space = Literal["ip", "cosine"]
Action = Literal["built", "updated", "unchanged"]

#: Max abs difference between a stored and a new unit vector still read as "the same vector".
CHANGE_TOLERANCE = 1e-6


class GraphOptions(BaseModel):
    """Graph and search options (defaults and their measurements: docs/retrieval.md)."""

    M: int = Field(default=16, ge=2, description="HNSW graph degree (hnswlib M).")
    ef_construction: int = Field(
        default=200, ge=1, description="Candidate list size while building."
    )
    ef: int = Field(
        default=100,
        ge=1,
        description="Candidate list size while searching; raised to k for deeper queries, and "
        "doubled (up to ef_max) while a sample of queries misses recall_bound.",
    )
    seed: int = Field(default=0, description="Seeds the HNSW level draws and the recall sample.")


class UpdateOptions(BaseModel):
    """When a saved index is updated in place and when it is rebuilt (docs/retrieval.md)."""

    rebuild_fraction: float = Field(
        default=0.5,
        ge=0,
        description="Rebuild an index instead of updating it in place when added + removed + "
        "changed items exceed this share of its previous items (a retrained model changes "
        "every vector).",
    )
    max_deleted_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Rebuild when deleted (tombstoned) slots left after an update would exceed "
        "this share of the graph; search still walks through them.",
    )
    force_rebuild: bool = Field(
        default=False, description="Rebuild every index from scratch, whatever changed."
    )


class RecallOptions(BaseModel):
    """The recall an index must reach: what the build tunes ``ef`` for and the check asserts."""

    ef_max: int = Field(
        default=1000,
        ge=1,
        description="Largest ef the build may raise the search ef to, to meet recall_bound.",
    )
    recall_sample_queries: int = Field(
        default=200,
        description="Product vectors (and up to as many category vectors) sampled per index "
        "to measure recall@10 against exact search.",
    )
    recall_bound: float = Field(
        default=0.98, description="The hnsw_recall check fails below this recall@10."
    )


class HnswParams(GraphOptions):
    """Graph and search parameters of one index.

    Defaults (hnswlib 0.8, 512-d unit vectors, docs/retrieval.md): M=16 and ef_construction=200
    gave recall@10 0.996 at ef 40 and 0.9999 at ef 80 on 100k clustered vectors (0.988 at ef 80
    on 1M), so ef=100 leaves margin at our collection sizes. ``ef`` is raised to k by
    :func:`~catret_pipeline.retrieval.hnsw_search.search` whenever a deeper list is asked for.
    ``space``: ``"ip"`` on unit vectors, or ``"cosine"`` (hnswlib normalises; same scores).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: Space = "ip"


class UpdatePolicy(UpdateOptions):
    """:class:`UpdateOptions` plus ``tolerance``: the max abs difference under which a unit
    vector reads as unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tolerance: float = Field(default=CHANGE_TOLERANCE, ge=0)


def _pick(options: BaseModel, group: type[BaseModel]) -> dict:
    return {name: getattr(options, name) for name in group.model_fields}


def hnsw_params(options: GraphOptions) -> HnswParams:
    """The :class:`HnswParams` of any model holding the graph options (e.g. ``IndexConfig``)."""
    return HnswParams(**_pick(options, GraphOptions))


def update_policy(options: UpdateOptions) -> UpdatePolicy:
    """The :class:`UpdatePolicy` of any model holding the update options."""
    return UpdatePolicy(**_pick(options, UpdateOptions))
