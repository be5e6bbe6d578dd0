"""The refresh stage: no assets of its own, the schedule and the sensor that start refresh
runs of the build job (the run slot that keeps them apart is ``run_slot.py``)."""

from __future__ import annotations

import dagster as dg

from catret_pipeline.refresh.schedules import build_refresh_schedule
from catret_pipeline.refresh.sensors import build_raw_catalogue_sensor


def refresh_definitions(cron: str, sensor_interval_s: int) -> dg.Definitions:
    return dg.Definitions(
        schedules=[build_refresh_schedule(cron)],
        sensors=[build_raw_catalogue_sensor(sensor_interval_s)],
    )
