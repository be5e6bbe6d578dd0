"""``catret``: the command line around the Dagster project.

``catret materialize`` runs the whole asset graph in-process against a persistent Dagster
instance (so the runs show up in ``catret ui``); ``catret ui`` serves the Dagster UI;
``catret search`` queries the materialised indexes; ``catret sql`` queries the DuckDB catalogue;
``catret serve`` serves the catalogue over HTTP (docs/serving.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from catret_pipeline import settings

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

DEFAULT_SAMPLE_PRODUCTS = 1200


def configure_environment(
    data_dir: str | None = None,
    raw_root: str | None = None,
    profile: str | None = None,
    create: bool = True,
) -> dict[str, str]:
    """Point this process (and the dagster processes it starts) at one data dir and instance."""
    if data_dir:
        os.environ[settings.ENV_DATA_DIR] = str(Path(data_dir).resolve())
    else:
        os.environ.setdefault(settings.ENV_DATA_DIR, settings.default_data_dir())
    if raw_root:
        os.environ[settings.ENV_RAW_ROOT] = str(Path(raw_root).resolve())
    if profile:
        os.environ[settings.ENV_PROFILE] = profile
    settings.profile()  # fail early on a bad profile name
    data = Path(os.environ[settings.ENV_DATA_DIR])
    # Without DAGSTER_HOME dagster uses a temporary home and forgets runs and schedules on exit.
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data / "dagster_home")))
    if create:
        data.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
    if create and not (home / "dagster.yaml").exists():
        from catret_pipeline.storage.atomic import atomic_write_text

        # Atomic: a second first run (or the UI) reading it mid-write would see half a config.
        atomic_write_text(home / "dagster.yaml", DAGSTER_YAML)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    if settings.profile() == "offline":
        # The offline profile loads only local weights; this stops hub lookups that would hang.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {
        "data_dir": str(data),
        "raw_root": settings.default_raw_root(),
        "dagster_home": str(home),
        "profile": settings.profile(),
    }


def check_raw_root() -> None:
    """Refuse (``ConfigError``) a raw root that does not exist, is not a directory or holds no
    metadata file, before anything is generated or run. The bundled sample is generated on
    first use, so it is not checked here."""
    if uses_bundled_sample():
        return
    from catret_pipeline.ingest.resources import XMarketSource

    try:
        XMarketSource(root=settings.default_raw_root()).metadata_files()
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise settings.ConfigError(f"raw root: {exc}") from None


def validate_configuration() -> None:
    """Every setting a build needs, checked up front (one ``ConfigError`` line on failure)."""
    settings.validate()
    check_raw_root()


def uses_bundled_sample() -> bool:
    return (
        Path(settings.default_raw_root()).resolve()
        == (settings.sample_root() / "xmarket").resolve()
    )


def ensure_bundled_sample(n_products: int | None = None) -> None:
    """Generate the sample catalogue when the configured raw root is the bundled sample."""
    if not uses_bundled_sample():
        return
    from catret_pipeline.sample.generator import ensure_sample

    n = n_products or int(os.environ.get("CATRET_SAMPLE_PRODUCTS", DEFAULT_SAMPLE_PRODUCTS))
    shape = settings.sample_shape()
    summary = ensure_sample(settings.sample_root(), n_products=n, shape=shape)
    print(
        f"sample catalogue ({shape} shape): {summary.n_products} products in "
        f"{summary.n_categories} categories under {settings.sample_root()}"
    )


def select_job(defs, select: str | None):
    """The build job, or its subset for a dagster selection string.

    ``ingest_raw`` writes ``raw_products`` and ``quarantine`` in one step, so a selection that
    names one of them takes the other along rather than failing.
    """
    import dagster as dg

    job = defs.resolve_job_def("catret_build")
    if not select:
        return job
    selection = dg.AssetSelection.from_string(select).required_multi_asset_neighbors()
    return job.get_subset(asset_selection=selection.resolve(defs.resolve_asset_graph()))


def on_demand_config(job, retrain: bool = False, rebuild_indexes: bool = False) -> dict:
    """Run config for the on-demand switches, for the steps the (sub)job actually has: config
    for a step outside the selection fails Dagster's validation."""
    from catret_pipeline.retrieval.assets import index_config_ops

    ops: dict = {}
    if retrain:
        if job.has_node_named("fusion_models"):
            ops["fusion_models"] = {"config": {"force_retrain": True}}
        else:
            print("note: fusion_models is not in the selection; --retrain has no effect")
    if rebuild_indexes:
        # One hnsw_indexes step, or one per vector model when the graph is sharded.
        index_ops = index_config_ops(job, {"force_rebuild": True})
        if not index_ops:
            print("note: no index step is in the selection; --rebuild-indexes has no effect")
        ops.update(index_ops)
    return {"ops": ops} if ops else {}


REFRESH_TAG = settings.REFRESH_TAG  # limited to 1 in DAGSTER_YAML
PID_TAG = "catret/pid"
HOST_TAG = "catret/host"


#: How long a command waits for another process creating / opening the instance.
INSTANCE_LOCK_WAIT_S = 300.0


def open_instance(wait_s: float = INSTANCE_LOCK_WAIT_S):
    """The Dagster instance of ``DAGSTER_HOME``, created under a cross-process file lock.

    Dagster's SQLite storages create their tables and stamp ``alembic_version`` on first open
    with no lock of their own: two first runs on a fresh data dir could leave two alembic heads
    ("Version table 'alembic_version' has more than one head present") and an instance every
    later command refuses. Every storage is touched here, inside the lock, so each is whole
    before the lock is released.
    """
    import dagster as dg

    from catret_pipeline.storage.locks import INSTANCE_LOCK, file_lock

    home = Path(os.environ["DAGSTER_HOME"])
    with file_lock(home / INSTANCE_LOCK, wait_s=wait_s):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.all_asset_keys()
        instance.all_instigator_state()
    return instance


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def refresh_runs_in_progress(instance) -> list[str]:
    """Ids of runs that hold the refresh slot (tag ``catret/refresh``, not finished).

    A run started by ``catret materialize`` on this host whose process is gone (killed, machine
    crashed mid-run) would otherwise hold the slot for ever: it is marked failed here instead.
    """
    import dagster as dg

    active = [
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    holding = []
    for run in instance.get_runs(dg.RunsFilter(statuses=active, tags={REFRESH_TAG: "true"})):
        pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid and pid.isdigit() and host == socket.gethostname() and not _pid_alive(int(pid)):
            instance.report_run_failed(
                run, f"catret: process {pid} of this run is gone; marked failed by a later run"
            )
            continue
        holding.append(run.run_id)
    return holding


def cli_run_tags() -> dict[str, str]:
    """Tags of a ``catret materialize`` run: it takes the refresh slot like a scheduled refresh
    (the run queue counts started runs with the tag, so a queued refresh waits for it), and
    records its process so a killed run can be told from a live one."""
    return {
        REFRESH_TAG: "true",
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        "catret/trigger": "cli",
    }


def _execute_build(defs, select: str | None, run_config: dict | None = None, instance=None):
    """Run the build job: in this process, or with CATRET_EXECUTOR=multiprocess one process per
    step (hash-shard steps side by side), rebuilt in each child from the CATRET_* variables."""
    import dagster as dg

    instance = instance or open_instance()
    if settings.executor() != "multiprocess":
        job = select_job(defs, select)
        return job.execute_in_process(
            run_config=run_config or None,
            instance=instance,
            raise_on_error=False,
            tags=cli_run_tags(),
        )
    from catret_pipeline.definitions import reconstructable_build_job

    keys = None
    if select:
        selection = dg.AssetSelection.from_string(select).required_multi_asset_neighbors()
        keys = list(selection.resolve(defs.resolve_asset_graph()))
    with dg.execute_job(
        reconstructable_build_job(),
        instance=instance,
        asset_selection=keys,
        run_config=run_config or None,
        tags=cli_run_tags(),
        raise_on_error=False,
    ) as result:
        return result


def _set_scaling_env(args: argparse.Namespace) -> None:
    if getattr(args, "shards", None) is not None:
        if args.shards < 1:
            raise SystemExit("--shards must be >= 1")
        os.environ[settings.ENV_EMBED_SHARDS] = str(args.shards)
    if getattr(args, "executor", None):
        os.environ[settings.ENV_EXECUTOR] = args.executor


def _set_sample_env(args: argparse.Namespace) -> None:
    # Through the environment like --shards: settings.validate() then checks flag and variable.
    if getattr(args, "sample_shape", None):
        os.environ[settings.ENV_SAMPLE_SHAPE] = args.sample_shape


def cmd_materialize(args: argparse.Namespace) -> int:
    import contextlib

    from catret_pipeline.storage.locks import BUILD_LOCK, LockBusy, file_lock

    # Validated before anything is created or generated: a typo leaves no half-made data dir.
    configure_environment(args.data_dir, args.raw_root, args.profile, create=False)
    _set_scaling_env(args)
    _set_sample_env(args)
    validate_configuration()
    env = configure_environment(args.data_dir, args.raw_root, args.profile)
    print(f"data dir {env['data_dir']}, raw root {env['raw_root']}, profile {env['profile']}")
    with contextlib.ExitStack() as stack:
        # Held for the whole run: a second `catret materialize` on this data dir is refused
        # here, with no window between checking the slot and taking it. The lock dies with the
        # process, so a killed build never blocks the next one.
        try:
            stack.enter_context(file_lock(Path(env["data_dir"]) / BUILD_LOCK, wait_s=0))
        except LockBusy as exc:
            holder = f" (process {exc.holder})" if exc.holder else ""
            print(
                f"another catret materialize is running on this data dir{holder}; "
                "wait for it to finish",
                file=sys.stderr,
            )
            return 3
        return _materialize_locked(args, env)
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _materialize_locked(args: argparse.Namespace, env: dict[str, str]) -> int:
    instance = open_instance()
    holding = refresh_runs_in_progress(instance)
    if holding and not args.force:
        print(
            f"another build or refresh is running on this data dir (run {', '.join(holding)}); "
            "wait for it, or pass --force if you know it is dead",
            file=sys.stderr,
        )
        return 3
    _remove_stale_temp_files(Path(env["data_dir"]))
    ensure_bundled_sample(args.sample_products)

    from catret_pipeline.definitions import build_definitions

    # Built here rather than imported: --shards / --executor change the graph and the job.
    defs = build_definitions()
    run_config = on_demand_config(
        select_job(defs, args.select),
        retrain=getattr(args, "retrain", False),
        rebuild_indexes=getattr(args, "rebuild_indexes", False),
    )
    result = _execute_build(defs, args.select, run_config, instance=instance)
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    failed_checks = [
        ev.asset_check_key.to_user_string()
        for ev in result.get_asset_check_evaluations()
        if not ev.passed
    ]
    if failed_checks:
        print("failed asset checks: " + ", ".join(failed_checks))
    if not result.success:
        print("run failed at: " + ", ".join(failed or ["(see the Dagster logs)"]), file=sys.stderr)
        return 1
    print(_done_message(result, Path(env["data_dir"])))
    return 0


def _done_message(result, data_dir: Path) -> str:
    """What a successful run built: the catalogue path is named only when this run refreshed
    it, so a partial selection never suggests that ``catret sql`` sees its new tables."""
    built = sorted(
        {ev.asset_key.to_user_string() for ev in result.get_asset_materialization_events()}
    )
    if "catret_duckdb" in built:
        return f"done: run {result.run_id}; DuckDB catalogue at {data_dir / 'catret.duckdb'}"
    return (
        f"done: run {result.run_id}; built {', '.join(built) or 'nothing'}; the DuckDB "
        "catalogue was not refreshed (materialize catret_duckdb to see these in catret sql)"
    )


def _remove_stale_temp_files(data_dir: Path) -> None:
    from catret_pipeline.storage.temp_files import remove_stale_temp_files

    # Under the build lock: no other catret build writes now, and a daemon run's live
    # temporaries are kept by the pid check (see temp_files).
    removed = remove_stale_temp_files(data_dir)
    if removed:
        size = sum(r.size for r in removed)
        print(f"removed {len(removed)} stale temporary file(s) of killed writers ({size} B):")
        for r in removed:
            print(f"  {r.path.relative_to(data_dir)} ({r.reason})")


def cmd_ui(args: argparse.Namespace) -> int:
    configure_environment(args.data_dir, args.raw_root, args.profile, create=False)
    _set_scaling_env(args)
    _set_sample_env(args)
    validate_configuration()
    configure_environment(args.data_dir, args.raw_root, args.profile)
    # Created here, under the lock: the webserver and the daemon would otherwise both create
    # a fresh instance at the same moment (the alembic race of open_instance).
    open_instance()
    ensure_bundled_sample(args.sample_products)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    cmd = [
        dagster,
        "dev",
        "-w",
        str(settings.REPO_ROOT / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    return subprocess.call(cmd, cwd=settings.REPO_ROOT)


def cmd_sample(args: argparse.Namespace) -> int:
    from catret_pipeline.sample.generator import ensure_sample

    shape = args.shape or settings.sample_shape()
    summary = ensure_sample(Path(args.out), n_products=args.products, seed=args.seed, shape=shape)
    print(
        f"{summary.n_products} products, {summary.n_lines} lines, {summary.n_categories} "
        f"categories ({shape} shape) in {summary.out_dir}"
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from catret_pipeline.storage.duckdb_catalog import (
        CatalogQueryRefused,
        check_read_only_query,
        open_catalog,
    )
    from catret_pipeline.storage.tables import table_root

    env = configure_environment(args.data_dir, None, None, create=False)
    db = Path(env["data_dir"]) / "catret.duckdb"
    if not db.exists():
        print(f"no catalogue at {db}: run `catret materialize` first", file=sys.stderr)
        return 2
    # The catalogue answers from this data dir's tables (wherever it was built), and the query
    # surface is read-only in effect: see open_catalog and docs/operations.md ("catret sql").
    con = open_catalog(db, table_root(env["data_dir"], settings.default_table_store()))
    try:
        check_read_only_query(con, args.query)
        con.sql(args.query).show(max_rows=args.max_rows, max_width=200)
    except CatalogQueryRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def _catalogue_search(args: argparse.Namespace, data_dir: str):
    """The whole catalogue through the serving store: the same code as ``catret serve``."""
    from catret_pipeline.serving.query import QueryError
    from catret_pipeline.serving.store import Store
    from catret_pipeline.serving.tables import StoreError

    try:
        store = Store(data_dir, interval=0, override=args.model)
        return store.search(args.query, args.k, args.setting)
    except (StoreError, QueryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_search(args: argparse.Namespace) -> int:
    from catret_pipeline.search import SearchError, print_results, search, write_contact_sheet

    env = configure_environment(args.data_dir, None, None, create=False)
    if args.catalogue:
        hits = _catalogue_search(args, env["data_dir"])
        if hits is None:
            return 2
    else:
        try:
            hits = search(
                data_dir=env["data_dir"],
                query=args.query,
                model=args.model or "clip-ita",
                setting=args.setting,
                k=args.k,
            )
        except SearchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print_results(hits, args.query, hits.model, hits.setting)
    if args.sheet:
        path = write_contact_sheet(hits, env["data_dir"], args.sheet, title=args.query)
        print(f"contact sheet: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from catret_pipeline.serving.server import serve

    env = configure_environment(args.data_dir, None, None, create=False)
    return serve(
        env["data_dir"],
        host=args.host,
        port=args.port,
        reload_interval=args.reload_interval,
        model=args.model,
        root_path=args.root_path,
    )


def _common(p: argparse.ArgumentParser, raw: bool = True) -> None:
    p.add_argument(
        "--data-dir", help=f"data directory (env {settings.ENV_DATA_DIR}; default ./data)"
    )
    if raw:
        p.add_argument(
            "--raw-root",
            help=f"XMarket-layout root (env {settings.ENV_RAW_ROOT}; default: the bundled sample)",
        )
        p.add_argument(
            "--profile",
            choices=sorted(settings.PROFILES),
            help="encoder profile (env CATRET_PROFILE)",
        )
        p.add_argument("--sample-products", type=int, help="size of the generated sample catalogue")
        p.add_argument(
            "--sample-shape",
            choices=list(settings.SAMPLE_SHAPES),
            help="category tree of the generated sample: the small hand-written one, or one shaped "
            "like the paper's (5,471 categories on 9 levels) (env CATRET_SAMPLE_SHAPE; "
            "default sample)",
        )
        p.add_argument(
            "--shards",
            type=int,
            help="hash shards per product-level embedding asset, and above 1 one hnsw_indexes step "
            "per vector model (env CATRET_EMBED_SHARDS; default 1)",
        )
        p.add_argument(
            "--executor",
            choices=list(settings.EXECUTORS),
            help="how the build runs its steps (env CATRET_EXECUTOR; default: materialize runs "
            "in-process, the UI uses Dagster's multiprocess default)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catret", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="materialise the asset graph in-process")
    _common(p)
    p.add_argument("--select", help="dagster asset selection string, e.g. 'key:products+'")
    p.add_argument(
        "--force",
        action="store_true",
        help="start even if the instance shows another build or refresh in progress",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="retrain every fusion head even when its training data barely changed",
    )
    p.add_argument(
        "--rebuild-indexes",
        action="store_true",
        help="rebuild every HNSW index instead of updating it in place",
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("ui", help="serve the Dagster UI (dagster dev -w workspace.yaml)")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("sample", help="generate the sample catalogue")
    p.add_argument("--out", default=str(settings.sample_root()))
    p.add_argument("--products", type=int, default=DEFAULT_SAMPLE_PRODUCTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shape",
        choices=list(settings.SAMPLE_SHAPES),
        help="category tree: sample (default) or paper (env CATRET_SAMPLE_SHAPE)",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sql", help="run a query against the DuckDB catalogue (read-only)")
    _common(p, raw=False)
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=100)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("search", help="rank products for a category name")
    _common(p, raw=False)
    p.add_argument("query", help="category name, seen or unseen")
    p.add_argument(
        "--model",
        help="model to rank with (default clip-ita; with --catalogue the serving model)",
    )
    p.add_argument("--setting", default="specific", choices=["all", "general", "specific"])
    p.add_argument("-k", type=int, default=10)
    p.add_argument(
        "--catalogue",
        action="store_true",
        help="rank every product of the catalogue with the serving store (as catret serve) "
        "instead of the setting's test split in its evaluation index",
    )
    p.add_argument("--sheet", help="write a contact sheet PNG of the results")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("serve", help="HTTP API and web page over the materialised catalogue")
    _common(p, raw=False)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model",
        help="serving model, for every setting or as all=M,specific=M (env CATRET_SERVE_MODEL; "
        "default: the best validation R-precision per setting)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the data dir for a new build (0 = no hot reload)",
    )
    p.add_argument("--root-path", default="", help="URL prefix when mounted under a proxy path")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except settings.ConfigError as exc:
        # A configuration mistake is the user's to fix: one line, no traceback.
        print(f"catret: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
