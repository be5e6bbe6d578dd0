"""The refresh slot: at most one build or refresh per data dir at a time.

Every refresh run (schedule, sensor, ``catret materialize``) carries the tag ``catret/refresh``,
which the CLI's ``dagster.yaml`` limits to one started run; a CLI run also records its process
and host, so a run whose process died can be told from a live one.
"""

from __future__ import annotations

import os
import socket

from catret_pipeline.config import REFRESH_TAG
from catret_pipeline.storage.temp_files import pid_alive

PID_TAG = "catret/pid"
HOST_TAG = "catret/host"


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
        if pid and pid.isdigit() and host == socket.gethostname() and not pid_alive(int(pid)):
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
