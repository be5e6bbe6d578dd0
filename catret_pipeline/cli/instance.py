"""The Dagster instance of a data dir, opened under a cross-process lock."""

from __future__ import annotations

from pathlib import Path

#: How long a command waits for another process creating / opening the instance.
INSTANCE_LOCK_WAIT_S = 300.0


def open_instance(home: str | Path, wait_s: float = INSTANCE_LOCK_WAIT_S):
    """The Dagster instance of ``home`` (``DAGSTER_HOME``), created under a cross-process lock.

    Dagster's SQLite storages create their tables and stamp ``alembic_version`` on first open
    with no lock of their own: two first runs on a fresh data dir could leave two alembic heads
    ("Version table 'alembic_version' has more than one head present") and an instance every
    later command refuses. Every storage is touched here, inside the lock, so each is whole
    before the lock is released.
    """
    import dagster as dg

    from catret_pipeline.storage.locks import INSTANCE_LOCK, file_lock

    home = Path(home).expanduser().resolve()
    with file_lock(home / INSTANCE_LOCK, wait_s=wait_s):
        instance = dg.DagsterInstance.from_config(str(home))
        instance.get_runs(limit=1)
        instance.all_asset_keys()
        instance.all_instigator_state()
    return instance
