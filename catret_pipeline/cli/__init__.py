"""``catret``: the command line around the Dagster project.

``catret materialize`` runs the whole asset graph in-process against a persistent Dagster
instance (so the runs show up in ``catret ui``); ``catret ui`` serves the Dagster UI;
``catret search`` queries the materialised indexes; ``catret sql`` queries the DuckDB catalogue;
``catret serve`` serves the catalogue over HTTP (docs/serving.md).

The CLI is an edge: it reads the configuration once (``environment.configure``), flags applied
as if their variables were set, and passes it down; the Dagster processes it starts get it
through the environment (``config.export_env``).
"""

from catret_pipeline.cli.main import main

__all__ = ["main"]
