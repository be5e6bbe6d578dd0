"""The one place the process environment is read: :class:`CatretConfig`.

The edges (the CLI, ``definitions.py``, ``catret serve``) call :meth:`CatretConfig.from_env`
once and pass the object (or the values it holds) down; nothing below them reads
``os.environ``. The environment stays the channel *between* processes because the webserver,
the daemon, the CLI and each step process must agree: :meth:`CatretConfig.to_env` gives the
variables that rebuild the same configuration in a child.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: ``CATRET_DATA_DIR`` unset: ``./data`` of the checkout.
DEFAULT_DATA_DIR = REPO_ROOT / "data"


class ConfigError(ValueError):
    """A bad setting (environment variable or flag): the CLI prints the message as one line and
    exits non-zero, before any work starts."""


#: Run tag of every catalogue refresh (schedule, sensor, ``catret materialize``); the CLI's
#: ``dagster.yaml`` limits runs with it to one at a time.
REFRESH_TAG = "catret/refresh"
#: The job that materialises the whole graph (UI, schedule, sensor, ``catret materialize``).
BUILD_JOB = "catret_build"
#: Every variable of ours starts with it (step processes get exactly these rewritten).
ENV_PREFIX = "CATRET_"

#: Where every asset's Parquet file, index, model artefact and image cache lives.
ENV_DATA_DIR = "CATRET_DATA_DIR"
#: Root of an XMarket-layout catalogue (``{market}/{Category}/metadata_*.json.gz``).
ENV_RAW_ROOT = "CATRET_RAW_ROOT"
#: Local directory of pre-downloaded images matched by file name (empty: none).
ENV_IMAGE_MIRROR = "CATRET_IMAGE_MIRROR"
#: Non-public hosts / networks image downloads may reach (comma- or space-separated host
#: names, IPs, CIDRs; ``*`` = no check). Unset / empty: public addresses only.
ENV_IMAGE_ALLOW_HOSTS = "CATRET_IMAGE_ALLOW_HOSTS"
#: Where the table assets (Parquet) live: unset / "" = ``$CATRET_DATA_DIR/assets``; else a URL
#: (``file:///abs/dir``, ``s3://bucket/prefix``, ``gs://...``, ``memory://...``) read and written
#: through universal_pathlib / fsspec. Binary artefacts follow ``CATRET_ARTEFACT_STORE``.
ENV_TABLE_STORE = "CATRET_TABLE_STORE"
#: Where the binary artefacts (indexes, head weights, image cache, checkpoints, ONNX exports,
#: reports) live: unset / "" = under the data dir; else a URL as for ``CATRET_TABLE_STORE``
#: (docs/scaling.md). ``catret.duckdb`` and ``model_cache/`` stay under the data dir.
ENV_ARTEFACT_STORE = "CATRET_ARTEFACT_STORE"
#: Category tree of the generated sample (``--sample-shape``): ``sample`` = the hand-written
#: vocabulary tree (default), ``paper`` = a procedural tree shaped like the paper's XMarket US
#: set (5,471 categories on 9 levels; docs/sample.md).
ENV_SAMPLE_SHAPE = "CATRET_SAMPLE_SHAPE"
SAMPLE_SHAPES = ("sample", "paper")
#: Products of the generated sample when ``--sample-products`` is not given.
ENV_SAMPLE_PRODUCTS = "CATRET_SAMPLE_PRODUCTS"
DEFAULT_SAMPLE_PRODUCTS = 1200
#: Encoder profile, see :data:`PROFILES`.
ENV_PROFILE = "CATRET_PROFILE"
#: Hash shards of each product-level embedding asset (``image_embeddings``, ``title_embeddings``,
#: ``title_clip_embeddings``, ``attribute_embeddings``); 1 = unsharded (see docs/scaling.md).
ENV_EMBED_SHARDS = "CATRET_EMBED_SHARDS"
#: Executor of the build job: unset = Dagster's default, ``in_process``, ``multiprocess``,
#: ``dask`` (dagster-dask: a per-run local Dask cluster, or the one at ``CATRET_DASK_ADDRESS``),
#: ``k8s`` (dagster-k8s: one Kubernetes job per step; the optional extra ``k8s``).
ENV_EXECUTOR = "CATRET_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "dask", "k8s")
#: The executors that run each step in another process, rebuilding the job from the
#: reconstructable pointer (``catret materialize`` launches those through ``dg.execute_job``).
OUT_OF_PROCESS_EXECUTORS = ("multiprocess", "dask", "k8s")
#: Most step processes at once under the multiprocess executor, and the worker processes of the
#: per-run local Dask cluster (0 = one per CPU).
ENV_MAX_CONCURRENT = "CATRET_MAX_CONCURRENT"
#: ``CATRET_EXECUTOR=dask``: the scheduler of an existing Dask cluster (``tcp://host:8786``);
#: unset / empty = a ``LocalCluster`` started for each run.
ENV_DASK_ADDRESS = "CATRET_DASK_ADDRESS"
#: How the multiprocess executor starts step processes: ``forkserver`` (default where the
#: platform has it) or ``spawn``.
ENV_START_METHOD = "CATRET_START_METHOD"
START_METHODS = ("forkserver", "spawn")
#: Cron of the catalogue refresh schedule, and seconds between ticks of the raw-catalogue sensor.
ENV_REFRESH_CRON = "CATRET_REFRESH_CRON"
DEFAULT_REFRESH_CRON = "0 3 * * *"
ENV_REFRESH_SENSOR_INTERVAL = "CATRET_REFRESH_SENSOR_INTERVAL"
#: Scheduler address schemes of Dask's communication backends.
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
#: ``catret serve``: the serving model per setting (``M`` or ``all=M,specific=M``; unset: the best
#: validation R-precision per setting) and the product index (``auto``, ``exact``, ``hnsw``).
ENV_SERVE_MODEL = "CATRET_SERVE_MODEL"
ENV_SERVE_INDEX = "CATRET_SERVE_INDEX"
SERVE_INDEXES = ("auto", "exact", "hnsw")
#: CPU feature flags to assume instead of /proc/cpuinfo's (comma- or space-separated), e.g. to
#: run the AVX2 code path on an AVX-512 machine; unset = detected.
ENV_CPU_FLAGS = "CATRET_CPU_FLAGS"
#: Dagster's own variable: the instance (runs, schedules, event log) of this data dir.
ENV_DAGSTER_HOME = "DAGSTER_HOME"

#: ``offline`` (default): real pretrained encoders that ship inside PyPI packages, so everything
#: runs with no network: the paper's all-mpnet-base-v2 (assembled once from split-zip packages
#: into ``<data_dir>/model_cache``) and an EfficientNet-Lite0 ImageNet image tower
#: (``catret-effnet-lite0``; its text tower is random, so ``clip.aligned`` is False).
#: ``pretrained``: the paper's encoders (ViT-B-32 LAION-2B weights, all-mpnet-base-v2), which need
#: the weights downloadable or in the local Hugging Face / open_clip caches.
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

#: open_clip resource fields that a variable overrides (string-valued, then integer-valued
#: with their minimum).
_CLIP_STR_ENV = (
    ("model_name", "CATRET_CLIP_MODEL"),
    ("pretrained", "CATRET_CLIP_PRETRAINED"),
    ("checkpoint_path", "CATRET_CLIP_CHECKPOINT"),
    ("precision", "CATRET_CLIP_PRECISION"),
    ("device", "CATRET_DEVICE"),
)
_CLIP_INT_ENV = (
    ("threads", "CATRET_CLIP_THREADS", 0),
    ("decode_workers", "CATRET_CLIP_DECODE_WORKERS", 1),
    ("decode_processes", "CATRET_CLIP_DECODE_PROCESSES", 0),
)
_TEXT_STR_ENV = (
    ("model_name_or_path", "CATRET_TEXT_MODEL"),
    ("precision", "CATRET_TEXT_PRECISION"),
    ("cache_dir", "CATRET_MODEL_CACHE"),
    ("device", "CATRET_DEVICE"),
)


@dataclass(frozen=True)
class CatretConfig:
    """Every process-level setting, resolved and checked (each bad value a :class:`ConfigError`).

    Per-asset parameters (fusion hyper-parameters, index parameters, ...) are not here: they are
    Dagster ``Config`` classes, set per run in the launchpad.
    """

    data_dir: Path
    raw_root: Path
    #: "" = no mirror.
    image_mirror: str
    image_allow_hosts: tuple[str, ...] = ()
    table_store: str = ""
    artefact_store: str = ""
    profile: str = "offline"
    sample_shape: str = SAMPLE_SHAPES[0]
    sample_products: int = DEFAULT_SAMPLE_PRODUCTS
    #: ``OpenClipEncoder`` / ``TextEncoder`` resource fields: the profile's, then overrides.
    clip: Mapping[str, str | int] = field(default_factory=dict)
    text: Mapping[str, str] = field(default_factory=dict)
    refresh_cron: str = DEFAULT_REFRESH_CRON
    refresh_sensor_interval: int = 300
    embed_shards: int = 1
    #: None: Dagster's default (multiprocess for launched runs, in-process for the CLI).
    executor: str | None = None
    max_concurrent: int = 0
    #: "" = a per-run local Dask cluster (only used with ``executor="dask"``).
    dask_address: str = ""
    start_method: str = "spawn"
    serve_model: str | None = None
    serve_index: str = "auto"
    cpu_flags: frozenset[str] | None = None
    dagster_home: Path | None = None
    #: The variables this was read from (ours and ``DAGSTER_HOME``), for :meth:`to_env` and
    #: :meth:`overridden`.
    source_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatretConfig:
        """Read and check every setting from ``environ`` (default: this process's environment)."""
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
        sample = data_dir / "sample"
        profile = _choice(env, ENV_PROFILE, tuple(PROFILES), "offline", sort=True)
        home = env.get(ENV_DAGSTER_HOME)
        flags = env.get(ENV_CPU_FLAGS)
        return cls(
            data_dir=data_dir,
            raw_root=Path(env.get(ENV_RAW_ROOT) or sample / "xmarket"),
            image_mirror=env[ENV_IMAGE_MIRROR]
            if ENV_IMAGE_MIRROR in env
            else str(sample / "images"),
            image_allow_hosts=_allow_hosts(env.get(ENV_IMAGE_ALLOW_HOSTS, "")),
            table_store=env.get(ENV_TABLE_STORE, "").strip(),
            artefact_store=env.get(ENV_ARTEFACT_STORE, "").strip(),
            profile=profile,
            sample_shape=_choice(env, ENV_SAMPLE_SHAPE, SAMPLE_SHAPES, SAMPLE_SHAPES[0]),
            sample_products=_int(env, ENV_SAMPLE_PRODUCTS, DEFAULT_SAMPLE_PRODUCTS, 1),
            clip=_clip_fields(env, profile, data_dir),
            text=_text_fields(env, profile, data_dir),
            refresh_cron=env.get(ENV_REFRESH_CRON) or DEFAULT_REFRESH_CRON,
            refresh_sensor_interval=_int(env, ENV_REFRESH_SENSOR_INTERVAL, 300, 1),
            embed_shards=_int(env, ENV_EMBED_SHARDS, 1, 1),
            executor=_choice(env, ENV_EXECUTOR, EXECUTORS, None),
            max_concurrent=_int(env, ENV_MAX_CONCURRENT, 0, 0),
            dask_address=_dask_address(env),
            start_method=_choice(env, ENV_START_METHOD, START_METHODS, _default_start_method()),
            serve_model=env.get(ENV_SERVE_MODEL) or None,
            serve_index=_choice(
                {k: v.strip().lower() for k, v in env.items() if k == ENV_SERVE_INDEX},
                ENV_SERVE_INDEX,
                SERVE_INDEXES,
                "auto",
            ),
            cpu_flags=None if flags is None else frozenset(flags.replace(",", " ").split()),
            dagster_home=Path(home) if home else None,
            source_env={
                k: v for k, v in env.items() if k.startswith(ENV_PREFIX) or k == ENV_DAGSTER_HOME
            },
        )

    def overridden(self, values: Mapping[str, str | None]) -> CatretConfig:
        """This configuration as if the variables ``values`` were set (None: left as it is):
        what a CLI flag or an explicit argument does. Defaults derived from a variable follow
        it (a new data dir brings its own sample, model cache and ONNX cache)."""
        env = dict(self.source_env)
        env.update({name: value for name, value in values.items() if value is not None})
        return CatretConfig.from_env(env)

    def with_data_dir(self, data_dir: str | os.PathLike) -> CatretConfig:
        return self.overridden({ENV_DATA_DIR: str(Path(data_dir).resolve())})

    @property
    def sample_root(self) -> Path:
        """Where the bundled sample catalogue is generated on first use."""
        return self.data_dir / "sample"

    @property
    def uses_bundled_sample(self) -> bool:
        return self.raw_root.resolve() == (self.sample_root / "xmarket").resolve()

    @property
    def instance_home(self) -> Path:
        """``DAGSTER_HOME`` if set, else ``<data_dir>/dagster_home`` (what the CLI sets)."""
        return self.dagster_home or self.data_dir / "dagster_home"

    def to_env(self) -> dict[str, str]:
        """``CATRET_*`` variables that rebuild this configuration in another process."""
        env = {k: v for k, v in self.source_env.items() if k.startswith(ENV_PREFIX)}
        env.update({ENV_DATA_DIR: str(self.data_dir), ENV_RAW_ROOT: str(self.raw_root)})
        return env


def export_env(config: CatretConfig, *, offline_hub: bool) -> None:
    """Make ``config`` this process's environment, for the Dagster processes it starts (webserver,
    daemon, step processes rebuild their definitions from it), and point Dagster at the data
    dir's instance. ``offline_hub`` sets ``HF_HUB_OFFLINE`` unless the user set it."""
    os.environ.update(config.to_env())
    # Without DAGSTER_HOME dagster uses a temporary home and forgets runs and schedules on exit.
    os.environ.setdefault(ENV_DAGSTER_HOME, str(config.instance_home))
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    if offline_hub:
        # The offline profile loads only local weights; this stops hub lookups that would hang.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def replace_env(env: Mapping[str, str]) -> None:
    """Replace this process's ``CATRET_*`` variables by ``env`` (a forkserver step child inherits
    the server's environment, not the launching process's)."""
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        del os.environ[name]
    os.environ.update(env)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = env.get(name) or str(default)
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return number


def _choice(
    env: Mapping[str, str], name: str, choices: tuple, default: str | None, sort: bool = False
) -> str | None:
    value = env.get(name, "").strip() or default
    if value is not None and value not in choices:
        shown = sorted(choices) if sort else list(choices)
        raise ConfigError(f"{name}={value!r}: expected one of {shown}")
    return value


def _dask_address(env: Mapping[str, str]) -> str:
    address = env.get(ENV_DASK_ADDRESS, "").strip()
    if not address:
        return ""
    scheme, sep, rest = address.partition("://")
    # A bare host:port is what `dask scheduler` prints without its scheme; anything else that
    # Dask cannot parse would only fail once a run has started.
    if not sep:
        scheme, rest = "tcp", address
    host, colon, port = rest.rpartition(":")
    if scheme not in DASK_SCHEMES or not colon or not host or not port.isdigit():
        raise ConfigError(
            f"{ENV_DASK_ADDRESS}={address!r}: expected a Dask scheduler address such as "
            f"tcp://host:8786 (schemes {list(DASK_SCHEMES)})"
        )
    return f"{scheme}://{rest}"


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _allow_hosts(text: str) -> tuple[str, ...]:
    from catret_pipeline.images.addresses import AllowList

    try:
        AllowList.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{ENV_IMAGE_ALLOW_HOSTS}: {exc}") from None
    return tuple(e for e in text.replace(",", " ").split() if e)


def _clip_fields(env: Mapping[str, str], profile: str, data_dir: Path) -> dict[str, str | int]:
    # The exported int8 tower is a binary artefact: beside the others on the artefact store.
    store = env.get(ENV_ARTEFACT_STORE, "").strip().rstrip("/")
    out: dict[str, str | int] = {
        "onnx_cache_dir": f"{store}/onnx_cache" if store else str(data_dir / "onnx_cache"),
        **PROFILES[profile]["clip"],
    }
    out.update({f: env[name] for f, name in _CLIP_STR_ENV if env.get(name)})
    out.update({f: _int(env, name, lo, lo) for f, name, lo in _CLIP_INT_ENV if env.get(name)})
    return out


def _text_fields(env: Mapping[str, str], profile: str, data_dir: Path) -> dict[str, str]:
    # Bundled split-zip models are assembled under the data dir unless configured.
    out = {"cache_dir": str(data_dir / "model_cache"), **PROFILES[profile]["text"]}
    out.update({f: env[name] for f, name in _TEXT_STR_ENV if env.get(name)})
    return out
