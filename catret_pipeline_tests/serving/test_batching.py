"""Concurrent new-name encodes share forward passes: each caller gets its own row, errors reach
only their batch, and over real HTTP the answers equal one-at-a-time ones."""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from catret_pipeline.serving.batching import MicroBatcher
from catret_pipeline_tests.serving.conftest import http_get


def _slow_lengths(texts):
    time.sleep(0.05)  # long enough for the other callers to queue behind the first batch
    return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


def test_concurrent_callers_are_batched_and_get_their_own_rows():
    batcher = MicroBatcher(_slow_lengths, max_batch=8)
    texts = ["x" * (i + 1) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        rows = list(pool.map(batcher, texts))
    assert [int(r[0]) for r in rows] == [len(t) for t in texts]
    assert sum(batcher.batch_sizes) == 20
    assert max(batcher.batch_sizes) > 1 and max(batcher.batch_sizes) <= 8


def test_an_error_fails_its_batch_only():
    calls = []

    def flaky(texts):
        calls.append(list(texts))
        if "bad" in texts:
            raise ValueError("encoder broke")
        return np.ones((len(texts), 2), np.float32)

    batcher = MicroBatcher(flaky)
    with pytest.raises(ValueError, match="encoder broke"):
        batcher("bad")
    assert batcher("good").tolist() == [1.0, 1.0]


def test_a_wrong_row_count_is_an_error_not_a_hang():
    batcher = MicroBatcher(lambda texts: np.zeros((len(texts) + 1, 2), np.float32))
    with pytest.raises(RuntimeError, match="rows"):
        batcher("a")


def test_concurrent_new_names_over_http_equal_sequential_answers(base_url):
    names = [f"{a} {b}" for a in ("red", "soft", "tiny") for b in ("lantern", "rug", "boot")]

    def ask(name):
        q = urllib.parse.quote(name)
        r = http_get(f"{base_url}/api/search?q={q}&k=5")
        assert r.status == 200, r.body
        body = r.json()
        assert body["query_source"] == "encoded"
        return [h["asin"] for h in body["hits"]], [h["score"] for h in body["hits"]]

    sequential = [ask(n) for n in names]
    start = threading.Barrier(len(names))

    def ask_together(name):
        start.wait()
        return ask(name)

    with ThreadPoolExecutor(len(names)) as pool:
        together = list(pool.map(ask_together, names))
    for (asins_a, scores_a), (asins_b, scores_b) in zip(sequential, together, strict=True):
        assert asins_a == asins_b
        assert np.allclose(scores_a, scores_b, atol=1e-4)
