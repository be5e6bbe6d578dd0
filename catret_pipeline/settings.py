"""Process-wide defaults, overridable by environment variables (the CLI sets them from flags).

Everything else is configured through Dagster resources and ``Config`` classes; these are
environment-level because the webserver, the daemon and the CLI must agree on them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A bad setting (environment variable or flag): the CLI prints the message as one line and
    exits non-zero, before any work starts."""


#: Run tag of every catalogue refresh (schedule, sensor, ``catret materialize``); the CLI's
#: ``dagster.yaml`` limits runs with it to one at a time.
REFRESH_TAG = "catret/refresh"

#: Where every asset's Parquet file, index, model artefact and image cache lives.
ENV_DATA_DIR = "CATRET_DATA_DIR"
#: Root of an XMarket-layout catalogue (``{market}/{Category}/metadata_*.json.gz``).
ENV_RAW_ROOT = "CATRET_RAW_ROOT"
#: Local directory of pre-downloaded images matched by file name (empty: none).
ENV_IMAGE_MIRROR = "CATRET_IMAGE_MIRROR"
#: Non-public hosts / networks image downloads may reach (comma- or space-separated host
#: names, IPs, CIDRs; ``*`` = no check). Unset / empty: public addresses only.
ENV_IMAGE_ALLOW_HOSTS = "CATRET_IMAGE_ALLOW_HOSTS"


def default_data_dir() -> str:
    return os.environ.get(ENV_DATA_DIR) or str(REPO_ROOT / "data")


#: Where the table assets (Parquet) live: unset / "" = ``$CATRET_DATA_DIR/assets``; else a URL
#: (``file:///abs/dir``, ``s3://bucket/prefix``, ``gs://...``, ``memory://...``) read and written
#: through universal_pathlib / fsspec. Binary artefacts stay under the data dir.
ENV_TABLE_STORE = "CATRET_TABLE_STORE"


def default_table_store() -> str:
    return os.environ.get(ENV_TABLE_STORE, "").strip()


#: Category tree of the generated sample (``--sample-shape``): ``sample`` = the hand-written
#: vocabulary tree (default), ``paper`` = a procedural tree shaped like the paper's XMarket US
#: set (5,471 categories on 9 levels; docs/sample.md).
ENV_SAMPLE_SHAPE = "CATRET_SAMPLE_SHAPE"
SAMPLE_SHAPES = ("sample", "paper")


def sample_shape() -> str:
    """``CATRET_SAMPLE_SHAPE``: ``sample`` (default) or ``paper``."""
    name = os.environ.get(ENV_SAMPLE_SHAPE, "").strip() or SAMPLE_SHAPES[0]
    if name not in SAMPLE_SHAPES:
        raise ConfigError(f"{ENV_SAMPLE_SHAPE}={name!r}: expected one of {list(SAMPLE_SHAPES)}")
    return name


def sample_root() -> Path:
    """Where the bundled sample catalogue is generated on first use."""
    return Path(default_data_dir()) / "sample"


def default_raw_root() -> str:
    return os.environ.get(ENV_RAW_ROOT) or str(sample_root() / "xmarket")


def default_image_mirror() -> str:
    if ENV_IMAGE_MIRROR in os.environ:
        return os.environ[ENV_IMAGE_MIRROR]
    return str(sample_root() / "images")


def image_allow_hosts() -> list[str]:
    """``CATRET_IMAGE_ALLOW_HOSTS`` as a list of entries, each checked (``ConfigError``)."""
    from catret_pipeline.images.addresses import AllowList

    text = os.environ.get(ENV_IMAGE_ALLOW_HOSTS, "")
    try:
        AllowList.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{ENV_IMAGE_ALLOW_HOSTS}: {exc}") from None
    return [e for e in text.replace(",", " ").split() if e]


#: ``offline`` (default): real pretrained encoders that ship inside PyPI packages, so everything
#: runs with no network: the paper's all-mpnet-base-v2 (assembled once from split-zip packages
#: into ``<data_dir>/model_cache``) and an EfficientNet-Lite0 ImageNet image tower
#: (``catret-effnet-lite0``; its text tower is random, so ``clip.aligned`` is False).
#: ``pretrained``: the paper's encoders (ViT-B-32 LAION-2B weights, all-mpnet-base-v2), which need
#: the weights downloadable or in the local Hugging Face / open_clip caches.
ENV_PROFILE = "CATRET_PROFILE"

PROFILES: dict[str, dict[str, dict[str, str]]] = {
    "offline": {
        "clip": {"model_name": "catret-effnet-lite0", "pretrained": ""},
        "text": {"model_name_or_path": "bundled:all-mpnet-base-v2"},
    },
    "pretrained": {
        "clip": {"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
        "text": {"model_name_or_path": "sentence-transformers/all-mpnet-base-v2"},
    },
}


def profile() -> str:
    name = os.environ.get(ENV_PROFILE, "offline")
    if name not in PROFILES:
        raise ConfigError(f"{ENV_PROFILE}={name!r}: expected one of {sorted(PROFILES)}")
    return name


def clip_defaults() -> dict[str, str | int]:
    """open_clip settings for the active profile; CATRET_CLIP_* variables override each field."""
    out = dict(PROFILES[profile()]["clip"])
    for field, env in (
        ("model_name", "CATRET_CLIP_MODEL"),
        ("pretrained", "CATRET_CLIP_PRETRAINED"),
        ("checkpoint_path", "CATRET_CLIP_CHECKPOINT"),
        ("precision", "CATRET_CLIP_PRECISION"),
        ("device", "CATRET_DEVICE"),
    ):
        if os.environ.get(env):
            out[field] = os.environ[env]
    if os.environ.get("CATRET_CLIP_THREADS"):
        out["threads"] = _int_env("CATRET_CLIP_THREADS", 0, 0)
    if os.environ.get("CATRET_CLIP_DECODE_WORKERS"):
        out["decode_workers"] = _int_env("CATRET_CLIP_DECODE_WORKERS", 1, 1)
    if os.environ.get("CATRET_CLIP_DECODE_PROCESSES"):
        out["decode_processes"] = _int_env("CATRET_CLIP_DECODE_PROCESSES", 0, 0)
    return out


def text_defaults() -> dict[str, str]:
    """sentence-transformers settings for the active profile; CATRET_TEXT_MODEL,
    CATRET_TEXT_PRECISION, CATRET_MODEL_CACHE and CATRET_DEVICE override fields."""
    out = dict(PROFILES[profile()]["text"])
    for field, env in (
        ("model_name_or_path", "CATRET_TEXT_MODEL"),
        ("precision", "CATRET_TEXT_PRECISION"),
        ("cache_dir", "CATRET_MODEL_CACHE"),
    ):
        if os.environ.get(env):
            out[field] = os.environ[env]
    if os.environ.get("CATRET_DEVICE"):
        out["device"] = os.environ["CATRET_DEVICE"]
    return out


def refresh_cron() -> str:
    """Cron of the catalogue refresh schedule (``CATRET_REFRESH_CRON``; default daily 03:00)."""
    return os.environ.get("CATRET_REFRESH_CRON") or "0 3 * * *"


def refresh_sensor_interval() -> int:
    """Seconds between ticks of ``raw_catalogue_sensor`` (``CATRET_REFRESH_SENSOR_INTERVAL``; 300)."""
    return _int_env("CATRET_REFRESH_SENSOR_INTERVAL", 300, 1)


#: Hash shards of each product-level embedding asset (``image_embeddings``, ``title_embeddings``,
#: ``title_clip_embeddings``, ``attribute_embeddings``); 1 = unsharded (see docs/scaling.md).
ENV_EMBED_SHARDS = "CATRET_EMBED_SHARDS"
#: Executor of the ``catret_build`` job: unset = Dagster's default, ``in_process``, ``multiprocess``.
ENV_EXECUTOR = "CATRET_EXECUTOR"
#: Most step processes at once under the multiprocess executor (0 = one per CPU).
ENV_MAX_CONCURRENT = "CATRET_MAX_CONCURRENT"
EXECUTORS = ("in_process", "multiprocess")
#: How the multiprocess executor starts step processes: ``forkserver`` (default where the
#: platform has it) or ``spawn``.
ENV_START_METHOD = "CATRET_START_METHOD"
START_METHODS = ("forkserver", "spawn")


def _int_env(name: str, default: int, minimum: int) -> int:
    value = os.environ.get(name) or str(default)
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return number


def embed_shards() -> int:
    """Hash shards per product-level embedding asset, and above 1 one index step per vector
    model (``CATRET_EMBED_SHARDS``; default 1)."""
    return _int_env(ENV_EMBED_SHARDS, 1, 1)


def executor() -> str | None:
    """``CATRET_EXECUTOR``: ``in_process``, ``multiprocess``, or None (unset: Dagster's default,
    i.e. multiprocess for runs launched from the UI / daemon, in-process for ``catret materialize``).
    """
    name = os.environ.get(ENV_EXECUTOR) or None
    if name is not None and name not in EXECUTORS:
        raise ConfigError(f"{ENV_EXECUTOR}={name!r}: expected one of {list(EXECUTORS)}")
    return name


def max_concurrent() -> int:
    """``CATRET_MAX_CONCURRENT``: step processes at once under ``multiprocess`` (0 = CPU count)."""
    return _int_env(ENV_MAX_CONCURRENT, 0, 0)


def start_method() -> str:
    """``CATRET_START_METHOD``: ``forkserver`` (default where available, else ``spawn``)."""
    import multiprocessing

    name = os.environ.get(ENV_START_METHOD) or None
    if name is None:
        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if name not in START_METHODS:
        raise ConfigError(f"{ENV_START_METHOD}={name!r}: expected one of {list(START_METHODS)}")
    return name


def validate() -> None:
    """Check every environment-level setting now (each raises :class:`ConfigError`), so a typo
    fails before the sample is generated or a run starts rather than halfway through."""
    profile()
    sample_shape()
    embed_shards()
    executor()
    max_concurrent()
    start_method()
    refresh_sensor_interval()
    clip_defaults()
    image_allow_hosts()
