"""Fan work out to spawned worker processes, and stop them at once when the caller gives up.

``ProcessPoolExecutor``'s context manager waits for every running task on the way out, also
when the caller is unwinding from an interrupt: Ctrl-C or SIGTERM of ``catret materialize``
during ``fusion_models`` printed "run failed" and then hung for minutes until both workers had
finished training heads nobody would use. Here any exception in the caller (a task's error, a
callback's, KeyboardInterrupt, Dagster's interrupt) cancels the queued tasks and terminates the
running workers before it propagates.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from catret_pipeline.workers.lifetime import exit_with


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel queued tasks and terminate the pool's processes without waiting for them."""
    # No public way to reach the workers before Python 3.14's terminate_workers().
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)


def run_in_processes(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    workers: int,
    on_result: Callable[[int, Any], None],
) -> None:
    """``fn(item)`` for every item in up to ``workers`` spawned processes; ``on_result(i, r)``
    runs in this process as each finishes (completion order). ``fn`` must be importable."""
    # spawn, not fork: forking a process whose torch/OpenMP threads already ran can deadlock.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(items))), mp_context=ctx, initializer=exit_with
    )
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())
    except BaseException:
        stop_workers(pool)
        raise
    pool.shutdown(wait=True)
