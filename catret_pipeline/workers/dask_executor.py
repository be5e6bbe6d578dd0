"""The build's steps as tasks on a Dask distributed cluster, through dagster-dask.

``CATRET_EXECUTOR=dask`` with ``CATRET_DASK_ADDRESS`` set connects to that scheduler (workers
started elsewhere, on machines that have this package and either the data dir on a shared
filesystem or both object stores set, docs/scaling.md "Storage"); without it every run starts
its own ``LocalCluster`` on 127.0.0.1. Each step is one Dask task that rebuilds the job from
the reconstructable pointer and runs that one step (dagster-dask's
``query_on_dask_worker``); Dask places the tasks, keeps the step order through the futures each
task is handed, and reruns a task elsewhere when its worker dies.

:class:`CatretDaskExecutor` is dagster-dask's executor with these changes, each small:

* a step whose upstream step failed is not run (dagster-dask submits it anyway and it fails
  loading an input that was never written), as the multiprocess executor abandons it;
* a re-execution (from failure, or of some steps) waits only on the upstream steps it runs
  again (dagster-dask looks up a future for every upstream step: KeyError);
* task keys carry the run id: dagster-dask keys them ``<job>.<step>``, and Dask hands a second
  run's identically keyed task the first run's result while that is still held on a shared
  scheduler;
* the per-run ``LocalCluster`` is closed when the run ends (dagster-dask leaves it to the
  garbage collector, so a long-lived process collects idle workers);
* local workers are not daemonic (see :data:`DAEMON_ENV`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dagster as dg
import dask
import dask.distributed
from dagster._core.errors import raise_execution_interrupts
from dagster._core.events import DagsterEvent
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._utils import iterate_with_context
from dagster_dask.executor import (
    DaskExecutor,
    dask_executor,
    get_dask_resource_requirements,
    query_on_dask_worker,
)
from dagster_shared.serdes import serialize_value
from dask.sizeof import sizeof

#: Dask starts worker processes as daemons, and a daemonic process may not have children:
#: ``fusion_models`` trains its heads in a process pool ("daemonic processes are not allowed to
#: have children"). Local clusters get ``distributed.worker.daemon: False`` here; workers of an
#: existing cluster must be started with this variable set to ``False`` (docs/scaling.md).
DAEMON_ENV = "DASK_DISTRIBUTED__WORKER__DAEMON"


@sizeof.register(DagsterEvent)
def _sizeof_event(event: DagsterEvent) -> int:
    # A task's result is the list of its step's events, and Dask measures every result it keeps.
    # Its generic tuple rule iterates the fields, and Dagster's ``@record`` values (the metadata
    # inside the events) refuse iteration: every step logged "Sizeof calculation ... failed"
    # warnings. The serialised length is the size the event actually has (a few kB, < 1 ms).
    return sys.getsizeof(event) + len(serialize_value(event))


@dataclass(frozen=True)
class NotRun:
    """A task's result when its step was not run because an upstream step failed (or was itself
    not run); the orchestrator logs why, and the step's own dependents see it in turn."""

    step_key: str
    failed: tuple[str, ...]
    not_run: tuple[str, ...]

    @property
    def message(self) -> str:
        # The multiprocess executor's words for an abandoned step.
        failed = f" failed: {list(self.failed)}" if self.failed else ""
        not_run = f" were not executed: {list(self.not_run)}" if self.not_run else ""
        return f"Dependencies for step {self.step_key}{failed}{not_run}. Not executing."


def run_step(
    upstream: Mapping[str, list[DagsterEvent] | NotRun],
    step_key: str,
    recon_job,
    dagster_run,
    run_config,
    instance_ref,
    known_state,
) -> list[DagsterEvent] | NotRun:
    """The Dask task of one step: its upstream steps' results (Dask resolves the futures before
    the task starts, which is what orders the steps), then the step itself unless one of them
    failed."""
    not_run = tuple(sorted(k for k, r in upstream.items() if isinstance(r, NotRun)))
    failed = tuple(
        sorted(
            k
            for k, r in upstream.items()
            if not isinstance(r, NotRun) and any(e.is_step_failure for e in r)
        )
    )
    if failed or not_run:
        return NotRun(step_key, failed, not_run)
    return list(
        query_on_dask_worker(
            None, recon_job, dagster_run, run_config, [step_key], instance_ref, known_state
        )
    )


class CatretDaskExecutor(DaskExecutor):
    """dagster-dask's executor for the ``local`` and ``existing`` clusters, with the changes in
    the module docstring. The submission loop is dagster-dask's (one task per step, level by
    level, waiting on the results as they complete); only the task function and its key differ."""

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        # An ephemeral instance is refused before this by the executor's requirements: every
        # worker opens the run's instance from its ref, so it must be on disk.
        with (
            dask.config.set({"distributed.worker.daemon": False}),
            self._cluster(plan_context.job_name) as cluster,
            dask.distributed.Client(cluster) as client,
        ):
            yield from self._submit_and_wait(plan_context, execution_plan, client)

    def _cluster(self, job_name: str):
        if self.cluster_type == "existing":
            return contextlib.nullcontext(self.cluster_configuration["address"])
        if self.cluster_type == "local":
            return dask.distributed.LocalCluster(**self.build_dict(job_name))
        raise dg.DagsterInvariantViolationError(
            f"catret's dask executor runs on 'local' or 'existing' clusters, not {self.cluster_type!r}"
        )

    def _submit_and_wait(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan, client
    ) -> Iterator[DagsterEvent]:
        run = plan_context.dagster_run
        instance_ref = plan_context.instance.get_ref()
        futures: dict[str, dask.distributed.Future] = {}
        steps = {}
        for level in execution_plan.get_steps_to_execute_by_level():
            for step in level:
                # Upstream steps of this plan only: in a re-execution (from failure, or of a
                # selection) the others ran in the parent run and their outputs are stored.
                # dagster-dask looks every one up and fails with a KeyError there.
                upstream = {
                    key: futures[key]
                    for step_input in step.step_inputs
                    for key in step_input.dependency_keys
                    if key in futures
                }
                futures[step.key] = client.submit(
                    run_step,
                    upstream,
                    step.key,
                    plan_context.reconstructable_job,
                    run,
                    plan_context.run_config,
                    instance_ref,
                    execution_plan.known_state,
                    key=f"{plan_context.job_name}.{run.run_id}.{step.key}",
                    resources=get_dask_resource_requirements(step.tags),
                )
                steps[futures[step.key].key] = step
        done = dask.distributed.as_completed(list(futures.values()), with_results=True)
        for future, result in iterate_with_context(raise_execution_interrupts, done):
            if isinstance(result, NotRun):
                plan_context.for_step(steps[future.key]).log.error(result.message)
                continue
            yield from result


@dg.executor(
    name="dask",
    config_schema=dask_executor.config_schema,
    requirements=dg.multiple_process_executor_requirements(),
)
def catret_dask_executor(init_context) -> CatretDaskExecutor:
    """dagster-dask's ``dask_executor`` (same config), running :class:`CatretDaskExecutor`."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return CatretDaskExecutor(cluster_type, cluster_configuration)


def local_cluster_options(workers: int = 0) -> dict:
    """``LocalCluster`` arguments of the per-run cluster: ``workers`` processes (0 = one per
    CPU) on 127.0.0.1."""
    return {
        "n_workers": workers or os.cpu_count() or 1,
        # One step per worker process at a time: Dagster steps are not thread-safe, and a step's
        # encoder already uses the cores it is given. (The nanny also sets OMP_NUM_THREADS=1 in
        # its workers: one thread per worker, as wanted here.)
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        # No dashboard, and the scheduler's remaining HTTP routes (health, metrics) on a free
        # port: with the address None alone they still take 8787 when it is free.
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        # No per-worker memory limit: Dask would pause, then restart, a worker whose step goes
        # past RAM / n_workers, which a model-training step may well do.
        "memory_limit": 0,
    }


def dask_executor_def(address: str = "", workers: int = 0) -> dg.ExecutorDefinition:
    """The build job's executor: the scheduler at ``address``, or (empty) a per-run
    ``LocalCluster`` of ``workers`` processes (0 = one per CPU)."""
    if address:
        cluster: dict = {"existing": {"address": address}}
    else:
        cluster = {"local": local_cluster_options(workers)}
    return catret_dask_executor.configured({"cluster": cluster}, name="dask")
