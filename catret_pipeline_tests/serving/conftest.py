"""Fixtures: a tiny data dir and the real server (uvicorn) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from catret_pipeline.serving.app import create_app
from catret_pipeline.serving.store import Store
from catret_pipeline_tests.serving.tiny import write_catalogue


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_get(url: str, timeout: float = 30.0) -> Reply:
    """A real HTTP GET; error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@contextlib.contextmanager
def running_server(store: Store, watch: bool = False) -> Iterator[str]:
    """uvicorn serving the app in a thread on a port the OS picked; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(store, watch=watch), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serving") / "data"
    write_catalogue(root)
    return root


@pytest.fixture(scope="session")
def store(tiny_dir) -> Store:
    s = Store(tiny_dir, interval=0)
    s.warm()
    return s


@pytest.fixture(scope="session")
def base_url(store) -> Iterator[str]:
    with running_server(store) as url:
        yield url


@pytest.fixture
def fresh_dir(tiny_dir, tmp_path) -> Path:
    """A private copy of the tiny data dir, for tests that rewrite it."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_dir, dst)
    return dst
