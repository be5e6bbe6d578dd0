"""The training budget beyond the paper's 30 epochs, and validation R-precision.

On a catalogue far smaller than XMarket, 30 epochs are a few hundred optimiser steps; the
heads train on to ``min_steps`` and the extension stops once validation stops improving.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import MODEL_SPECS
from catret_pipeline.fusion.objective import SplitTensors, val_r_precision
from catret_pipeline.fusion.train import epochs_to_run, steps_per_epoch, train_heads
from catret_pipeline_tests.fusion.test_train import _synthetic

SMALL = dict(proj_dim=8, hidden_dims=(16, 16), device="cpu")


@pytest.mark.parametrize(
    ("n", "batch", "steps"),
    [(777, 128, 7), (769, 128, 6), (768, 128, 6), (777, 8, 97), (778, 8, 98), (1, 8, 0), (2, 8, 1)],
)
def test_steps_per_epoch_skips_a_lone_last_pair(n, batch, steps):
    assert steps_per_epoch(n, batch) == steps


def test_epochs_to_run_extends_only_short_runs():
    cfg = FusionTrainConfig(epochs=30, min_steps=1000)
    assert epochs_to_run(777, 128, cfg) == math.ceil(1000 / 7) == 143
    # Batch 8 already gives 97 * 30 = 2910 steps: the paper's 30 epochs stand.
    assert epochs_to_run(777, 8, cfg) == 30
    assert epochs_to_run(777, 128, FusionTrainConfig(epochs=30, min_steps=0)) == 30


class _Identity(nn.Module):
    """Heads that pass vectors through, so the ranking is fixed by hand."""

    def encode_products(self, x):
        return x

    def encode_categories(self, x):
        return x


def _tensors(products, categories, codes):
    return SplitTensors(
        torch.tensor(products, dtype=torch.float32),
        torch.tensor(categories, dtype=torch.float32),
        torch.tensor(codes),
        None,
        None,
    )


def test_val_r_precision_hand_computed():
    # Category 0 (pairs 0, 1; R = 2) ranks products 0, 2, 1, ...: 1 of its top 2 is relevant.
    # Category 1 (pairs 2, 3, 4; R = 3) ranks 2, 3, 4 first: 3 of 3. Mean (0.5 + 1) / 2.
    products = [[1.0, 0.0], [0.2, 0.1], [0.6, 0.8], [0.0, 0.9], [0.1, 0.7]]
    cat0, cat1 = [1.0, 0.0], [0.0, 1.0]
    data = _tensors(products, [cat0, cat0, cat1, cat1, cat1], [0, 0, 1, 1, 1])
    assert val_r_precision(_Identity(), data) == pytest.approx(0.75)


def test_val_r_precision_uses_the_first_row_of_each_code_and_handles_r_of_one():
    # Codes out of order; each code's category vector is taken from its first pair.
    products = [[0.0, 1.0], [1.0, 0.0], [0.9, 0.1]]
    data = _tensors(products, [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], [5, 2, 2])
    # Code 5 (R = 1): product 0 first -> 1. Code 2 (R = 2): products 1, 2 first -> 1.
    assert val_r_precision(_Identity(), data) == pytest.approx(1.0)
    # Swap the category of code 5 to point at the code-2 products: its top 1 is wrong.
    data = _tensors(products, [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [5, 2, 2])
    assert val_r_precision(_Identity(), data) == pytest.approx(0.5)


def test_extension_runs_to_min_steps_without_patience():
    _, data, _, _ = _synthetic()
    steps = steps_per_epoch(len(data["train"]), 32)
    cfg = FusionTrainConfig(**SMALL, epochs=2, min_steps=5 * steps, extra_patience=None)
    r = train_heads(data["train"], data["val"], MODEL_SPECS["clip-ita"], cfg, 32)
    assert r.epochs_run == 5 and r.stopped == "completed"


def test_extension_stops_once_validation_stalls_but_never_inside_the_paper_epochs():
    _, data, _, _ = _synthetic()
    # lr 0: nothing improves after epoch 1.
    frozen = dict(SMALL, lr=0.0, weight_decay=0.0, min_steps=10_000)
    r = train_heads(
        data["train"],
        data["val"],
        MODEL_SPECS["clip-ita"],
        FusionTrainConfig(**frozen, epochs=5, extra_patience=1),
        32,
    )
    # Epochs 1-5 are the paper's and always run; epoch 6 is the first extra one.
    assert r.stopped == "converged" and r.epochs_run == 6 and r.best_epoch == 1
    r = train_heads(
        data["train"],
        data["val"],
        MODEL_SPECS["clip-ita"],
        FusionTrainConfig(**frozen, epochs=2, extra_patience=3),
        32,
    )
    assert r.stopped == "converged" and r.epochs_run == 4


@pytest.mark.parametrize("select_by", ["rprec", "loss"])
def test_best_epoch_follows_the_selection_rule(select_by):
    _, data, _, _ = _synthetic()
    cfg = FusionTrainConfig(**SMALL, epochs=8, min_steps=0, lr=3e-3, select_by=select_by)
    r = train_heads(data["train"], data["val"], MODEL_SPECS["clip-ita"], cfg, 32)
    rprec = [h["val_rprec"] for h in r.history]
    loss = [h["val_loss"] for h in r.history]
    assert all(0.0 <= x <= 1.0 for x in rprec)
    if select_by == "rprec":
        expected = min(range(8), key=lambda i: (-rprec[i], loss[i], i)) + 1
    else:
        expected = int(np.argmin(loss)) + 1
    assert r.best_epoch == r.weights_epoch == expected


def test_select_by_is_checked():
    _, data, _, _ = _synthetic()
    with pytest.raises(ValueError, match="select_by"):
        train_heads(
            data["train"],
            data["val"],
            MODEL_SPECS["clip-ita"],
            FusionTrainConfig(**SMALL, epochs=1, min_steps=0, select_by="accuracy"),
            32,
        )


def test_bf16_autocast_applies_from_its_batch_threshold():
    _, data, _, _ = _synthetic()
    spec = MODEL_SPECS["clip-ita"]

    def run(threshold):
        cfg = FusionTrainConfig(**SMALL, epochs=2, min_steps=0, bf16_autocast_min_batch=threshold)
        return train_heads(data["train"], data["val"], spec, cfg, 32).state_dict

    off, above, on = run(None), run(33), run(32)
    assert all(torch.equal(off[k], above[k]) for k in off)
    assert any(not torch.equal(off[k], on[k]) for k in off)
    # Mixed precision keeps fp32 master weights: a small drift, not a different model.
    assert all(on[k].dtype == torch.float32 for k in on)
    drift = max(float((off[k] - on[k]).abs().max()) for k in off)
    assert drift < 1e-2


def test_worker_pool_orders_jobs_by_their_extended_length():
    """Runs extended by ``min_steps`` are now the long ones: a batch-128 head on 777 pairs runs
    1000 steps, longer than 30 epochs at batch 8; the pool must start it first."""
    from catret_pipeline.fusion.jobs import TrainingJob
    from catret_pipeline.fusion.runner import _estimated_cost

    _, data, _, _ = _synthetic()

    def job(n, batch, min_steps):
        pairs = dataclasses.replace(data["train"], asins=[f"p{i}" for i in range(n)])
        cfg = FusionTrainConfig(min_steps=min_steps)
        return TrainingJob(
            MODEL_SPECS["clip-ita"], "s", pairs, data["val"], batch, cfg, "", "", {}, {}
        )

    extended, general = job(777, 128, 1000), job(777, 8, 1000)
    assert _estimated_cost(extended) > _estimated_cost(general)
    # Without the extension the batch-128 run is the short one.
    assert _estimated_cost(job(777, 128, 0)) < _estimated_cost(general)
