"""``catret sql``: read-only in effect (issue #12 item 1) and answering from its own data dir
wherever that lives (item 3). Real DuckDB, real files; every escape is tried for real and the
file system is checked afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess

import duckdb
import polars as pl
import pytest

from catret_pipeline import cli
from catret_pipeline import config as catret_config
from catret_pipeline.storage.atomic import atomic_write_parquet
from catret_pipeline.storage.duckdb_catalog import build_catalog, view_sources


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    for name in (
        catret_config.ENV_DATA_DIR,
        catret_config.ENV_RAW_ROOT,
        catret_config.ENV_TABLE_STORE,
        "DAGSTER_HOME",
        "HF_HUB_OFFLINE",
        catret_config.ENV_PROFILE,
    ):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def _build(data):
    assets = data / "assets"
    atomic_write_parquet(
        pl.DataFrame({"model": ["m"] * 3, "r": [0.1, 0.2, 0.3]}), assets / "metrics.parquet"
    )
    atomic_write_parquet(pl.DataFrame({"asin": ["a", "b"]}), assets / "products.parquet")
    atomic_write_parquet(pl.DataFrame({"k": [1]}), assets / "parted" / "p1.parquet")
    atomic_write_parquet(pl.DataFrame({"k": [2]}), assets / "parted" / "p2.parquet")
    build_catalog(data / "catret.duckdb", view_sources(assets))
    return data


@pytest.fixture()
def data(tmp_path):
    return _build(tmp_path / "data")


def _sql(data, query, capsys):
    code = cli.main(["sql", "--data-dir", str(data), query])
    out = capsys.readouterr()
    return code, out.out, out.err


def _tree(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )


def test_plain_reads_work(data, capsys):
    code, out, err = _sql(data, "select count(*) as n from metrics", capsys)
    assert code == 0, err
    assert "3" in out
    code, out, _ = _sql(data, "select sum(k) as s from parted", capsys)
    assert code == 0 and "3" in out
    for ok in ("show tables", "describe products", "from products", "explain select 1"):
        assert _sql(data, ok, capsys)[0] == 0, ok


ESCAPES = [
    "copy (select 'x') to '{outside}/copied.csv'",
    "copy (select 1 as model) to '{data}/assets/metrics.parquet' (format parquet)",
    "copy metrics to '{data}/assets/evil.parquet'",
    "export database '{outside}/exported'",
    "attach '{outside}/attached.duckdb' as evil",
    "install httpfs",
    "load httpfs",
    "select * from read_text('/etc/hostname')",
    "select * from read_blob('/etc/hostname')",
    "select * from read_csv('{outside}/secret.csv')",
    "select * from read_text('{data}/assets/../../secret.csv')",
    "select * from glob('/etc/*')",
    "set enable_external_access = true",
    "set lock_configuration = false",
    "reset lock_configuration",
    "set allowed_directories = ['/']",
    "pragma enable_profiling",
    "set profiling_output = '{outside}/profile.json'",
    "explain analyze copy (select 1) to '{data}/assets/explained.csv'",
    "select 1; copy (select 2) to '{outside}/second.csv'",
    "create temp table t as select 1",
    "checkpoint",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_every_escape_is_refused_and_writes_nothing(data, tmp_path, capsys, template):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("password\nhunter2\n")
    before_data, before_out = _tree(data), _tree(outside)
    query = template.format(outside=outside, data=data)
    code, out, err = _sql(data, query, capsys)
    assert code != 0, f"{query!r} ran: {out}"
    assert "hunter2" not in out
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, err
    assert _tree(data) == before_data
    assert _tree(outside) == before_out


def test_lock_holds_after_a_refused_set_within_one_session(data):
    # The same guarantees hold for the connection itself (a caller bypassing the statement
    # check, e.g. a future UI): DuckDB's own lock refuses SET and outside reads.
    from catret_pipeline.storage.duckdb_catalog import open_catalog

    con = open_catalog(data / "catret.duckdb", data / "assets")
    try:
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("set enable_external_access = true")
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute("select * from read_text('/etc/hostname')").fetchall()
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute("copy (select 1) to '/tmp/catret-sql-escape.csv'")
        assert con.execute("select count(*) from metrics").fetchone()[0] == 3
    finally:
        con.close()
    assert not os.path.exists("/tmp/catret-sql-escape.csv")


def test_a_copied_data_dir_answers_from_its_own_tables(data, tmp_path, capsys):
    backup = tmp_path / "backup" / "data"
    backup.parent.mkdir()
    subprocess.run(["cp", "-a", str(data), str(backup)], check=True)
    # The copy diverges: 1 metrics row there, 3 in the original.
    atomic_write_parquet(
        pl.DataFrame({"model": ["m"], "r": [0.9]}), backup / "assets" / "metrics.parquet"
    )
    code, out, err = _sql(backup, "select count(*) as n, max(r) as top from metrics", capsys)
    assert code == 0, err
    assert "0.9" in out and "0.3" not in out
    # With the original gone the copy still answers (nothing points back at it).
    shutil.rmtree(data)
    code, out, err = _sql(backup, "select sum(k) as s from parted", capsys)
    assert code == 0 and "3" in out, err


def test_a_plain_duckdb_shell_on_a_copy_never_reads_the_original(data, tmp_path):
    backup = tmp_path / "copy"
    shutil.copytree(data, backup)
    atomic_write_parquet(
        pl.DataFrame({"model": ["m"], "r": [0.9]}), backup / "assets" / "metrics.parquet"
    )
    con = duckdb.connect(str(backup / "catret.duckdb"), read_only=True)
    try:
        con.execute(f"set file_search_path = '{backup / 'assets'}'")
        assert con.execute("select count(*) from metrics").fetchone()[0] == 1
    finally:
        con.close()
    views = duckdb.connect(str(backup / "catret.duckdb"), read_only=True)
    try:
        sql = " ".join(
            r[0]
            for r in views.execute("select sql from duckdb_views() where not internal").fetchall()
        )
    finally:
        views.close()
    assert str(data) not in sql, "a view still holds an absolute path"
