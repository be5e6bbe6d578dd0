"""The CLI's configuration: flags over the environment, checked before anything is created,
then the data dir, the Dagster instance's home and the bundled sample made ready."""

from __future__ import annotations

import argparse
from pathlib import Path

from catret_pipeline.config import (
    ENV_DATA_DIR,
    ENV_EMBED_SHARDS,
    ENV_EXECUTOR,
    ENV_PROFILE,
    ENV_RAW_ROOT,
    ENV_SAMPLE_SHAPE,
    CatretConfig,
    ConfigError,
    export_env,
)

DAGSTER_YAML = """\
# Written by catret on first use; edit freely (see docs/operations.md).
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 4
  tag_concurrency_limits:
    # a catalogue refresh never overlaps another one
    - key: catret/refresh
      limit: 1
run_retries:
  enabled: false
"""


def flag_values(args: argparse.Namespace) -> dict[str, str | None]:
    """The variables the flags of ``args`` stand for (None: flag not given)."""
    shards = getattr(args, "shards", None)
    if shards is not None and shards < 1:
        raise SystemExit("--shards must be >= 1")
    return {
        ENV_DATA_DIR: _absolute(getattr(args, "data_dir", None)),
        ENV_RAW_ROOT: _absolute(getattr(args, "raw_root", None)),
        ENV_PROFILE: getattr(args, "profile", None) or None,
        ENV_EMBED_SHARDS: None if shards is None else str(shards),
        ENV_EXECUTOR: getattr(args, "executor", None) or None,
        ENV_SAMPLE_SHAPE: getattr(args, "sample_shape", None) or None,
    }


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def configure(args: argparse.Namespace, create: bool = True) -> CatretConfig:
    """The configuration of this command (environment + flags; a bad value is a
    :class:`ConfigError`), made this process's environment for the Dagster processes it starts.
    ``create``: also create the data dir and the instance's home with its ``dagster.yaml``."""
    config = CatretConfig.from_env().overridden(flag_values(args))
    export_env(config, offline_hub=config.profile == "offline")
    config = config.overridden({"DAGSTER_HOME": str(config.instance_home)})
    if create:
        prepare_data_dir(config)
    return config


def prepare_data_dir(config: CatretConfig) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    home = config.instance_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        from catret_pipeline.storage.atomic import atomic_write_text

        # Atomic: a second first run (or the UI) reading it mid-write would see half a config.
        atomic_write_text(home / "dagster.yaml", DAGSTER_YAML)


def check_raw_root(config: CatretConfig) -> None:
    """Refuse (``ConfigError``) a raw root that does not exist, is not a directory or holds no
    metadata file, before anything is generated or run. The bundled sample is generated on
    first use, so it is not checked here."""
    if config.uses_bundled_sample:
        return
    from catret_pipeline.ingest.resources import XMarketSource

    try:
        XMarketSource(root=str(config.raw_root)).metadata_files()
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise ConfigError(f"raw root: {exc}") from None


def ensure_bundled_sample(config: CatretConfig, n_products: int | None = None) -> None:
    """Generate the sample catalogue when the configured raw root is the bundled sample."""
    if not config.uses_bundled_sample:
        return
    from catret_pipeline.sample.generator import ensure_sample

    n = n_products or config.sample_products
    summary = ensure_sample(config.sample_root, n_products=n, shape=config.sample_shape)
    print(
        f"sample catalogue ({config.sample_shape} shape): {summary.n_products} products in "
        f"{summary.n_categories} categories under {config.sample_root}"
    )


def describe(config: CatretConfig) -> str:
    return f"data dir {config.data_dir}, raw root {config.raw_root}, profile {config.profile}"
