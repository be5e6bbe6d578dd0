"""``CATRET_EXECUTOR=k8s``: dagster-k8s's ``k8s_job_executor``, every step in its own Kubernetes
job (the production path of docs/scaling.md, "Kubernetes").

dagster-k8s is the optional extra ``k8s`` (``uv sync --extra k8s``): it pulls the Kubernetes
client, which a single-machine install never needs. The executor is returned unconfigured so
that its namespace, image, secrets and per-step resources come from the deployment: the
``K8sRunLauncher`` of ``dagster.yaml`` (the executor inherits its settings) or the run config's
``execution: config:`` in the launchpad.
"""

from __future__ import annotations

import dagster as dg

INSTALL_HINT = (
    "CATRET_EXECUTOR=k8s needs dagster-k8s, the optional extra `k8s`: "
    "`uv sync --extra k8s` (or `pip install 'catret[k8s]'`)"
)


def k8s_executor_def() -> dg.ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as exc:
        from catret_pipeline.config import ConfigError

        raise ConfigError(f"{INSTALL_HINT}: {exc}") from None
    return k8s_job_executor
