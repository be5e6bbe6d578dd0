"""The refresh sensor on a real catalogue directory, and the run queue that keeps refreshes apart."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import dagster as dg
import pytest

from catret_pipeline import config as catret_config
from catret_pipeline.cli.environment import DAGSTER_YAML
from catret_pipeline.config import REFRESH_TAG
from catret_pipeline.definitions import build_definitions
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.refresh.fingerprint import Cursor, FileState, compare, fingerprint_files
from catret_pipeline.refresh.sensors import build_raw_catalogue_sensor

raw_catalogue_sensor = build_raw_catalogue_sensor(300)


def _write(root: Path, market: str, cat: str, asins: list[str]) -> Path:
    path = root / market / cat / f"metadata_{market}_{cat}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(
        json.dumps({"asin": a, "title": f"t {a}", "categories": [cat, "Leaf"]}).encode() + b"\n"
        for a in asins
    )
    path.write_bytes(gzip.compress(body, mtime=0))
    return path


@pytest.fixture
def catalogue(tmp_path) -> Path:
    root = tmp_path / "xmarket"
    _write(root, "us", "Electronics", ["A1", "A2"])
    _write(root, "us", "Books", ["B1"])
    # Not metadata: never fingerprinted.
    (root / "us" / "Books" / "reviews_us_Books.json.gz").write_bytes(b"x")
    return root


class Ticker:
    """Evaluates the sensor like the daemon does: each tick sees the cursor the last one left."""

    def __init__(self, root: Path, **source):
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.source = XMarketSource(root=str(root), **source)

    def tick(self):
        ctx = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"xmarket": self.source}
        )
        data = raw_catalogue_sensor.evaluate_tick(ctx)
        if data.cursor is not None:
            self.cursor = data.cursor
        return data


def _bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_first_tick_requests_a_tagged_refresh_then_skips(catalogue):
    t = Ticker(catalogue)
    first = t.tick()
    (req,) = first.run_requests
    assert req.job_name in (None, "catret_build")
    assert req.tags[REFRESH_TAG] == "true"
    cursor = json.loads(t.cursor)
    assert sorted(cursor["files"]) == [
        "us/Books/metadata_us_Books.json.gz",
        "us/Electronics/metadata_us_Electronics.json.gz",
    ]
    assert req.run_key.startswith(cursor["digest"])
    again = t.tick()
    assert not again.run_requests
    assert "unchanged" in again.skip_message


def test_content_change_add_and_remove_each_request_a_run(catalogue):
    t = Ticker(catalogue)
    keys = [t.tick().run_requests[0].run_key]
    books = catalogue / "us" / "Books" / "metadata_us_Books.json.gz"
    _write(catalogue, "us", "Books", ["B1", "B2"])  # edited in place
    _bump_mtime(books)
    keys.append(t.tick().run_requests[0].run_key)
    new = _write(catalogue, "uk", "Toys", ["T1"])  # a new market + category file
    keys.append(t.tick().run_requests[0].run_key)
    new.unlink()
    keys.append(t.tick().run_requests[0].run_key)
    assert len(set(keys)) == 4
    # Back to an earlier catalogue is still a change (and a new run key, not a deduplicated one).
    _write(catalogue, "us", "Books", ["B1"])
    _bump_mtime(books, 20)
    back = t.tick().run_requests[0].run_key
    assert back.split(":")[0] == keys[0].split(":")[0] and back not in keys
    assert not t.tick().run_requests


def test_touch_without_new_bytes_is_not_a_change_and_is_not_rehashed(catalogue):
    t = Ticker(catalogue)
    t.tick()
    books = catalogue / "us" / "Books" / "metadata_us_Books.json.gz"
    _bump_mtime(books)
    touched = t.tick()
    assert not touched.run_requests
    assert "1 touched" in touched.skip_message
    # The new mtime is in the cursor, so the next tick trusts size+mtime and reads no bytes.
    state = Cursor.loads(t.cursor).files
    assert state["us/Books/metadata_us_Books.json.gz"].mtime_ns == books.stat().st_mtime_ns
    again = fingerprint_files(catalogue, sorted(catalogue.rglob("metadata_*.json.gz")), state)
    assert again.hashed == ()


def test_same_size_same_mtime_edit_is_trusted_but_size_change_is_hashed(catalogue):
    books = catalogue / "us" / "Books" / "metadata_us_Books.json.gz"
    files = sorted(catalogue.rglob("metadata_*.json.gz"))
    first = fingerprint_files(catalogue, files)
    assert len(first.hashed) == 2
    _write(catalogue, "us", "Books", ["B1", "B9"])
    second = fingerprint_files(catalogue, files, first.files)
    assert second.hashed == ("us/Books/metadata_us_Books.json.gz",)
    change = compare(first.files, second.files)
    assert change.modified == ("us/Books/metadata_us_Books.json.gz",) and change.changed
    assert second.digest != first.digest
    assert books.stat().st_size == second.files["us/Books/metadata_us_Books.json.gz"].size


def test_only_selected_files_count(catalogue):
    t = Ticker(catalogue, categories=["Electronics"])
    t.tick()
    _write(catalogue, "us", "Books", ["B1", "B2", "B3"])
    assert not t.tick().run_requests  # Books is not ingested, so not watched
    _write(catalogue, "us", "Electronics", ["A1"])
    assert t.tick().run_requests


def test_missing_root_skips_and_keeps_the_cursor(catalogue, tmp_path):
    t = Ticker(catalogue)
    t.tick()
    kept = t.cursor
    t.source = XMarketSource(root=str(tmp_path / "gone"))
    data = t.tick()
    assert not data.run_requests and "not readable" in data.skip_message
    assert t.cursor == kept


@pytest.mark.parametrize("text", [None, "", "not json", '{"v": 99}', '{"v": 1, "files": 3}'])
def test_bad_cursor_reads_as_empty(text):
    assert Cursor.loads(text).files == {} and Cursor.loads(text).digest is None


def test_cursor_round_trip():
    c = Cursor({"a/b.json.gz": FileState(10, 123, "ff")}, "dd", 3)
    assert Cursor.loads(c.dumps()) == c


def test_sensor_is_in_the_definitions_and_targets_the_build_job(tmp_path, monkeypatch):
    monkeypatch.setenv(catret_config.ENV_IMAGE_MIRROR, "")
    defs = build_definitions(str(tmp_path / "data"), str(tmp_path / "raw"))
    sensor = defs.resolve_sensor_def("raw_catalogue_sensor")
    assert sensor.job_name == "catret_build"
    assert sensor.minimum_interval_seconds == 300
    assert defs.resolve_schedule_def("catalogue_refresh").tags[REFRESH_TAG] == "true"


def test_interval_is_configurable(monkeypatch):
    monkeypatch.setenv("CATRET_REFRESH_SENSOR_INTERVAL", "60")
    assert catret_config.CatretConfig.from_env().refresh_sensor_interval == 60
    monkeypatch.setenv("CATRET_REFRESH_SENSOR_INTERVAL", "0")
    with pytest.raises(ValueError):
        catret_config.CatretConfig.from_env()


def _run(instance, status, tags):
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("catret"), "__repository__"),
        "catret_build",
    )
    run = dg.DagsterRun(
        job_name="catret_build",
        run_id=str(uuid.uuid4()),
        status=status,
        tags=tags,
        remote_job_origin=origin,
    )
    instance.add_run(run)
    return run.run_id


def test_run_queue_never_starts_two_refreshes(tmp_path):
    """The daemon's own dequeue step, on an instance configured by the CLI's dagster.yaml."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
        assert {"key": REFRESH_TAG, "limit": 1} in config.run_queue_config.tag_concurrency_limits
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        refresh = {REFRESH_TAG: "true"}
        q1 = _run(instance, dg.DagsterRunStatus.QUEUED, refresh)
        q2 = _run(instance, dg.DagsterRunStatus.QUEUED, refresh)
        other = _run(instance, dg.DagsterRunStatus.QUEUED, {})

        def dequeued() -> list[str]:
            return [r.run_id for r in daemon._get_runs_to_dequeue(instance, config, None)]

        assert dequeued() == [q1, other]  # two refreshes queued: only the first may start
        # q1 starts (as the daemon would launch it): q2 must keep waiting.
        instance.delete_run(q1)
        running = _run(instance, dg.DagsterRunStatus.STARTED, refresh)
        assert dequeued() == [other]
        # Once it has finished, q2 may start.
        instance.delete_run(running)
        _run(instance, dg.DagsterRunStatus.SUCCESS, refresh)
        assert dequeued() == [q2, other]


def test_a_link_out_of_the_raw_root_is_not_read(catalogue, tmp_path):
    # Ingest quarantines such a file unread (test_ingest_symlinks.py); the sensor must not
    # read it either, not even to hash it.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "secret.json.gz"
    secret.write_bytes(b"secret")
    link = catalogue / "us" / "Stolen" / "metadata_us_Stolen.json.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    rel = "us/Stolen/metadata_us_Stolen.json.gz"
    fp = fingerprint_files(catalogue, sorted(catalogue.rglob("metadata_*.json.gz")))
    assert fp.files[rel].sha256 == "outside_raw_root" and rel not in fp.hashed
    assert len(fp.hashed) == 2  # the two real files
