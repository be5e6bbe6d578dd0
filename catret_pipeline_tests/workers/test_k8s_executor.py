"""``CATRET_EXECUTOR=k8s``: dagster-k8s's executor when the optional extra is installed, a clear
configuration error naming the extra when it is not (the default install)."""

from __future__ import annotations

import importlib.util

import pytest

from catret_pipeline.config import CatretConfig, ConfigError
from catret_pipeline.definitions import build_definitions, build_executor
from catret_pipeline.workers.k8s_executor import INSTALL_HINT

HAS_K8S = importlib.util.find_spec("dagster_k8s") is not None


def _config(tmp_path) -> CatretConfig:
    return CatretConfig.from_env({"CATRET_DATA_DIR": str(tmp_path), "CATRET_EXECUTOR": "k8s"})


@pytest.mark.skipif(HAS_K8S, reason="dagster-k8s (extra k8s) is installed here")
def test_without_the_extra_the_error_says_how_to_install_it(tmp_path):
    with pytest.raises(ConfigError, match="uv sync --extra k8s") as info:
        build_executor(_config(tmp_path))
    assert str(info.value).startswith(INSTALL_HINT)


@pytest.mark.skipif(not HAS_K8S, reason="needs the optional extra k8s (dagster-k8s)")
def test_with_the_extra_the_build_job_runs_one_kubernetes_job_per_step(tmp_path):
    defs = build_definitions(config=_config(tmp_path))
    assert defs.resolve_job_def("catret_build").executor_def.name == "k8s"
