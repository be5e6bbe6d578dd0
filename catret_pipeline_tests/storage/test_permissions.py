"""Written files and folders follow the umask (not mkstemp's 0600), so another user (a UI or a
daemon under its own account) can read a data dir when the umask allows it.

Each case runs in a subprocess started under its umask: the umask is process-global, and the
test process must keep its own.
"""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from catret_pipeline_tests.support import REPO

WRITE_AND_REPORT = """
import json, os, stat, sys
from pathlib import Path
import polars as pl
from catret_pipeline.storage import atomic
root = Path(sys.argv[1])
table = atomic.atomic_write_parquet(pl.DataFrame({"a": [1]}), root / "assets" / "t.parquet")
text = atomic.atomic_write_text(root / "reports" / "deep" / "r.md", "x")
modes = {p: stat.S_IMODE(os.stat(root / p).st_mode)
         for p in ("assets", "assets/t.parquet", "reports", "reports/deep", "reports/deep/r.md")}
umask = os.umask(0)
print(json.dumps({"modes": modes, "umask": umask}))
"""


def _write_under(umask: str, root: Path) -> dict:
    cmd = (
        f"umask {umask} && exec {shlex.quote(sys.executable)} -c "
        f"{shlex.quote(WRITE_AND_REPORT)} {shlex.quote(str(root))}"
    )
    out = subprocess.run(
        ["sh", "-c", cmd], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [("022", 0o644, 0o755), ("077", 0o600, 0o700), ("002", 0o664, 0o775)],
)
def test_atomic_writes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    report = _write_under(umask, tmp_path / "data")
    assert report["umask"] == int(umask, 8)
    modes = report["modes"]
    for f in ("assets/t.parquet", "reports/deep/r.md"):
        assert modes[f] == file_mode, (f, oct(modes[f]))
    for d in ("assets", "reports", "reports/deep"):
        assert modes[d] == dir_mode, (d, oct(modes[d]))


def test_umask_read_leaves_it_unchanged():
    from catret_pipeline.storage.atomic import _umask_read_once, current_umask

    before = current_umask()
    assert _umask_read_once() == before
    assert current_umask() == before
    assert stat.S_IMODE(0o666 & ~before) == 0o666 & ~before
