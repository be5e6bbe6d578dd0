"""``catret materialize``: the build job (or a selection of it) on one data dir, in this process
or one process per step, holding the data dir's build lock and the refresh slot."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from catret_pipeline.cli.environment import (
    check_raw_root,
    configure,
    describe,
    ensure_bundled_sample,
    prepare_data_dir,
)
from catret_pipeline.cli.instance import open_instance
from catret_pipeline.config import BUILD_JOB, OUT_OF_PROCESS_EXECUTORS, CatretConfig
from catret_pipeline.refresh.run_slot import cli_run_tags, refresh_runs_in_progress


def select_job(defs, select: str | None):
    """The build job, or its subset for a dagster selection string.

    ``ingest_raw`` writes ``raw_products`` and ``quarantine`` in one step, so a selection that
    names one of them takes the other along rather than failing.
    """
    import dagster as dg

    job = defs.resolve_job_def(BUILD_JOB)
    if not select:
        return job
    selection = dg.AssetSelection.from_string(select).required_multi_asset_neighbors()
    return job.get_subset(asset_selection=selection.resolve(defs.resolve_asset_graph()))


def on_demand_config(job, retrain: bool = False, rebuild_indexes: bool = False) -> dict:
    """Run config for the on-demand switches, for the steps the (sub)job actually has: config
    for a step outside the selection fails Dagster's validation."""
    from catret_pipeline.retrieval.index_assets import index_config_ops

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


def execute_build(
    config: CatretConfig, defs, select: str | None, run_config: dict | None, instance
):
    """Run the build job: in this process, or with the multiprocess or dask executor one process
    (or Dask task) per step (hash-shard steps side by side), each rebuilding the definitions from
    ``config``."""
    import dagster as dg

    if config.executor not in OUT_OF_PROCESS_EXECUTORS:
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
        reconstructable_build_job(config),
        instance=instance,
        asset_selection=keys,
        run_config=run_config or None,
        tags=cli_run_tags(),
        raise_on_error=False,
    ) as result:
        return result


def cmd_materialize(args: argparse.Namespace) -> int:
    from catret_pipeline.storage.locks import BUILD_LOCK, LockBusy, file_lock

    # Checked before anything is created or generated: a typo leaves no half-made data dir.
    config = configure(args, create=False)
    check_raw_root(config)
    prepare_data_dir(config)
    print(describe(config))
    with contextlib.ExitStack() as stack:
        # Held for the whole run: a second `catret materialize` on this data dir is refused
        # here, with no window between checking the slot and taking it. The lock dies with the
        # process, so a killed build never blocks the next one.
        try:
            stack.enter_context(file_lock(config.data_dir / BUILD_LOCK, wait_s=0))
        except LockBusy as exc:
            holder = f" (process {exc.holder})" if exc.holder else ""
            print(
                f"another catret materialize is running on this data dir{holder}; "
                "wait for it to finish",
                file=sys.stderr,
            )
            return 3
        return _materialize_locked(args, config)
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _materialize_locked(args: argparse.Namespace, config: CatretConfig) -> int:
    instance = open_instance(config.instance_home)
    holding = refresh_runs_in_progress(instance)
    if holding and not args.force:
        print(
            f"another build or refresh is running on this data dir (run {', '.join(holding)}); "
            "wait for it, or pass --force if you know it is dead",
            file=sys.stderr,
        )
        return 3
    _remove_stale_temp_files(config.data_dir)
    ensure_bundled_sample(config, args.sample_products)

    from catret_pipeline.definitions import build_definitions

    # Built here rather than imported: --shards / --executor change the graph and the job.
    defs = build_definitions(config=config)
    run_config = on_demand_config(
        select_job(defs, args.select),
        retrain=getattr(args, "retrain", False),
        rebuild_indexes=getattr(args, "rebuild_indexes", False),
    )
    result = execute_build(config, defs, args.select, run_config, instance)
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
    print(done_message(result, config.data_dir))
    return 0


def done_message(result, data_dir: Path) -> str:
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
