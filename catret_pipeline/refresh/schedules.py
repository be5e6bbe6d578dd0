"""``catalogue_refresh``: the scheduled catalogue refresh.

Every asset reuses unchanged work (embeddings, images, trained heads), so the daily refresh is
the build job itself; the tag lets ``dagster.yaml``'s run queue keep refreshes from overlapping.
"""

from __future__ import annotations

import dagster as dg

from catret_pipeline.config import BUILD_JOB, REFRESH_TAG


def build_refresh_schedule(cron: str) -> dg.ScheduleDefinition:
    """The schedule on ``cron`` (``CatretConfig.refresh_cron``), stopped until turned on."""
    return dg.ScheduleDefinition(
        name="catalogue_refresh",
        job_name=BUILD_JOB,
        cron_schedule=cron,
        tags={REFRESH_TAG: "true"},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-ingest the raw catalogue and bring every asset up to date.",
    )
