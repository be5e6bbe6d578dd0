"""``catret materialize`` names the DuckDB catalogue only when the run built it (issue #12
item 11): a partial selection says what it built and that the catalogue was not refreshed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from catret_pipeline_tests.cli.test_instance_lock import _env
from catret_pipeline_tests.support import REPO


def test_partial_selection_does_not_claim_the_catalogue(tmp_path, small_raw_root):
    data: Path = tmp_path / "data"
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "materialize", "--data-dir", str(data)]
    cmd += ["--raw-root", str(small_raw_root), "--select", "+key:products"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DuckDB catalogue at" not in proc.stdout
    assert "catalogue was not refreshed" in proc.stdout
    assert "products" in proc.stdout.splitlines()[-1]
