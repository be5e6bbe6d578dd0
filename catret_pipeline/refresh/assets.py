"""The refresh stage: no assets of its own, only the sensor that starts refresh runs."""

from catret_pipeline.refresh.sensors import raw_catalogue_sensor

ASSETS: list = []
CHECKS: list = []
SENSORS = [raw_catalogue_sensor]
