"""Serving the materialised catalogue: a read-only store (snapshots swapped atomically on
reload) and the HTTP API / web page of ``catret serve`` on top of it. Nothing here imports
Dagster resources or asset modules; see docs/serving.md."""
