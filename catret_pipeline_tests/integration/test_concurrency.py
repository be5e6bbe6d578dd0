"""Builds, searches and SQL readers at once on one fresh data dir (issue #12's acceptance).

Two ``catret materialize`` start 0.2 s apart on an empty data dir (one runs, the other is
refused with the documented exit code 3 or runs after it), while ``catret search`` and
``catret sql`` are run in a loop through the CLI. Readers may be told, clearly, that nothing is
built yet; none may print a traceback. Afterwards the instance is usable: a further build
exits 0 and ``catret sql`` answers from the catalogue.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from catret_pipeline_tests.cli.test_instance_lock import REPO, _env

pytestmark = pytest.mark.slow

CATRET = [sys.executable, "-m", "catret_pipeline.cli"]
# Small and fast: the products and the catalogue over them (the step that rewrites
# catret.duckdb under the sql readers), not the encoders.
SELECT = "+key:products or key:catret_duckdb"
#: The documented clear errors a reader may get before the first build has finished.
NOT_BUILT = ("catret materialize` first", "no materialised assets", "retry in a moment")


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CATRET, *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _build(data: Path, raw: Path) -> subprocess.Popen:
    cmd = [*CATRET, "materialize", "--data-dir", str(data), "--raw-root", str(raw)]
    return subprocess.Popen(
        [*cmd, "--select", SELECT],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Reader(threading.Thread):
    """Runs one CLI reader in a loop until stopped, keeping every unclear failure."""

    def __init__(self, *args: str) -> None:
        super().__init__(daemon=True)
        self.args, self.stop, self.calls, self.answers, self.failures = (
            args,
            threading.Event(),
            0,
            0,
            [],
        )

    def run(self) -> None:
        while not self.stop.is_set():
            proc = _cli(*self.args)
            self.calls += 1
            if proc.returncode == 0:
                self.answers += 1
            elif "Traceback" in proc.stderr or not any(m in proc.stderr for m in NOT_BUILT):
                self.failures.append((proc.returncode, proc.stderr[-1500:]))


def test_builds_searches_and_sql_at_once_on_a_fresh_data_dir(tmp_path, small_raw_root):
    raw, data = small_raw_root, tmp_path / "data"
    readers = [
        Reader("search", "--data-dir", str(data), "shoes", "--model", "bm25", "-k", "3"),
        Reader("sql", "--data-dir", str(data), "select count(*) from products"),
    ]
    for reader in readers:
        reader.start()
    builds = [_build(data, raw)]
    time.sleep(0.2)  # the 0.2 s apart
    builds.append(_build(data, raw))
    outputs = [(b, *b.communicate(timeout=300)) for b in builds]
    for reader in readers:
        reader.stop.set()
    for reader in readers:
        reader.join(timeout=120)

    codes = [b.returncode for b, _, _ in outputs]
    assert 0 in codes and set(codes) <= {0, 3}, [
        (c, e[-2000:]) for c, (_, _, e) in zip(codes, outputs, strict=True)
    ]
    for b, _out, err in outputs:
        assert "Traceback" not in err
        if b.returncode == 3:
            assert "another" in err and "running on this data dir" in err
    for reader in readers:
        assert reader.calls >= 1
        assert not reader.failures, reader.failures[:3]

    # The instance stays usable: a further build runs, and the catalogue answers.
    again = _build(data, raw)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert "DuckDB catalogue at" in out
    sql = _cli("sql", "--data-dir", str(data), "select count(*) from products")
    assert sql.returncode == 0 and "Traceback" not in sql.stderr, sql.stderr[-2000:]
