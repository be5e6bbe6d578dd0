"""Bringing one embedding table up to date: plan, encode the stale rows in checkpointed chunks,
combine with the reused rows (:func:`run_incremental` on an :class:`EmbeddingJob`).

The previous table comes from ``storage.read_previous``; checkpoint parts of an interrupted run
live under ``checkpoints/<key path>/`` and are removed once the table is complete. The planning
and merging are :mod:`catret_pipeline.embeddings.incremental` (pure polars); this module adds the
files, the encoder and the logging, and leaves Dagster to :meth:`EmbeddingResult.metadata`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from catret_pipeline.embeddings.config import EmbeddingConfig
from catret_pipeline.embeddings.encoding import ChunkEncoder
from catret_pipeline.embeddings.incremental import (
    IncrementalPlan,
    IncrementalStats,
    combine,
    embedding_dim,
    encoded_frame,
    plan_incremental,
)
from catret_pipeline.markdown import frame_markdown
from catret_pipeline.storage.artefacts import ArtefactPath, read_bytes, remove_tree
from catret_pipeline.storage.resources import CatretStorage


@dataclass(frozen=True)
class EmbeddingJob:
    """One embedding table: its current input, its keys and the encoder of its stale rows."""

    #: The table's name in logs.
    name: str
    #: Keys + ``content_hash`` + the encoder's input columns, one row per key.
    current: pl.DataFrame
    keys: tuple[str, ...]
    encoder: ChunkEncoder
    #: Where its previous table and checkpoint parts are; () = ``(name,)``.
    key_path: tuple[str, ...] = ()
    #: Asset key of a table with more reusable rows (a shard: the merged table, which holds
    #: every shard's last rows), read only for the keys that would otherwise be encoded.
    reuse_from: tuple[str, ...] = ()

    @property
    def path(self) -> tuple[str, ...]:
        return self.key_path or (self.name,)


@dataclass(frozen=True)
class EmbeddingResult:
    table: pl.DataFrame
    stats: IncrementalStats
    model_id: str
    dim: int
    #: Rows encoded per second of encoding (0 when nothing was encoded).
    rate: float
    #: Keys + ``reason`` of the rows that could not be encoded (no embedding row).
    failures: pl.DataFrame
    #: Why the previous table was not reused, when it was unreadable.
    previous_damage: str | None = None

    def metadata(self) -> dict:
        meta = {
            "encoded": dg.MetadataValue.int(self.stats.encoded),
            "reused": dg.MetadataValue.int(self.stats.reused),
            "dropped": dg.MetadataValue.int(self.stats.dropped),
            "failed": dg.MetadataValue.int(self.failures.height),
            "rate": dg.MetadataValue.float(self.rate),
            "model_id": dg.MetadataValue.text(self.model_id),
            "dim": dg.MetadataValue.int(self.dim),
        }
        if self.failures.height:
            meta["failures"] = dg.MetadataValue.md(
                frame_markdown(self.failures, rows=20, max_chars=120)
            )
        if self.previous_damage:
            meta["previous_unreadable"] = dg.MetadataValue.text(
                f"re-encoded every row: the previous table was not reused: {self.previous_damage}"
            )
        return meta


def _checkpoint_dir(storage: CatretStorage, key_path: Sequence[str]) -> ArtefactPath:
    return storage.path("checkpoints", *key_path)


def _read_checkpoints(log, storage: CatretStorage, job: EmbeddingJob) -> list[pl.DataFrame]:
    parts = []
    for f in sorted(_checkpoint_dir(storage, job.path).glob("part-*.parquet")):
        try:
            parts.append(pl.read_parquet(io.BytesIO(read_bytes(f))))
        except Exception as exc:  # a damaged part only costs re-encoding its rows
            log.warning(f"{job.name}: ignoring unreadable checkpoint {f.name}: {exc}")
    return parts


def _read_previous(
    log, storage: CatretStorage, key_path: Sequence[str]
) -> tuple[pl.DataFrame | None, str | None]:
    """The last good table and, when it was damaged, why it was not reused (for the metadata:
    an operator sees that a long re-encode was caused by a broken file, not by new data)."""
    try:
        return storage.read_previous(*key_path), None
    except Exception as exc:
        name = "/".join(key_path)
        log.warning(f"{name}: previous table unreadable, encoding everything: {exc}")
        return None, str(exc)


def _shared_rows(
    log, storage: CatretStorage, job: EmbeddingJob, wanted: pl.DataFrame
) -> pl.DataFrame | None:
    """The rows of ``job.reuse_from`` for the ``wanted`` keys (None when there are none)."""
    try:
        table = storage.scan_asset(*job.reuse_from)  # local scan or a remote table store
        if table is None:
            return None
        rows = table.join(wanted.lazy(), on=list(job.keys), how="semi")
        return rows.collect(engine="streaming")  # never the whole table in memory
    except Exception as exc:
        log.warning(f"{job.name}: {'/'.join(job.reuse_from)} unreadable, not reusing it: {exc}")
        return None


def plan_job(
    log, storage: CatretStorage, job: EmbeddingJob, model_id: str
) -> tuple[IncrementalPlan, str | None]:
    """The job's plan over its previous table, its checkpoints and ``reuse_from``; and why the
    previous table was unreadable, if it was."""
    keys = list(job.keys)
    previous, damage = _read_previous(log, storage, job.path)
    checkpoints = _read_checkpoints(log, storage, job)
    plan = plan_incremental(job.current, previous, keys, model_id, checkpoints=checkpoints)
    if plan.to_encode.height and job.reuse_from:
        shared = _shared_rows(log, storage, job, plan.to_encode.select(keys))
        if shared is not None and shared.height:
            plan = plan_incremental(
                job.current, previous, keys, model_id, checkpoints=[shared, *checkpoints]
            )
    return plan, damage


class _Progress:
    def __init__(self, log, name: str, total: int, every: int):
        self.log_, self.name, self.total, self.every = log, name, total, max(1, every)
        self.base = 0
        self.chunk_rows = 0
        self.batches = 0
        self.start = time.perf_counter()

    def callback(self, done: int, total: int) -> None:
        # Encoders count what they encode (unique strings, decodable images): scale to rows.
        self.batches += 1
        if self.batches % self.every == 0:
            self.log(self.base + round(self.chunk_rows * done / max(total, 1)))

    def log(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        self.log_.info(f"{self.name}: {done}/{self.total} rows encoded ({rate:.1f} rows/s)")


def _encode(job: EmbeddingJob, rows: pl.DataFrame, model_id: str, progress: _Progress):
    """(table rows, {position in ``rows``: reason}) of one chunk."""
    out = job.encoder.encode(rows, progress.callback)
    frame = encoded_frame(out.rows, out.vectors, job.keys, model_id, extra=job.encoder.extra)
    return frame, out.errors


def _encode_stale(
    storage: CatretStorage,
    job: EmbeddingJob,
    todo: pl.DataFrame,
    model_id: str,
    config: EmbeddingConfig,
    progress: _Progress,
) -> tuple[list[pl.DataFrame], dict[int, str]]:
    """``todo`` in chunks of ``config.chunk_rows``, each but the last written as a checkpoint
    part; returns the encoded parts and {position in ``todo``: reason} of the failed rows."""
    parts: list[pl.DataFrame] = []
    failures: dict[int, str] = {}
    step = max(1, config.chunk_rows)
    for start in range(0, todo.height, step):
        chunk = todo.slice(start, step)
        progress.chunk_rows = chunk.height
        part, errs = _encode(job, chunk, model_id, progress)
        failures.update({start + i: e for i, e in errs.items()})
        parts.append(part)
        progress.base = start + chunk.height
        if start + step < todo.height and part.height:
            storage.write_table(part, "checkpoints", *job.path, f"part-{time.time_ns()}.parquet")
    progress.log(todo.height)
    return parts, failures


def _failure_report(todo: pl.DataFrame, keys: list[str], failures: dict[int, str]) -> pl.DataFrame:
    rows = todo.select(keys).with_row_index("__pos").filter(pl.col("__pos").is_in(list(failures)))
    return rows.with_columns(
        pl.col("__pos").replace_strict(failures, return_dtype=pl.String).alias("reason")
    ).drop("__pos")


def run_incremental(
    log, storage: CatretStorage, job: EmbeddingJob, config: EmbeddingConfig
) -> EmbeddingResult:
    """Plan, encode the stale rows in checkpointed chunks, combine; ``log``: the step's logger
    (``context.log``)."""
    model_id = job.encoder.model_id
    plan, damage = plan_job(log, storage, job, model_id)
    todo = plan.to_encode
    log.info(
        f"{job.name}: {job.current.height} rows, {plan.reused.height} reusable, {todo.height} "
        f"to encode, {plan.dropped} dropped (model {model_id})"
    )
    if todo.height:
        _ = job.encoder.dim  # load the model first, so that the logged rate is encoding alone
    progress = _Progress(log, job.name, todo.height, config.log_every_batches)
    failures: dict[int, str] = {}
    if todo.height:
        parts, failures = _encode_stale(storage, job, todo, model_id, config, progress)
    elif plan.reused.height == 0:
        # Nothing at all: still build an (empty) frame through the encoder so dtypes are right.
        parts = [_encode(job, todo, model_id, progress)[0]]
    else:
        parts = []
    encode_seconds = time.perf_counter() - progress.start
    if parts:
        encoded = pl.concat(parts, how="vertical_relaxed")
        dim = embedding_dim(encoded) or job.encoder.dim
    else:
        dim = embedding_dim(plan.reused) or job.encoder.dim
        encoded = pl.DataFrame()
    table, stats = combine(plan, encoded, dim, extra=job.encoder.extra)
    remove_tree(_checkpoint_dir(storage, job.path))
    report = _failure_report(todo, list(job.keys), failures)
    if failures:
        log.warning(f"{job.name}: {len(failures)} rows could not be encoded and have no embedding")
    return EmbeddingResult(
        table=table,
        stats=stats,
        model_id=model_id,
        dim=dim,
        rate=round(stats.encoded / encode_seconds, 2) if stats.encoded else 0.0,
        failures=report,
        previous_damage=damage,
    )
