"""The one place where assets, checks, resources, jobs and schedules are assembled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from catret_pipeline import settings
from catret_pipeline.catalogue import assets as catalogue
from catret_pipeline.delivery import assets as delivery
from catret_pipeline.embeddings import assets as embeddings
from catret_pipeline.embeddings.sharding import SHARD_GROUP
from catret_pipeline.evaluation import assets as evaluation
from catret_pipeline.fusion import assets as fusion
from catret_pipeline.images import assets as images
from catret_pipeline.ingest import assets as ingest
from catret_pipeline.refresh import assets as refresh
from catret_pipeline.reporting import assets as reporting
from catret_pipeline.retrieval import assets as retrieval
from catret_pipeline.retrieval import hybrid_assets as hybrid
from catret_pipeline.retrieval.assets import INDEX_SHARD_GROUP
from catret_pipeline.storage.assets import build_duckdb_catalog_asset
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob

REFRESH_TAG = settings.REFRESH_TAG
ENV_PREFIX = "CATRET_"

#: Imported once by the multiprocess executor's forkserver (see ``build_executor``).
FORKSERVER_PRELOAD = (
    "dagster._core.executor.multiprocess",
    "catret_pipeline.definitions",
    "torch",
    "open_clip",
    "sentence_transformers",
)


def stage_definitions(shards: int = 1) -> list[dg.Definitions]:
    """Each domain's assets, checks and sensors, in graph order; the stages whose steps depend
    on the shard count (embeddings, HNSW indexes) build them for ``shards``."""
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
        dg.Definitions(sensors=refresh.SENSORS),
    ]


def build_resources(data_dir: str | None = None, raw_root: str | None = None) -> dict:
    from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
    from catret_pipeline.images.resources import ImageFetcher
    from catret_pipeline.ingest.resources import XMarketSource

    data_dir = data_dir or settings.default_data_dir()
    table_store = settings.default_table_store()
    return {
        "io_manager": ParquetIOManager(data_dir=data_dir, table_store=table_store),
        "storage": CatretStorage(data_dir=data_dir, table_store=table_store),
        "xmarket": XMarketSource(root=raw_root or settings.default_raw_root()),
        "image_fetcher": ImageFetcher(
            mirror_dir=settings.default_image_mirror(),
            allow_hosts=settings.image_allow_hosts(),
        ),
        "clip": OpenClipEncoder(**settings.clip_defaults()),
        # Bundled split-zip models are assembled under this data dir unless configured.
        "text_encoder": TextEncoder(
            **{"cache_dir": str(Path(data_dir) / "model_cache"), **settings.text_defaults()}
        ),
    }


def build_executor(
    executor: str | None = None, max_concurrent: int | None = None
) -> dg.ExecutorDefinition | None:
    """The build job's executor; None keeps Dagster's default (multiprocess for launched runs,
    switchable to in_process in the launchpad)."""
    executor = executor or settings.executor()
    if executor is None:
        return None
    if executor == "in_process":
        return dg.in_process_executor
    if executor == "multiprocess":
        limit = settings.max_concurrent() if max_concurrent is None else max_concurrent
        if limit < 0:
            raise ValueError(f"max_concurrent must be >= 0, got {limit}")
        config: dict = {"max_concurrent": limit}
        start = settings.start_method()
        if start == "forkserver":
            # Steps fork from one server that has already imported the definitions and the
            # encoder libraries (open_clip / sentence-transformers take 10-20 s to import), instead
            # of each spawned step paying that again. Imports only: no model, thread pool or CUDA
            # context exists in the server when it forks.
            config["start_method"] = {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}
        else:
            config["start_method"] = {"spawn": {}}
        return dg.multiprocess_executor.configured(config)
    raise ValueError(f"executor must be one of {list(settings.EXECUTORS)}, got {executor!r}")


def build_definitions(
    data_dir: str | None = None,
    raw_root: str | None = None,
    shards: int | None = None,
    executor: str | None = None,
    max_concurrent: int | None = None,
) -> dg.Definitions:
    """Everything, for one data dir / raw root.

    ``shards`` (default ``CATRET_EMBED_SHARDS``, 1) splits the product-level embedding assets
    into hash-shard steps and ``hnsw_indexes`` into one step per vector model; ``executor`` /
    ``max_concurrent`` (default ``CATRET_EXECUTOR`` / ``CATRET_MAX_CONCURRENT``) choose how the
    build job runs its steps (see docs/scaling.md).
    """
    shards = settings.embed_shards() if shards is None else shards
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    stages = dg.Definitions.merge(*stage_definitions(shards))
    assets = list(stages.assets or [])
    checks = list(stages.asset_checks or [])
    # Shard tables are intermediate (their merge is the contract table): no DuckDB view.
    table_keys = [
        key for a in assets for key in a.keys if key.path[0] not in (SHARD_GROUP, INDEX_SHARD_GROUP)
    ]
    catalog = build_duckdb_catalog_asset(table_keys)
    all_assets = [*assets, catalog]

    build_job = dg.define_asset_job(
        "catret_build",
        selection=dg.AssetSelection.all(),
        executor_def=build_executor(executor, max_concurrent),
        description="Materialise the whole graph: raw catalogue to metrics, report and DuckDB views.",
    )
    jobs = [build_job]
    # Every asset reuses unchanged work (embeddings, images, trained heads), so the daily refresh
    # is the build job; the tag lets dagster.yaml's run queue keep refreshes from overlapping.
    refresh_schedule = dg.ScheduleDefinition(
        name="catalogue_refresh",
        job=build_job,
        cron_schedule=settings.refresh_cron(),
        tags={REFRESH_TAG: "true"},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-ingest the raw catalogue and bring every asset up to date.",
    )
    schedules = [refresh_schedule]
    sensors = list(stages.sensors or [])
    return dg.Definitions(
        assets=all_assets,
        asset_checks=checks,
        resources=build_resources(data_dir, raw_root),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
    )


def catret_build_job(env: dict[str, str] | None = None) -> dg.JobDefinition:
    """The build job rebuilt from ``CATRET_*`` variables: what each step process of an
    out-of-process executor calls (``dg.reconstructable(catret_build_job)`` or
    :func:`reconstructable_build_job`). ``env`` replaces this process's ``CATRET_*`` variables
    first: a forkserver child inherits the server's environment, not the launching process's."""
    if env is not None:
        for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
            del os.environ[name]
        os.environ.update(env)
    return build_definitions().resolve_job_def("catret_build")


def reconstructable_build_job() -> ReconstructableJob:
    """``catret_build`` for ``dg.execute_job``, carrying this process's ``CATRET_*`` settings
    (data dir, raw root, shards, encoders, executor) to every step process."""
    env = {name: value for name, value in os.environ.items() if name.startswith(ENV_PREFIX)}
    return dg.build_reconstructable_job(
        __name__, catret_build_job.__name__, reconstructable_kwargs={"env": env}
    )


defs = build_definitions()
