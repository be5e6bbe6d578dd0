"""Tiny jobs for test_dask_executor.py, in their own module: Dask workers import it to rebuild
the job (``dg.build_reconstructable_job``), and should not import the test module with it."""

import multiprocessing
import os
import pickle
import time
from pathlib import Path

import dagster as dg

from catret_pipeline.workers.dask_executor import dask_executor_def


class SlowConfig(dg.Config):
    #: Written with this process's pid when the step starts (the test kills that process).
    pid_file: str = ""
    seconds: float = 0.0


@dg.asset
def left() -> dict:
    time.sleep(1.0)  # both roots at once: Dask places them on different workers
    return {"left": os.getpid()}


@dg.asset
def right() -> dict:
    time.sleep(1.0)
    # A child process, as fusion_models' training pool starts one: refused in a daemonic worker.
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    return {"right": os.getpid(), "child_exit": child.exitcode}


@dg.asset
def slow(config: SlowConfig) -> dict:
    if config.pid_file:
        Path(config.pid_file).write_text(str(os.getpid()))
    time.sleep(config.seconds)
    return {"slow": os.getpid()}


@dg.asset
def joined(left: dict, right: dict, slow: dict) -> dict:
    return {**left, **right, **slow, "joined": os.getpid()}


class BrokenConfig(dg.Config):
    fail: bool = True


@dg.asset
def broken(config: BrokenConfig) -> int:
    if config.fail:
        raise RuntimeError("broken on purpose")
    return 1


@dg.asset
def after_broken(broken: int, left: dict) -> int:
    return broken + 1


@dg.asset
def after_after(after_broken: int) -> int:
    return after_broken + 1


PIDS = [left, right, slow, joined]
FAILING = [left, broken, after_broken, after_after]


def tiny_job(
    store: str, address: str = "", workers: int = 2, failing: bool = False
) -> dg.JobDefinition:
    """``left`` and ``right`` (roots), ``slow``, and ``joined`` of all three; or (``failing``)
    ``left`` and ``broken`` (fails unless configured not to) -> ``after_broken`` ->
    ``after_after``. Outputs are pickled
    under ``store`` (:func:`load`)."""
    assets = FAILING if failing else PIDS
    job = dg.define_asset_job("tiny", executor_def=dask_executor_def(address, workers))
    resources = {"io_manager": dg.FilesystemIOManager(base_dir=store)}
    return dg.Definitions(assets=assets, jobs=[job], resources=resources).resolve_job_def("tiny")


def load(store: str | Path, asset: str):
    """The value ``asset`` returned, as ``tiny_job``'s IO manager stored it."""
    with open(Path(store) / asset, "rb") as f:
        return pickle.load(f)


def reconstructable_tiny_job(**kwargs):
    return dg.build_reconstructable_job(__name__, tiny_job.__name__, reconstructable_kwargs=kwargs)
