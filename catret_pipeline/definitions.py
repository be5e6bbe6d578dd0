"""The one place where assets, checks, resources, jobs and schedules are assembled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from catret_pipeline.catalogue import assets as catalogue
from catret_pipeline.config import (
    BUILD_JOB,
    ENV_DATA_DIR,
    ENV_EMBED_SHARDS,
    ENV_EXECUTOR,
    ENV_MAX_CONCURRENT,
    ENV_RAW_ROOT,
    EXECUTORS,
    CatretConfig,
)
from catret_pipeline.delivery import assets as delivery
from catret_pipeline.embeddings import assets as embeddings
from catret_pipeline.embeddings.sharding import SHARD_GROUP
from catret_pipeline.encoders.precision import assume_cpu_flags
from catret_pipeline.evaluation import assets as evaluation
from catret_pipeline.fusion import assets as fusion
from catret_pipeline.images import assets as images
from catret_pipeline.ingest import assets as ingest
from catret_pipeline.refresh import assets as refresh
from catret_pipeline.reporting import assets as reporting
from catret_pipeline.retrieval import assets as retrieval
from catret_pipeline.retrieval import hybrid_assets as hybrid
from catret_pipeline.retrieval.index_assets import INDEX_SHARD_GROUP
from catret_pipeline.storage.assets import build_duckdb_catalog_asset
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob


#: Imported once by the multiprocess executor's forkserver (see ``build_executor``).
FORKSERVER_PRELOAD = (
    "dagster._core.executor.multiprocess",
    # What every step child imports to open the instance (SQLAlchemy, alembic): ~1 s a step
    # when each child imported it itself.
    "dagster._core.storage.sqlite_storage",
    "catret_pipeline.definitions",
    "torch",
    "open_clip",
    "sentence_transformers",
)


def stage_definitions(config: CatretConfig) -> list[dg.Definitions]:
    """Each domain's assets, checks, schedules and sensors, in graph order; the stages whose
    steps depend on the shard count (embeddings, HNSW indexes) build them for the configured
    one."""
    shards = config.embed_shards
    return [
        dg.Definitions(assets=ingest.ASSETS, asset_checks=ingest.CHECKS),
        dg.Definitions(assets=catalogue.ASSETS, asset_checks=catalogue.CHECKS),
        dg.Definitions(assets=images.ASSETS, asset_checks=images.CHECKS),
        dg.Definitions(assets=embeddings.build_assets(shards), asset_checks=embeddings.CHECKS),
        dg.Definitions(assets=fusion.ASSETS, asset_checks=fusion.CHECKS),
        dg.Definitions(assets=retrieval.build_assets(shards), asset_checks=retrieval.CHECKS),
        dg.Definitions(assets=hybrid.ASSETS, asset_checks=hybrid.CHECKS),
        dg.Definitions(assets=evaluation.ASSETS, asset_checks=evaluation.CHECKS),
        dg.Definitions(assets=delivery.ASSETS, asset_checks=delivery.CHECKS),
        dg.Definitions(assets=reporting.ASSETS, asset_checks=reporting.CHECKS),
        refresh.refresh_definitions(config.refresh_cron, config.refresh_sensor_interval),
    ]


def resolve_config(
    config: CatretConfig | None = None,
    data_dir: str | None = None,
    raw_root: str | None = None,
    shards: int | None = None,
    executor: str | None = None,
    max_concurrent: int | None = None,
) -> CatretConfig:
    """``config`` (default: read from the environment) with the explicit arguments applied as
    if their variables were set."""
    base = CatretConfig.from_env() if config is None else config
    for name, value in (("shards", shards), ("max_concurrent", max_concurrent)):
        if value is not None and value < (1 if name == "shards" else 0):
            raise ValueError(f"{name} must be >= {1 if name == 'shards' else 0}, got {value}")
    if executor is not None and executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    values = {
        ENV_DATA_DIR: data_dir,
        ENV_RAW_ROOT: raw_root,
        ENV_EMBED_SHARDS: None if shards is None else str(shards),
        ENV_EXECUTOR: executor,
        ENV_MAX_CONCURRENT: None if max_concurrent is None else str(max_concurrent),
    }
    return base.overridden(values) if any(v is not None for v in values.values()) else base


def build_resources(
    data_dir: str | None = None, raw_root: str | None = None, *, config: CatretConfig | None = None
) -> dict:
    """Every resource of the project, chosen once here from the configuration."""
    from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
    from catret_pipeline.images.resources import ImageFetcher
    from catret_pipeline.ingest.resources import XMarketSource

    cfg = resolve_config(config, data_dir, raw_root)
    data = str(cfg.data_dir)
    return {
        "io_manager": ParquetIOManager(data_dir=data, table_store=cfg.table_store),
        "storage": CatretStorage(
            data_dir=data, table_store=cfg.table_store, artefact_store=cfg.artefact_store
        ),
        "xmarket": XMarketSource(root=str(cfg.raw_root)),
        "image_fetcher": ImageFetcher(
            mirror_dir=cfg.image_mirror, allow_hosts=list(cfg.image_allow_hosts)
        ),
        "clip": OpenClipEncoder(**cfg.clip),
        "text_encoder": TextEncoder(**cfg.text),
    }


def build_executor(config: CatretConfig) -> dg.ExecutorDefinition | None:
    """The build job's executor; None keeps Dagster's default (multiprocess for launched runs,
    switchable to in_process in the launchpad)."""
    if config.executor is None:
        return None
    if config.executor == "in_process":
        return dg.in_process_executor
    if config.executor == "multiprocess":
        executor_config: dict = {"max_concurrent": config.max_concurrent}
        start = config.start_method
        if start == "forkserver":
            # Steps fork from one server that has already imported the definitions and the
            # encoder libraries (open_clip / sentence-transformers take 10-20 s to import), instead
            # of each spawned step paying that again. Imports only: no model, thread pool or CUDA
            # context exists in the server when it forks.
            executor_config["start_method"] = {
                "forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}
            }
        else:
            executor_config["start_method"] = {"spawn": {}}
        return dg.multiprocess_executor.configured(executor_config)
    if config.executor == "dask":
        from catret_pipeline.workers.dask_executor import dask_executor_def

        return dask_executor_def(config.dask_address, config.max_concurrent)
    if config.executor == "k8s":
        from catret_pipeline.workers.k8s_executor import k8s_executor_def

        return k8s_executor_def()
    raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {config.executor!r}")


def build_definitions(
    data_dir: str | None = None,
    raw_root: str | None = None,
    shards: int | None = None,
    executor: str | None = None,
    max_concurrent: int | None = None,
    *,
    config: CatretConfig | None = None,
) -> dg.Definitions:
    """Everything, for one configuration (default: read from the environment) with the explicit
    arguments applied.

    ``shards`` (default ``CATRET_EMBED_SHARDS``, 1) splits the product-level embedding assets
    into hash-shard steps and ``hnsw_indexes`` into one step per vector model; ``executor`` /
    ``max_concurrent`` (default ``CATRET_EXECUTOR`` / ``CATRET_MAX_CONCURRENT``) choose how the
    build job runs its steps (see docs/scaling.md).
    """
    cfg = resolve_config(config, data_dir, raw_root, shards, executor, max_concurrent)
    # The CPU is a process-wide fact: an assumed flag set must hold in every step process too.
    assume_cpu_flags(cfg.cpu_flags)
    stages = dg.Definitions.merge(*stage_definitions(cfg))
    assets = list(stages.assets or [])
    checks = list(stages.asset_checks or [])
    # Shard tables are intermediate (their merge is the contract table): no DuckDB view.
    table_keys = [
        key for a in assets for key in a.keys if key.path[0] not in (SHARD_GROUP, INDEX_SHARD_GROUP)
    ]
    catalog = build_duckdb_catalog_asset(table_keys)
    all_assets = [*assets, catalog]

    executor = build_executor(cfg)
    build_job = dg.define_asset_job(
        BUILD_JOB,
        selection=dg.AssetSelection.all(),
        executor_def=executor,
        description="Materialise the whole graph: raw catalogue to metrics, report and DuckDB views.",
    )
    return dg.Definitions(
        assets=all_assets,
        asset_checks=checks,
        resources=build_resources(config=cfg),
        jobs=[build_job],
        schedules=list(stages.schedules or []),
        sensors=list(stages.sensors or []),
        # Also the executor of the UI's "Materialize" buttons (Dagster's implicit asset job),
        # so that CATRET_EXECUTOR=dask sends those runs to the cluster too.
        executor=executor,
    )


def catret_build_job(env: dict[str, str] | None = None) -> dg.JobDefinition:
    """The build job rebuilt from ``CATRET_*`` variables: what each step process of an
    out-of-process executor calls (``dg.reconstructable(catret_build_job)`` or
    :func:`reconstructable_build_job`). ``env`` stands for this process's ``CATRET_*`` variables:
    a forkserver child inherits the server's environment, not the launching process's."""
    config = None if env is None else CatretConfig.from_env(env)
    return build_definitions(config=config).resolve_job_def(BUILD_JOB)


def reconstructable_build_job(config: CatretConfig | None = None) -> ReconstructableJob:
    """The build job for ``dg.execute_job``, carrying ``config`` (default: this process's) to
    every step process."""
    env = (CatretConfig.from_env() if config is None else config).to_env()
    return dg.build_reconstructable_job(
        __name__, catret_build_job.__name__, reconstructable_kwargs={"env": env}
    )


defs = build_definitions()
