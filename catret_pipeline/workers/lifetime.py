"""Worker processes end with the process that started them.

A SIGKILLed build cannot shut its process pools down, and a pool worker blocked on its task
queue does not notice that the build is gone: the fusion trainers of a killed build stayed
alive, idle, holding ~850 MB each, until the machine rebooted. Each worker therefore watches
the build's pid and exits once it is gone. Polling rather than Linux's ``PR_SET_PDEATHSIG``:
that signal fires when the parent *thread* that forked ends (a Dagster step's thread, a pool's
manager thread), not when the build dies, and under ``forkserver`` the parent is the fork
server, not the build.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 1.0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def _watch(owner: int, parent: int, interval: float) -> None:
    while not _gone(owner) and os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)  # nothing to clean up: whoever wanted the results is gone


def exit_with(owner: int | None = None, interval: float = POLL_SECONDS) -> None:
    """End this process (from a daemon thread) once ``owner`` (default: the parent) has exited
    or this process has been re-parented. Use as a pool ``initializer``."""
    parent = os.getppid()
    threading.Thread(
        target=_watch,
        args=(parent if owner is None else owner, parent, interval),
        name="exit-with-owner",
        daemon=True,
    ).start()
