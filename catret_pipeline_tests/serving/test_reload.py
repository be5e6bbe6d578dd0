"""Hot reload: a rebuilt data dir is picked up atomically while requests keep coming."""

from __future__ import annotations

import threading
import time

from catret_pipeline.serving.store import Store, build_running
from catret_pipeline.storage.locks import BUILD_LOCK, file_lock
from catret_pipeline_tests.serving.conftest import http_get, running_server
from catret_pipeline_tests.serving.tiny import write_catalogue

NEW = " v2"


def test_reload_during_concurrent_requests_drops_nothing_and_never_mixes(fresh_dir):
    store = Store(fresh_dir, interval=0.05, settle=0.3)
    with running_server(store, watch=True) as base:
        failures: list[str] = []
        versions: list[str] = []  # "old" / "new" per answered request
        stop = threading.Event()

        def client(i: int) -> None:
            queries = ["Boots", "Lamps", "Rugs", "Dresses"]
            n = 0
            while not stop.is_set():
                q = queries[(i + n) % len(queries)]
                n += 1
                try:
                    r = http_get(f"{base}/api/search?q={q}&k=12", timeout=30)
                except Exception as exc:  # a dropped connection is a failure too
                    failures.append(f"{q}: {type(exc).__name__}: {exc}")
                    continue
                if r.status != 200:
                    failures.append(f"{q}: HTTP {r.status} {r.body[:200]!r}")
                    continue
                titles = [h["title"] for h in r.json()["hits"]]
                marked = {t.endswith(NEW) for t in titles}
                if len(titles) != 12 or len(marked) != 1:
                    failures.append(f"{q}: mixed or short answer {titles}")
                    continue
                versions.append("new" if marked.pop() else "old")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            write_catalogue(fresh_dir, title_suffix=NEW)  # the "build": every table rewritten
            deadline = time.monotonic() + 60
            while store.reloads == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # keep the load on after the swap
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)

        assert store.reloads == 1, store.last_reload_error
        assert failures == []
        assert "old" in versions and "new" in versions
        # Once the new snapshot answered, no later request is served from the old one.
        first_new = versions.index("new")
        assert versions[first_new:].count("old") <= len(threads)  # only requests already in flight
        health = http_get(f"{base}/health").json()
        assert health["reloads"] == 1
        body = http_get(f"{base}/api/search?q=Boots&k=3").json()
        assert all(h["title"].endswith(NEW) for h in body["hits"])


def test_no_reload_while_a_build_holds_the_lock(fresh_dir):
    store = Store(fresh_dir, interval=0, settle=0)
    old = store.snapshot
    with file_lock(fresh_dir / BUILD_LOCK, wait_s=0):
        assert build_running(fresh_dir)
        write_catalogue(fresh_dir, title_suffix=NEW)
        assert store.check() is False
        assert store.snapshot is old
    assert not build_running(fresh_dir)
    assert store.check() is True
    assert store.snapshot is not old
    assert store.search("Boots", 1).hits[0].title.endswith(NEW)


def test_a_broken_build_keeps_the_old_snapshot(fresh_dir):
    store = Store(fresh_dir, interval=0, settle=0)
    old = store.snapshot
    (fresh_dir / "assets" / "products.parquet").write_bytes(b"not parquet")
    assert store.check() is False
    assert store.snapshot is old
    assert "products.parquet" in store.last_reload_error
    assert store.search("Boots", 2).hits
