"""Training the prepared jobs: once per distinct training run, longest first, in worker
processes on CPU."""

from __future__ import annotations

from collections.abc import Callable

from catret_pipeline.fusion.jobs import TrainingJob
from catret_pipeline.fusion.train import (
    TrainResult,
    epochs_to_run,
    resolve_device,
    steps_per_epoch,
    train_heads,
)
from catret_pipeline.workers.pool import run_in_processes


def _estimated_cost(job: TrainingJob) -> float:
    """Relative run time, for ordering only: steps x (batch + 40). A CPU step cost ~4.3 ms at
    batch 8 and ~14.6 ms at batch 128 with the default heads, i.e. about proportional to
    batch + 40."""
    n, batch = job.n_train, job.batch_size
    return epochs_to_run(n, batch, job.config) * steps_per_epoch(n, batch) * (batch + 40)


def _train_job(job: TrainingJob) -> TrainResult:
    # Module-level so a spawned worker process can unpickle it.
    train, val = job.data()
    return train_heads(train, val, job.spec, job.config, job.batch_size)


def run_jobs(
    jobs: list[TrainingJob],
    workers: int = 1,
    on_done: Callable[[TrainingJob, TrainResult, str | None], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[int, tuple[TrainResult, str | None]]:
    """Train every job, once per distinct ``training_key``, in up to ``workers`` processes.

    Returns ``{job index: (result, name of the model whose run it shares or None)}``. Each
    run is seeded on its own, so results do not depend on ``workers`` or on the order.
    ``on_done`` is called in the calling process as each job's result becomes available.
    """
    leaders: dict[str, int] = {}
    followers: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        lead = leaders.setdefault(job.training_key, i)
        followers.setdefault(lead, [])
        if lead != i:
            followers[lead].append(i)
    # Longest runs first, so the pool's tail is short.
    order = sorted(leaders.values(), key=lambda i: -_estimated_cost(jobs[i]))
    out: dict[int, tuple[TrainResult, str | None]] = {}

    def done(lead: int, result: TrainResult) -> None:
        for i in [lead, *followers[lead]]:
            shared = None if i == lead else jobs[lead].spec.name
            out[i] = (result, shared)
            if shared and log is not None:
                log(f"{jobs[i].spec.name}/{jobs[i].setting}: same training as {shared}, shared")
            if on_done is not None:
                on_done(jobs[i], result, shared)

    cuda = any(resolve_device(jobs[i].config.device).type == "cuda" for i in order)
    if workers <= 1 or len(order) <= 1 or cuda:
        for lead in order:
            done(lead, _train_job(jobs[lead]))
        return out
    run_in_processes(
        _train_job,
        [jobs[lead] for lead in order],
        workers,
        lambda pos, result: done(order[pos], result),
    )
    return out
