"""Several first runs on a fresh data dir, in real processes (issue #12 item 2): the Dagster
instance is created once (one ``alembic_version`` row), a second build is refused with exit code
3 instead of overlapping, and the instance stays usable afterwards."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from catret_pipeline_tests.support import REPO, TEST_ENV

OPEN_AT = """\
import sys, time
import os
from catret_pipeline.cli.instance import open_instance
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
open_instance(os.environ["DAGSTER_HOME"])
print("opened")
"""


def _env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    env |= TEST_ENV  # the fast test encoders (conftest.py)
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return env


def _heads(home: Path) -> list[str]:
    con = sqlite3.connect(home / "history" / "runs.db")
    try:
        return [r[0] for r in con.execute("select version_num from alembic_version")]
    finally:
        con.close()


def test_simultaneous_first_opens_create_the_instance_once(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    script = tmp_path / "open_at.py"
    script.write_text(OPEN_AT)
    # Every process waits for the same instant (after its imports), so the opens collide.
    start = time.time() + 6
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(start)],
            cwd=REPO,
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "opened" in out
    assert len(_heads(home)) == 1


def _materialize(data: Path, raw: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "catret_pipeline.cli",
        "materialize",
        "--data-dir",
        str(data),
        "--raw-root",
        str(raw),
        "--select",
        "+key:products",
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_first_builds_started_together_do_not_corrupt_the_instance(tmp_path, small_raw_root):
    data = tmp_path / "data"
    procs = []
    for _ in range(3):
        procs.append(_materialize(data, small_raw_root))
        time.sleep(0.2)  # the 0.2 s apart
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = [p.returncode for p, _, _ in results]
    assert set(codes) <= {0, 3}, [
        (c, e[-2000:]) for c, (_, _, e) in zip(codes, results, strict=True)
    ]
    assert codes.count(0) >= 1
    for p, _out, err in results:
        assert "Traceback" not in err
        if p.returncode == 3:
            assert "another catret materialize is running on this data dir" in err
    home = data / "dagster_home"
    assert len(_heads(home)) == 1
    # The instance stays usable: a later build runs (it also sees no run left holding the slot).
    again = _materialize(data, small_raw_root)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert "done: run" in out
