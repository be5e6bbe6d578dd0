"""Temporary files of killed atomic writers are swept by the next build; live writers' are not.

Writers are real subprocesses: one killed with SIGKILL inside ``atomic_path`` (what a killed
build leaves), one still inside it (a concurrent writer, e.g. a daemon run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catret_pipeline import cli
from catret_pipeline.storage.atomic import host_tag, parse_temp_name
from catret_pipeline.storage.temp_files import FOREIGN_STALE_AGE_S, remove_stale_temp_files
from catret_pipeline_tests.support import REPO

WRITER = """
import sys, time
from catret_pipeline.storage.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _writer(target: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.exists(), "the writer did not start"
    return proc, tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _backdate(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_sweep_removes_dead_writers_and_keeps_live_ones(tmp_path):
    data = tmp_path / "data"
    killed, killed_tmp = _writer(data / "assets" / "products.parquet")
    live, live_tmp = _writer(data / "catret.duckdb")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_tmp.exists()  # what a kill leaves behind
        _backdate(live_tmp, 2 * FOREIGN_STALE_AGE_S)  # age alone never condemns a live writer
        legacy_old = data / "indexes" / ".clip.bin.abcdefgh.tmp"  # pre-pid name, a day old
        legacy_new = data / "indexes" / ".mpnet.bin.ijklmnop.tmp"  # pre-pid name, fresh
        legacy_old.parent.mkdir(parents=True)
        legacy_old.write_bytes(b"x")
        legacy_new.write_bytes(b"x")
        _backdate(legacy_old, FOREIGN_STALE_AGE_S + 60)
        other_host = data / f".catret.duckdb.{'0' * 8}-{_dead_pid()}-qrstuvwx.tmp"
        other_host.write_bytes(b"x")  # another host's pid cannot be checked here: kept
        unrelated = data / "assets" / ".notes.tmp"  # not an atomic_path name
        unrelated.write_bytes(b"x")
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        outside_tmp = outside / f".x.parquet.{host_tag()}-{_dead_pid()}-abcdefgh.tmp"
        outside_tmp.write_bytes(b"x")
        (data / "link").symlink_to(outside, target_is_directory=True)

        removed = remove_stale_temp_files(data)

        assert {r.path for r in removed} == {killed_tmp, legacy_old}
        assert f"process {killed.pid} is gone" in next(
            r.reason for r in removed if r.path == killed_tmp
        )
        for kept in (live_tmp, legacy_new, other_host, unrelated, outside_tmp):
            assert kept.exists(), kept
        assert (data / "assets").is_dir()
    finally:
        live.kill()
        live.wait()


def test_temp_names_carry_host_and_pid(tmp_path):
    from catret_pipeline.storage.atomic import atomic_path

    with atomic_path(tmp_path / "t.parquet") as tmp:
        info = parse_temp_name(tmp.name)
        assert info is not None
        assert (info.target, info.host, info.pid) == ("t.parquet", host_tag(), os.getpid())
        # A duckdb log beside a temp catalogue belongs to it.
        assert parse_temp_name(tmp.name + ".wal") == info
    assert parse_temp_name("products.parquet") is None
    assert parse_temp_name(".products.parquet.swp") is None


@pytest.fixture()
def project(tmp_path, small_raw_root, cli_env_cleared):
    return {"data": tmp_path / "data", "raw": small_raw_root}


def test_next_materialize_removes_a_killed_catalogue_build(project, capsys):
    data = project["data"]
    data.mkdir()
    # What a build killed inside build_catalog leaves: duckdb's temp catalogue and its log.
    leftover = data / f".catret.duckdb.{host_tag()}-{_dead_pid()}-abcdefgh.tmp"
    leftover.write_bytes(b"half a catalogue")
    wal = Path(str(leftover) + ".wal")
    wal.write_bytes(b"log")
    argv = ["materialize", "--data-dir", str(data), "--raw-root", str(project["raw"])]
    assert cli.main([*argv, "--select", "+key:products"]) == 0
    assert not leftover.exists() and not wal.exists()
    assert "removed 2 stale temporary file(s)" in capsys.readouterr().out
