"""Hashes that decide whether a head must train, may be reused, or may share another's run.

Three fingerprints over overlapping inputs, built from the same parts:

- :func:`data_fingerprint` (the artefact's ``fingerprint``): the full model spec, setting,
  batch size, config and every training array. Equal means nothing at all changed, so reuse
  needs no per-example hashing.
- :func:`config_fingerprint`: everything except the training examples. Heads whose config
  fingerprint differs are never reused, whatever the data change.
- :func:`training_key`: what the training *run* depends on, the model's name excepted, so that
  numerically identical runs of two models (e.g. tree targets that reduce to the identity)
  train once.

Torch-free. Changing what any of them hashes makes every existing artefact retrain once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import ModelSpec, PairData, array_fingerprint

#: Bumped when training semantics change, so old artefacts are not reused.
ARTEFACT_VERSION = 1


def _hashed_config(config: FusionTrainConfig) -> dict:
    # The device changes where a head trains, not what it learns.
    return {k: v for k, v in config.to_dict().items() if k != "device"}


def _split_arrays(train: PairData, val: PairData, tree: bool) -> list[np.ndarray]:
    """The arrays training reads from both splits; the tree position ones only if ``tree``."""
    arrays = [
        getattr(d, a) for d in (train, val) for a in ("products", "categories", "category_codes")
    ]
    if tree:
        arrays += [a for d in (train, val) for a in (d.depth, d.chain) if a is not None]
    return arrays


def data_fingerprint(
    spec: ModelSpec,
    setting: str,
    batch_size: int,
    config: FusionTrainConfig,
    drop_empty: bool,
    train: PairData,
    val: PairData,
) -> str:
    """A hash of one (model, setting)'s spec, config and training examples, byte for byte."""
    return array_fingerprint(
        ARTEFACT_VERSION,
        spec,
        setting,
        batch_size,
        _hashed_config(config),
        drop_empty,
        *_split_arrays(train, val, tree=True),
    )


def config_fingerprint(
    spec: ModelSpec,
    setting: str,
    config: FusionTrainConfig,
    drop_empty: bool,
    input_model_ids: Mapping[str, list[str]],
    dims: Mapping,
) -> str:
    """A hash of everything a head depends on except its training examples.

    The configured batch size counts (it is in ``config``), not the one capped at the number
    of train pairs (data).
    """
    return array_fingerprint(
        ARTEFACT_VERSION,
        spec,
        setting,
        _hashed_config(config),
        drop_empty,
        {k: sorted(v) for k, v in sorted(input_model_ids.items())},
        repr(sorted(dims.items())),
    )


def _has_tree_relatives(data: PairData) -> bool:
    """Whether any two pairs' categories are ancestor and descendant of each other."""
    if data.depth is None or data.chain is None or len(data) == 0:
        return False
    own = data.chain[np.arange(len(data)), data.depth - 1]
    cols = np.arange(data.chain.shape[1])[None, :]
    proper_ancestors = data.chain[cols < (data.depth - 1)[:, None]]
    return bool(np.isin(proper_ancestors, own).any())


def training_key(
    spec: ModelSpec,
    train: PairData,
    val: PairData,
    batch_size: int,
    config: FusionTrainConfig,
) -> str:
    """A hash of everything the training run depends on, the model's name excepted.

    Tree-aware targets without a single ancestor/descendant pair in the data are the identity,
    and the loss with identity targets equals the masked loss exactly; such a tree model (e.g.
    in the most-general setting, where every category is a root) shares the masked model's run.
    """
    tree = spec.tree_targets and (_has_tree_relatives(train) or _has_tree_relatives(val))
    return array_fingerprint(
        ARTEFACT_VERSION,
        spec.modalities,
        spec.mask_same_category,
        tree,
        spec.residual,
        batch_size,
        _hashed_config(config),
        *_split_arrays(train, val, tree),
    )
