"""When a trained head may be kept although its training data moved on.

A head is trained on a set of examples (train + val pairs of one setting). Each example is
keyed by what training saw of it: the product, its category node and name, its split, and a
hash of the exact input rows fed to ``g_p`` and ``g_c``. The change between two trainings is
``|previous symmetric-difference current| / max(1, |previous|)``: an added or removed example
counts once, an edited one (new vectors, new category) twice (old key gone, new key added).

The key set of the data a head was trained on is stored beside its weights as
``models/<model>/<setting>.train_keys.parquet``; the artefact JSON records that file's sha256,
so a key file that does not belong to the weights is treated as missing (reading and writing
those files is ``artefacts``' job; the decision here is a pure function of what it read).

Torch-free and I/O-free on purpose: the assets module imports this at module level.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from catret_pipeline.fusion.features import PairData

#: Default of ``FusionModelsConfig.retrain_fraction`` (docs/models.md, "When heads retrain").
DEFAULT_RETRAIN_FRACTION = 0.05

KEY_COLUMNS = ("asin", "category_id", "category_name", "split", "input_hash")
KEY_SCHEMA = {c: pl.String for c in KEY_COLUMNS}


def row_hashes(*blocks: np.ndarray) -> list[str]:
    """A 64-bit hex digest per row of the side-by-side ``blocks`` (by dtype and bytes)."""
    n = blocks[0].shape[0] if blocks else 0
    if any(b.shape[0] != n for b in blocks):
        raise ValueError(f"blocks have different row counts {[b.shape[0] for b in blocks]}")
    if n == 0:
        return []
    dtypes = "|".join(str(b.dtype) for b in blocks).encode()
    rows = np.concatenate(
        [np.ascontiguousarray(b).reshape(n, -1).view(np.uint8) for b in blocks], axis=1
    )
    return [hashlib.blake2b(dtypes + r.tobytes(), digest_size=8).hexdigest() for r in rows]


def training_keys(splits: dict[str, PairData]) -> pl.DataFrame:
    """The key set of the examples in ``splits`` (split name -> that split's pairs).

    The input hash covers the product row fed to ``g_p`` (its modality blocks, normalised as
    trained) and the category row fed to ``g_c``, so a re-encoded image or title, a changed
    attribute list or a re-embedded category name each change the key.
    """
    frames = []
    for split, data in splits.items():
        n = len(data)
        if len(data.category_ids) != n or len(data.category_names) != n:
            raise ValueError(
                f"split {split!r}: PairData lacks category ids/names for its {n} pairs "
                "(build it with build_pair_data)"
            )
        frames.append(
            pl.DataFrame(
                {
                    "asin": data.asins,
                    "category_id": data.category_ids,
                    "category_name": data.category_names,
                    "split": [split] * n,
                    "input_hash": row_hashes(data.products, data.categories),
                },
                schema=KEY_SCHEMA,
            )
        )
    if not frames:
        return pl.DataFrame(schema=KEY_SCHEMA)
    return pl.concat(frames).unique(maintain_order=True)


def data_change_fraction(previous: pl.DataFrame, current: pl.DataFrame) -> float:
    """``|previous symmetric-difference current| / max(1, |previous|)`` over distinct keys.

    0.0 for equal sets whatever their order; can exceed 1 when the data grew a lot.
    """
    for name, df in (("previous", previous), ("current", current)):
        missing = [c for c in KEY_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{name} key set lacks columns {missing}")
    prev = previous.select(KEY_COLUMNS).unique()
    cur = current.select(KEY_COLUMNS).unique()
    only_prev = prev.join(cur, on=list(KEY_COLUMNS), how="anti", nulls_equal=True).height
    only_cur = cur.join(prev, on=list(KEY_COLUMNS), how="anti", nulls_equal=True).height
    return (only_prev + only_cur) / max(1, prev.height)


def check_retrain_fraction(value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ValueError(f"retrain_fraction must be a number >= 0, got {value!r}")
    return float(value)


def describe_change(fraction: float, limit: float) -> str:
    op = "<=" if fraction <= limit else ">"
    return f"training data changed {fraction:.1%} {op} {limit:.1%}"


@dataclass(frozen=True)
class StoredHead:
    """What is on disk for one (model, setting), as the reuse decision sees it (read by
    ``artefacts.read_stored_head``)."""

    #: The artefact JSON (None: none, or unreadable).
    meta: Mapping | None
    meta_file_exists: bool = False
    #: sha256 of the weights file as it is now (None: no file).
    weights_sha256: str | None = None
    #: The key set the head was trained on, or None and why not (``keys_problem``).
    keys: pl.DataFrame | None = None
    keys_problem: str | None = None


@dataclass(frozen=True)
class ReuseDecision:
    """Whether a (model, setting) keeps its trained head, and why (the ``reason`` column)."""

    reuse: bool
    reason: str
    #: Measured change of the training examples (None when it could not be measured).
    fraction: float | None = None
    #: Reused on identical data, but the key file or config fingerprint must be (re)written.
    repair: bool = False


def reuse_decision(
    stored: StoredHead,
    *,
    fingerprint: str,
    config_fp: str,
    keys: pl.DataFrame | None,
    retrain_fraction: float = DEFAULT_RETRAIN_FRACTION,
    reuse_unchanged: bool = True,
    force_retrain: bool = False,
) -> ReuseDecision:
    """Reuse the stored head when its weights are intact, its config fingerprint equals
    ``config_fp`` and its training examples changed by at most ``retrain_fraction``.

    ``fingerprint`` and ``config_fp`` are the current data and config fingerprints (see
    ``fingerprint``); ``keys`` the current key set (may be None only when ``fingerprint``
    equals the stored one, i.e. identical data). ``retrain_fraction`` 0 reuses byte-identical
    data only. The change is measured against the data the head was *trained* on, so small
    changes add up until the head retrains.
    """
    previous = stored.meta
    if previous is None:
        why = (
            "artefact metadata unreadable" if stored.meta_file_exists else "no trained artefact yet"
        )
        return ReuseDecision(False, why)
    same_data = previous.get("fingerprint") == fingerprint
    prev_keys = stored.keys
    fraction: float | None = None
    if same_data:
        fraction = 0.0
    elif prev_keys is not None and keys is not None:
        fraction = data_change_fraction(prev_keys, keys)
    if force_retrain:
        return ReuseDecision(False, "force_retrain: retrained on demand", fraction)
    if not reuse_unchanged:
        return ReuseDecision(False, "reuse_unchanged is off", fraction)
    if previous.get("weights_sha256") != stored.weights_sha256:
        return ReuseDecision(False, "weights file missing or damaged", fraction)
    if same_data:
        repair = prev_keys is None or previous.get("config_fingerprint") != config_fp
        return ReuseDecision(True, "training data and config unchanged", 0.0, repair)
    if previous.get("config_fingerprint") != config_fp:
        why = (
            "model spec, train config, input models or input widths changed"
            if "config_fingerprint" in previous
            else "artefact predates change-tolerant reuse (no config fingerprint)"
        )
        return ReuseDecision(False, why, fraction)
    if prev_keys is None:
        return ReuseDecision(False, f"{stored.keys_problem}: data change not measurable", None)
    if fraction is None:
        raise ValueError("reuse_decision needs the current key set when the data changed")
    if retrain_fraction == 0:
        return ReuseDecision(
            False,
            f"{describe_change(fraction, 0.0)} (retrain_fraction 0 retrains on any change"
            f"{', here order or duplicates only' if fraction == 0 else ''})",
            fraction,
        )
    return ReuseDecision(
        fraction <= retrain_fraction, describe_change(fraction, retrain_fraction), fraction
    )
