"""The one place where assets, checks, resources, jobs and schedules are assembled."""

from __future__ import annotations

import importlib

import dagster as dg

from catret_pipeline import settings
from catret_pipeline.storage.assets import build_duckdb_catalog_asset
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage

#: Stages in graph order; each module exports ASSETS and CHECKS (and may export JOBS, SCHEDULES, SENSORS).
STAGE_MODULES = (
    "catret_pipeline.ingest.assets",
    "catret_pipeline.catalogue.assets",
    "catret_pipeline.images.assets",
    "catret_pipeline.embeddings.assets",
    "catret_pipeline.fusion.assets",
    "catret_pipeline.retrieval.assets",
    "catret_pipeline.evaluation.assets",
    "catret_pipeline.reporting.assets",
    "catret_pipeline.refresh.assets",
)


REFRESH_TAG = "catret/refresh"


def _stages() -> list:
    return [importlib.import_module(name) for name in STAGE_MODULES]


def build_resources(data_dir: str | None = None, raw_root: str | None = None) -> dict:
    from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
    from catret_pipeline.images.resources import ImageFetcher
    from catret_pipeline.ingest.resources import XMarketSource

    data_dir = data_dir or settings.default_data_dir()
    return {
        "io_manager": ParquetIOManager(data_dir=data_dir),
        "storage": CatretStorage(data_dir=data_dir),
        "xmarket": XMarketSource(root=raw_root or settings.default_raw_root()),
        "image_fetcher": ImageFetcher(mirror_dir=settings.default_image_mirror()),
        "clip": OpenClipEncoder(**settings.clip_defaults()),
        "text_encoder": TextEncoder(**settings.text_defaults()),
    }


def build_definitions(data_dir: str | None = None, raw_root: str | None = None) -> dg.Definitions:
    stages = _stages()
    assets = [a for m in stages for a in m.ASSETS]
    checks = [c for m in stages for c in getattr(m, "CHECKS", [])]
    table_keys = [key for a in assets for key in a.keys]
    catalog = build_duckdb_catalog_asset(table_keys)
    all_assets = [*assets, catalog]

    build_job = dg.define_asset_job(
        "catret_build",
        selection=dg.AssetSelection.all(),
        description="Materialise the whole graph: raw catalogue to metrics, report and DuckDB views.",
    )
    jobs = [build_job, *(j for m in stages for j in getattr(m, "JOBS", []))]
    # Every asset reuses unchanged work (embeddings, images, trained heads), so the daily refresh
    # is the build job; the tag lets dagster.yaml's run queue keep refreshes from overlapping.
    refresh = dg.ScheduleDefinition(
        name="catalogue_refresh",
        job=build_job,
        cron_schedule=settings.refresh_cron(),
        tags={REFRESH_TAG: "true"},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-ingest the raw catalogue and bring every asset up to date.",
    )
    schedules = [refresh, *(s for m in stages for s in getattr(m, "SCHEDULES", []))]
    sensors = [s for m in stages for s in getattr(m, "SENSORS", [])]
    return dg.Definitions(
        assets=all_assets,
        asset_checks=checks,
        resources=build_resources(data_dir, raw_root),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
    )


defs = build_definitions()
