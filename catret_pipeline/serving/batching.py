"""Concurrent single-name encodes coalesced into one batched forward pass.

Why: on 2 cores eight names encoded one by one took 195 ms with all-mpnet-base-v2, one batch of
the same eight 45 ms (4.3x). Requests that arrive while a batch is being encoded wait for the
next batch, so there is no timer: a lone request is encoded at once, as before, and under load
the batches grow by themselves.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Pending:
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    vector: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """``batcher(text)`` -> the row ``encode_many([..., text, ...])`` gives it; thread-safe.

    One daemon thread runs ``encode_many`` on whatever is queued, up to ``max_batch`` texts at a
    time; an exception fails only the callers of that batch.
    """

    def __init__(
        self, encode_many: Callable[[Sequence[str]], np.ndarray], max_batch: int = 32
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._encode_many = encode_many
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        #: Sizes of the latest batches (bounded: a server runs for weeks).
        self.batch_sizes: deque[int] = deque(maxlen=1024)

    def __call__(self, text: str) -> np.ndarray:
        item = _Pending(text)
        with self._wake:
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="encode-batcher", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.vector

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                vectors = np.asarray(self._encode_many([p.text for p in batch]), dtype=np.float32)
                if vectors.shape[0] != len(batch):
                    raise RuntimeError(f"encoder returned {vectors.shape[0]} rows for {len(batch)}")
                for p, v in zip(batch, vectors, strict=True):
                    p.vector = v
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for p in batch:
                    p.error = exc
            self.batch_sizes.append(len(batch))
            for p in batch:
                p.done.set()
