"""Test-wide set-up: the tiny encoders, the markers' meaning, shared sample catalogues.

The encoder defaults (``support.TEST_ENV``) are set before any test module builds resources,
through the same environment variables a user has (read by catret_pipeline.config), so
subprocesses (the CLI tests) inherit them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catret_pipeline_tests.support import TEST_ENV

for _name, _value in TEST_ENV.items():
    os.environ.setdefault(_name, _value)

_INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under integration/ runs the whole pipeline in subprocesses: mark it so
    # `-m "not integration"` gives the quick unit run without a list to keep in sync.
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)
    # The longest files first, each file's own order kept: the parallel workers take files in
    # this order (pyproject.toml), so the few long ones start early instead of ending the run on
    # one worker while the other idles.
    files: dict = {}
    for item in items:
        files[item.fspath] = min(files.get(item.fspath, 2), _length_rank(item))
    items.sort(key=lambda item: files[item.fspath])
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; torch sees none on this machine")
        for item in gpu_items:
            item.add_marker(skip)


def _length_rank(item: pytest.Item) -> int:
    """0: a whole-pipeline test, 1: another slow one, 2: the rest."""
    if item.get_closest_marker("integration"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def _cuda_available() -> bool:
    import torch  # only when a gpu test was collected: most runs never pay the import

    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def small_raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The XMarket root of a 50-product generated catalogue, shared read-only by the tests
    that only need some catalogue to build (none may write under it)."""
    from catret_pipeline.sample.generator import generate_sample

    root = tmp_path_factory.mktemp("small-sample")
    sample = generate_sample(root / "sample", n_products=50, image_size=16, broken_lines=False)
    return sample.out_dir / "xmarket"


@pytest.fixture()
def cli_env_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data dir, raw root, profile or Dagster home inherited from the caller's shell, so
    the CLI under test chooses them itself as on a fresh machine; what the CLI exports for its
    Dagster processes is put back afterwards (set first, so monkeypatch records every name)."""
    from catret_pipeline import config as catret_config

    for name in (
        catret_config.ENV_DATA_DIR,
        catret_config.ENV_RAW_ROOT,
        catret_config.ENV_DAGSTER_HOME,
        catret_config.ENV_PROFILE,
        "HF_HUB_OFFLINE",
        "DAGSTER_DISABLE_TELEMETRY",
    ):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
