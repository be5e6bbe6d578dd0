"""The files of a trained head, in one place: ``models/<model>/<setting>.pt`` (the heads'
``state_dict``), ``.json`` (config, input dims, input model ids, loss history, the hashes
below) and ``.train_keys.parquet`` (the key set of the examples it was trained on, see
``retrain``).

The JSON records the weights' sha256 and the key file's, so a file that does not belong to the
others reads as missing. :func:`read_stored_head` reads all of it once, so the reuse decision
(``retrain.reuse_decision``) is a pure function of what is on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import polars as pl
import torch

from catret_pipeline.fusion.retrain import KEY_COLUMNS, StoredHead
from catret_pipeline.storage.artefacts import read_bytes
from catret_pipeline.storage.atomic import (
    atomic_write_bytes,
    atomic_write_parquet,
    atomic_write_text,
)
from catret_pipeline.storage.hashing import sha256_file, sha256_file_or_none

#: Format of the ``.pt`` payload (what ``inference.load_fusion_model`` can read).
ARTEFACT_FORMAT = 1


class HasPath(Protocol):
    def path(self, *parts: str) -> Path: ...


def artefact_paths(storage: HasPath, model: str, setting: str) -> tuple[Path, Path]:
    pt = storage.path("models", model, f"{setting}.pt")
    return pt, pt.with_suffix(".json")


def keys_path(storage: HasPath, model: str, setting: str) -> Path:
    return storage.path("models", model, f"{setting}.train_keys.parquet")


def save_artefact(
    storage: HasPath, model: str, setting: str, state_dict: dict[str, torch.Tensor], meta: dict
) -> tuple[Path, Path, str]:
    """Write weights then metadata, each atomically; the JSON records the weights' sha256.

    Returns (pt path, json path, weights sha256). A crash between the two writes leaves a JSON
    whose hash no longer matches, which the reuse logic treats as "retrain".
    """
    pt, js = artefact_paths(storage, model, setting)
    buf = io.BytesIO()
    torch.save({"format": ARTEFACT_FORMAT, "state_dict": state_dict}, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(pt, data)
    atomic_write_text(js, json.dumps({**meta, "weights_sha256": sha}, indent=2, sort_keys=True))
    return pt, js, sha


def read_meta(storage: HasPath, model: str, setting: str) -> dict | None:
    _, js = artefact_paths(storage, model, setting)
    if not js.exists():
        return None
    try:
        return json.loads(js.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_meta(storage: HasPath, model: str, setting: str, meta: dict) -> Path:
    """Rewrite an artefact's JSON atomically (the weights and their recorded hash untouched)."""
    _, js = artefact_paths(storage, model, setting)
    atomic_write_text(js, json.dumps(meta, indent=2, sort_keys=True))
    return js


def weights_sha256(storage: HasPath, model: str, setting: str) -> str | None:
    pt, _ = artefact_paths(storage, model, setting)
    return sha256_file(pt) if pt.exists() else None


def write_train_keys(storage: HasPath, model: str, setting: str, keys: pl.DataFrame) -> str:
    """Write the key set atomically; returns the file's sha256 for the artefact JSON."""
    path = keys_path(storage, model, setting)
    atomic_write_parquet(keys.select(KEY_COLUMNS), path)
    return sha256_file_or_none(path) or ""


def read_train_keys(
    storage: HasPath, model: str, setting: str, expected_sha256: str | None
) -> tuple[pl.DataFrame | None, str | None]:
    """The stored key set, or ``(None, why)`` when it is missing, damaged or not the one
    recorded with the weights."""
    path = keys_path(storage, model, setting)
    if not expected_sha256:
        return None, "the artefact records no training key file"
    sha = sha256_file_or_none(path)
    if sha is None:
        return None, f"training key file {path.name} is missing"
    if sha != expected_sha256:
        return None, f"training key file {path.name} does not match the weights"
    try:
        keys = pl.read_parquet(io.BytesIO(read_bytes(path)))
    except Exception as exc:  # any unreadable file means "retrain", never a crash
        return None, f"training key file {path.name} is unreadable ({type(exc).__name__})"
    if any(c not in keys.columns for c in KEY_COLUMNS):
        return None, f"training key file {path.name} lacks key columns"
    return keys, None


def read_stored_head(storage: HasPath, model: str, setting: str) -> StoredHead:
    """Everything the reuse decision needs to know about the head on disk."""
    meta = read_meta(storage, model, setting)
    if meta is None:
        _, js = artefact_paths(storage, model, setting)
        return StoredHead(meta=None, meta_file_exists=js.exists())
    keys, keys_problem = read_train_keys(storage, model, setting, meta.get("train_keys_sha256"))
    return StoredHead(
        meta=meta,
        meta_file_exists=True,
        weights_sha256=weights_sha256(storage, model, setting),
        keys=keys,
        keys_problem=keys_problem,
    )


def write_trained_head(
    storage: HasPath,
    model: str,
    setting: str,
    state_dict: dict[str, torch.Tensor],
    meta: dict,
    keys: pl.DataFrame | None,
) -> dict:
    """Write a freshly trained head's files; returns the metadata as written (less the
    weights hash).

    Keys first, then weights and JSON: a crash in between leaves a JSON whose recorded
    key-file hash no longer matches, which the next run treats as "retrain".
    """
    if keys is not None:
        meta = {**meta, "train_keys_sha256": write_train_keys(storage, model, setting, keys)}
    save_artefact(storage, model, setting, state_dict, meta)
    return meta


def record_train_keys(
    storage: HasPath,
    model: str,
    setting: str,
    meta: Mapping,
    keys: pl.DataFrame,
    config_fp: str,
) -> None:
    """Give a head reused on identical data the key file and config fingerprint it lacks (an
    artefact from before key files, or one whose key file was lost)."""
    sha = write_train_keys(storage, model, setting, keys)
    write_meta(
        storage, model, setting, {**meta, "train_keys_sha256": sha, "config_fingerprint": config_fp}
    )
