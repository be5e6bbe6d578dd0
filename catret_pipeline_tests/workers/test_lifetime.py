"""Pool workers of a SIGKILLed build exit instead of idling forever (found by the fault-injection
test: two fusion trainers of a killed build stayed alive, ~850 MB each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """\
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from catret_pipeline.workers.lifetime import exit_with


def pid(_):
    import os
    return os.getpid()


if __name__ == "__main__":
    init = exit_with if sys.argv[1] == "watch" else None
    ctx = multiprocessing.get_context(sys.argv[2])
    # The build's own pid: under forkserver the workers' parent is the fork server.
    pool = ProcessPoolExecutor(
        max_workers=2, mp_context=ctx, initializer=init, initargs=(os.getpid(),) if init else ()
    )
    pids = set()
    while len(pids) < 2:  # both workers have started and run a task
        pids |= set(pool.map(pid, range(8)))
    print(" ".join(map(str, sorted(pids))), flush=True)
    pool.submit(time.sleep, 600)  # a worker busy, the other blocked on the queue
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _workers_after_kill(tmp_path, mode: str, method: str) -> list[int]:
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, method], stdout=subprocess.PIPE, text=True
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    survivors = [p for p in pids if _alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    return survivors


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_exit_when_the_parent_is_killed(tmp_path, method):
    assert _workers_after_kill(tmp_path, "watch", method) == []


def test_without_the_watch_workers_outlive_a_killed_parent(tmp_path):
    # The bug itself, so the test above is known to be able to fail.
    assert len(_workers_after_kill(tmp_path, "plain", "spawn")) >= 1
