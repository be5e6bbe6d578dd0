"""Images to model input: decoding, the model's preprocess, in threads or worker processes.

:class:`ImageLoader` decodes paths or PIL images through a model's preprocess (at reduced size
where the codec allows it), one row at a time, with per-row errors, optionally split over
threads; :class:`ProcessDecoder` does the PIL part in worker processes and the tensor part in
the caller, so both give the same tensors. torch, torchvision and PIL load inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from catret_pipeline.storage.artefacts import open_image_source
from catret_pipeline.workers.lifetime import exit_with

#: (tensors of the rows that decoded, their positions in the batch, {position: error}).
Decoded = tuple[list, list[int], dict[int, str]]


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True)
class ImageLoader:
    """A model's preprocess and input size: decodes images into its input tensors."""

    preprocess: Any
    size: int

    def load(self, item):
        """Decode at reduced size where the codec allows it (JPEG), then the model's preprocessing."""
        from PIL import Image

        if isinstance(item, Image.Image):
            img = item
        else:
            img = Image.open(open_image_source(item))
            img.draft("RGB", (self.size, self.size))
        return self.preprocess(img.convert("RGB"))

    def decode_batch(self, items: Sequence) -> Decoded:
        tensors, idx, errors = [], [], {}
        for i, item in enumerate(items):
            try:
                tensors.append(self.load(item))
                idx.append(i)
            except Exception as exc:  # a bad file is reported per row, never ends the run
                errors[i] = _error(exc)
        return tensors, idx, errors

    def decode_parallel(self, items: Sequence, pool, workers: int) -> Decoded:
        """:meth:`decode_batch` over ``workers`` slices at once in the thread ``pool`` (PIL and
        torchvision release the GIL)."""
        if workers <= 1 or len(items) < 2:
            return self.decode_batch(items)
        step = -(-len(items) // workers)
        futures = [
            (lo, pool.submit(self.decode_batch, items[lo : lo + step]))
            for lo in range(0, len(items), step)
        ]
        tensors, idx, errors = [], [], {}
        for lo, fut in futures:
            t, i, e = fut.result()
            tensors += t
            idx += [lo + j for j in i]
            errors.update({lo + j: msg for j, msg in e.items()})
        return tensors, idx, errors


def split_preprocess(preprocess) -> tuple[Any, Any] | None:
    """(PIL stage, tensor stage) of an open_clip preprocess: the transforms before and after its
    to-tensor step, or None when there is no such step to split at."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if cut is None:
        return None
    return T.Compose(steps[:cut]), T.Compose(steps[cut + 1 :])


_WORKER_STAGE: Any = None
_WORKER_SIZE = 0


def _init_decode_worker(stage, size: int, owner: int) -> None:
    global _WORKER_STAGE, _WORKER_SIZE
    exit_with(owner)
    _WORKER_STAGE, _WORKER_SIZE = stage, size


def _decode_chunk(items: list) -> list[tuple[int, Any, str | None]]:
    """In a worker process: (position, HxWx3 uint8 array or None, error) per (position, item)."""
    from PIL import Image

    out = []
    for pos, item in items:
        try:
            img = item
            if not isinstance(item, Image.Image):
                img = Image.open(open_image_source(item))
                img.draft("RGB", (_WORKER_SIZE, _WORKER_SIZE))
            arr = np.asarray(_WORKER_STAGE(img.convert("RGB")), dtype=np.uint8)
            out.append((pos, arr, None))
        except Exception as exc:  # reported per row, like the in-process decoder
            out.append((pos, None, _error(exc)))
    return out


class ProcessDecoder:
    """Decodes and resizes images in worker processes, for hosts whose accelerator outruns one
    Python process's decoding (threads stop scaling at ~2x: docs/scaling.md). Workers return
    uint8 pixels after the PIL stage of the model's preprocess; the parent finishes with the
    tensor stage, so the result equals in-process decoding."""

    def __init__(self, loader: ImageLoader, processes: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        stages = split_preprocess(loader.preprocess)
        if stages is None:
            raise ValueError("this model's preprocess has no to-tensor step to split at")
        self.loader = loader
        self.tensor_stage = stages[1]
        self.processes = processes
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"

        def start() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(
                max_workers=processes,
                mp_context=mp.get_context(method),
                initializer=_init_decode_worker,
                initargs=(stages[0], loader.size, os.getpid()),
            )

        self._start = start
        self.pool = start()

    def __call__(self, items: Sequence) -> Decoded:
        import torch

        jobs = list(enumerate(items))
        step = max(1, -(-len(jobs) // self.processes))
        chunks = [jobs[lo : lo + step] for lo in range(0, len(jobs), step)]
        from concurrent.futures.process import BrokenProcessPool

        try:
            parts = list(self.pool.map(_decode_chunk, chunks))
        except BrokenProcessPool:
            # A worker died (killed, out of memory): this batch is decoded here, row by row
            # with per-row errors, and the next batch gets fresh workers.
            self.pool.shutdown(cancel_futures=True)
            self.pool = self._start()
            return self.loader.decode_batch(items)
        tensors, idx, errors = [], [], {}
        for part in parts:
            for pos, arr, err in part:
                if err is not None:
                    errors[pos] = err
                    continue
                x = torch.from_numpy(arr).permute(2, 0, 1).float().div(255)
                tensors.append(self.tensor_stage(x))
                idx.append(pos)
        return tensors, idx, errors

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
