"""run_in_processes: results come back, and an interrupted caller does not wait for its workers
(Ctrl-C of `catret materialize` during fusion_models used to hang until both trainers finished
their heads)."""

from __future__ import annotations

import math
import time

import pytest

from catret_pipeline.workers.pool import run_in_processes


def test_every_result_comes_back_with_its_index():
    got = {}
    run_in_processes(math.sqrt, [4.0, 9.0, 16.0], 2, got.__setitem__)
    assert got == {0: 2.0, 1: 3.0, 2: 4.0}


def test_an_interrupt_terminates_running_workers_instead_of_waiting():
    def interrupt(i, result):
        raise KeyboardInterrupt

    started = time.monotonic()
    # One task ends at once; one worker then sleeps for 10 minutes and one task is queued.
    with pytest.raises(KeyboardInterrupt):
        run_in_processes(time.sleep, [0, 600, 600], 2, interrupt)
    # A hang check, not a speed target: waiting for the sleeper would take 600 s.
    assert time.monotonic() - started < 120


def test_a_task_error_propagates_and_stops_the_pool():
    started = time.monotonic()
    with pytest.raises(ValueError):
        run_in_processes(math.sqrt, [-1.0, 600.0], 2, lambda i, r: time.sleep(0))
    assert time.monotonic() - started < 120
