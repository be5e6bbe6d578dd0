"""Training of the projection heads on frozen, precomputed embeddings.

Only ``g_p`` and ``g_c`` train, so the whole split lives in memory as tensors and batches are
index slices of a seeded permutation: no DataLoader, deterministic for a seed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from catret_pipeline.fusion.features import (
    IMAGE,
    TITLE,
    CategoryVectors,
    ModelSpec,
    PairData,
    ProductFeatureTables,
    array_fingerprint,
    build_pair_data,
)
from catret_pipeline.fusion.heads import FusionHeads, build_heads, skip_basis, text_block_slice
from catret_pipeline.fusion.loss import (
    bidirectional_info_nce,
    same_category_exclusion,
    tree_soft_targets,
)
from catret_pipeline.fusion.retrain import (
    DEFAULT_RETRAIN_FRACTION,
    check_retrain_fraction,
    data_change_fraction,
    describe_change,
    read_train_keys,
    training_keys,
    write_train_keys,
)
from catret_pipeline.fusion.schemas import new_row

#: Bumped when training semantics change, so old artefacts are not reused.
ARTEFACT_VERSION = 1

DEFAULT_BATCH_SIZES: dict[str, int] = {"general": 8, "all": 128, "specific": 128}


@dataclass(frozen=True)
class FusionTrainConfig:
    """Hyper-parameters; paper values where it gives them, documented choices elsewhere."""

    #: Output size of both heads (open in the paper).
    proj_dim: int = 256
    #: Two hidden layers as in the paper; widths are open.
    hidden_dims: tuple[int, ...] = (512, 512)
    #: Chosen on validation R-precision (docs/models.md): 0.1 lowered it on the sample.
    dropout: float = 0.0
    #: AdamW learning rate (open in the paper; chosen on validation, docs/models.md).
    lr: float = 1e-4
    weight_decay: float = 0.01
    epochs: int = 30
    #: Train at least this many optimiser steps: on a catalogue much smaller than XMarket,
    #: 30 epochs are a few hundred steps and leave the heads far from converged
    #: (docs/models.md). The extra epochs stop early on validation loss (``extra_patience``).
    min_steps: int = 1000
    #: Epochs without a lower validation loss that end the extension beyond ``epochs``.
    extra_patience: int | None = 25
    #: Per-setting batch sizes (paper: 8 for "most general", 128 otherwise).
    batch_sizes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_BATCH_SIZES))
    default_batch_size: int = 128
    tau: float = 1.0
    lam: float = 0.5
    seed: int = 0
    #: Return the weights of the best validation epoch (else the last epoch's).
    keep_best: bool = True
    #: What "best" means: "rprec" = highest validation R-precision (val category names ranking
    #: val products, the task's metric; ties go to the lower validation loss), or "loss" =
    #: lowest validation loss. With tau = 1 the loss barely moves, so it picks epochs poorly
    #: (docs/models.md).
    select_by: str = "loss"
    #: bf16 autocast for training batches of at least this many pairs (None: never). On the
    #: 2-core CPU a batch-128 step ran 1.25-1.5x faster, but at batch 8 casting the weights
    #: costs more than it saves (6.0 vs 4.3 ms). Off by default: bf16 rounding turns the 1e-7
    #: float noise between two equivalent builds (a refresh and a clean build) into 1e-4
    #: score differences.
    bf16_autocast_min_batch: int | None = None
    #: Stop after this many epochs without a lower validation loss (None: run every epoch).
    early_stopping_patience: int | None = None
    #: Wall-clock budget per (model, setting); makes the run length machine-dependent.
    max_train_seconds: float | None = None
    #: L2-normalise every input block before concatenation.
    normalize_inputs: bool = True
    #: Tree-aware targets: weight of a parent/child pair, multiplied by ``tree_decay`` per
    #: further level of depth difference.
    tree_weight: float = 0.5
    tree_decay: float = 0.5
    #: clip-ita-res: initial shared skip ``A`` when ``proj_dim`` < text width ("pca": top
    #: singular directions of the train title and category vectors; "random": orthonormal).
    #: With ``proj_dim`` >= text width ``A`` starts as the identity either way.
    res_skip_init: str = "pca"
    #: clip-ita-res: learning-rate multiplier of ``A`` (0 freezes it at its init).
    res_skip_lr_scale: float = 0.1
    #: clip-ita-res: weight of ``||A - A_init||^2`` added to the loss.
    res_anchor: float = 0.0
    #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: torch intra-op threads while training on CPU (None: leave torch's setting). The heads
    #: are small: on a loaded 2-core machine 2 threads ran 10x slower than 1 (OpenMP waits).
    torch_threads: int | None = 1

    def batch_size_for(self, setting: str) -> int:
        return int(self.batch_sizes.get(setting, self.default_batch_size))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["batch_sizes"] = dict(self.batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> FusionTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "hidden_dims" in kwargs:
            kwargs["hidden_dims"] = tuple(kwargs["hidden_dims"])
        return cls(**kwargs)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    #: One entry per epoch run: epoch (1-based), train_loss, val_loss (None without val), seconds.
    history: list[dict]
    #: Validation loss of the untrained heads (None without val).
    val_loss_initial: float | None
    #: Epoch with the lowest validation loss (the last epoch without validation).
    best_epoch: int
    #: Epoch whose weights ``state_dict`` holds (``best_epoch`` when ``keep_best``).
    weights_epoch: int
    epochs_run: int
    stopped: str  # "completed" | "converged" | "early_stopping" | "time_budget"
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _adamw(heads: FusionHeads, config: FusionTrainConfig) -> torch.optim.AdamW:
    skip = getattr(heads, "skip", None)
    if skip is None:
        params = heads.parameters()
    else:
        # The shared skip carries the text encoder's alignment: its own lr, and no weight
        # decay (which would shrink it towards zero, i.e. away from the zero-shot start).
        others = [p for n, p in heads.named_parameters() if n != "skip"]
        params = [
            {"params": others},
            {"params": [skip], "lr": config.lr * config.res_skip_lr_scale, "weight_decay": 0.0},
        ]
        if config.res_skip_lr_scale == 0:
            skip.requires_grad_(False)
            params = [params[0]]
    # The fused kernel halves the step time at batch 8 on CPU (measured 6 vs 12 ms per step
    # with 1280-d inputs); fall back where a build lacks it.
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        if not isinstance(params, list):
            params = heads.parameters()
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_heads(train: PairData, spec: ModelSpec, config: FusionTrainConfig) -> FusionHeads:
    """Freshly initialised heads for ``spec`` (uses the global torch RNG for the MLPs)."""
    skip_init = None
    if spec.residual:
        start, stop = text_block_slice(spec.modalities, train.block_dims)
        text = np.concatenate([train.products[:, start:stop], train.categories], axis=0)
        skip_init = skip_basis(
            torch.from_numpy(text), config.proj_dim, config.res_skip_init, config.seed
        )
    return build_heads(
        residual=spec.residual,
        product_in_dim=train.products.shape[1],
        category_in_dim=train.categories.shape[1],
        proj_dim=config.proj_dim,
        hidden_dims=config.hidden_dims,
        dropout=config.dropout,
        modalities=spec.modalities,
        modality_dims=train.block_dims,
        skip_init=skip_init,
    )


@dataclass
class _Tensors:
    x: torch.Tensor
    c: torch.Tensor
    codes: torch.Tensor
    depth: torch.Tensor | None
    chain: torch.Tensor | None

    @classmethod
    def of(cls, data: PairData, device: torch.device) -> _Tensors:
        def t(a):
            return None if a is None else torch.from_numpy(a).to(device)

        return cls(
            t(data.products),
            t(data.categories),
            t(data.category_codes),
            t(data.depth),
            t(data.chain),
        )


def _loss_from_outputs(
    p: torch.Tensor,
    q: torch.Tensor,
    data: _Tensors,
    idx: torch.Tensor,
    spec: ModelSpec,
    config: FusionTrainConfig,
) -> torch.Tensor:
    exclude = same_category_exclusion(data.codes[idx]) if spec.mask_same_category else None
    targets = None
    if spec.tree_targets:
        targets = tree_soft_targets(
            data.depth[idx], data.chain[idx], weight=config.tree_weight, decay=config.tree_decay
        )
    return bidirectional_info_nce(
        p, q, tau=config.tau, lam=config.lam, exclude=exclude, soft_targets=targets
    )


def batch_loss(
    heads: FusionHeads,
    data: _Tensors,
    idx: torch.Tensor,
    spec: ModelSpec,
    config: FusionTrainConfig,
) -> torch.Tensor:
    p, q = heads(data.x[idx], data.c[idx])
    loss = _loss_from_outputs(p, q, data, idx, spec, config)
    if config.res_anchor > 0 and hasattr(heads, "anchor_penalty"):
        loss = loss + config.res_anchor * heads.anchor_penalty()
    return loss


@torch.inference_mode()
def _eval_loss(
    heads: FusionHeads,
    data: _Tensors,
    order: torch.Tensor,
    batch_size: int,
    spec: ModelSpec,
    config: FusionTrainConfig,
) -> float:
    """Mean loss over fixed batches of the training batch size (in-batch negatives as trained)."""
    heads.eval()
    p_all, q_all = heads(data.x[order], data.c[order])
    return _batched_loss(p_all, q_all, data, order, batch_size, spec, config)


@torch.inference_mode()
def _validate(
    heads: FusionHeads,
    data: _Tensors,
    order: torch.Tensor,
    batch_size: int,
    spec: ModelSpec,
    config: FusionTrainConfig,
) -> tuple[float, float]:
    """Validation loss and R-precision of an epoch from one forward pass over the split."""
    heads.eval()
    p_all, q_all = heads(data.x[order], data.c[order])
    loss = _batched_loss(p_all, q_all, data, order, batch_size, spec, config)
    back = torch.argsort(order)  # rows back in the split's own order
    rprec = _r_precision(
        F.normalize(p_all[back], dim=-1), F.normalize(q_all[back], dim=-1), data.codes
    )
    return loss, rprec


def _batched_loss(
    p_all: torch.Tensor,
    q_all: torch.Tensor,
    data: _Tensors,
    order: torch.Tensor,
    batch_size: int,
    spec: ModelSpec,
    config: FusionTrainConfig,
) -> float:
    """The heads act row by row in eval mode, so one forward pass over the whole split gives
    the same vectors as one per batch; only the loss is computed per batch. At batch size 8
    this replaces ~17 small forward passes per epoch with one."""
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        if stop - start < 2:
            continue
        loss = _loss_from_outputs(
            p_all[start:stop], q_all[start:stop], data, order[start:stop], spec, config
        )
        total += float(loss) * (stop - start)
        count += stop - start
    return total / count if count else math.nan


@torch.inference_mode()
def val_r_precision(heads: FusionHeads, data: _Tensors) -> float:
    """Mean R-precision of the split's category names ranking the split's products.

    The split's own retrieval task in miniature: each distinct category (by name code) is a
    query, its pairs are the relevant products, R = their count.
    """
    heads.eval()
    return _r_precision(heads.encode_products(data.x), heads.encode_categories(data.c), data.codes)


def _r_precision(p: torch.Tensor, q_pairs: torch.Tensor, codes: torch.Tensor) -> float:
    """R-precision from unit product vectors and each pair's unit category vector; a code's
    query is the category vector of its first pair."""
    uniq, first = _first_index(codes)
    relevant = codes.unsqueeze(0) == uniq.unsqueeze(1)  # (queries, products)
    r = relevant.sum(dim=1)
    order = torch.argsort(q_pairs[first] @ p.T, dim=1, descending=True, stable=True)
    hits = torch.gather(relevant, 1, order)
    ranks = torch.arange(hits.shape[1], device=hits.device).unsqueeze(0)
    top_r = (hits & (ranks < r.unsqueeze(1))).sum(dim=1)
    return float((top_r.float() / r.float()).mean())


def _first_index(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct values of ``codes`` and the first position of each."""
    uniq, inverse = torch.unique(codes, return_inverse=True)
    positions = torch.arange(len(codes), device=codes.device)
    first = torch.full((len(uniq),), len(codes), dtype=torch.long, device=codes.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return uniq, first


def _selection_score(config: FusionTrainConfig, val_loss: float, val_rprec: float | None):
    """Smaller is better; a tuple so R-precision ties fall back to the loss."""
    if config.select_by == "rprec" and val_rprec is not None:
        return (-val_rprec, val_loss)
    return (val_loss,)


def _estimated_cost(job: TrainingJob) -> float:
    """Relative run time, for ordering only: steps x (batch + 40). A CPU step cost ~4.3 ms at
    batch 8 and ~14.6 ms at batch 128 with the default heads, i.e. about proportional to
    batch + 40."""
    n, batch = len(job.train), job.batch_size
    return epochs_to_run(n, batch, job.config) * steps_per_epoch(n, batch) * (batch + 40)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (a trailing batch of one pair is skipped)."""
    full, rest = divmod(n_train, batch_size)
    return full + (1 if rest >= 2 else 0)


def epochs_to_run(n_train: int, batch_size: int, config: FusionTrainConfig) -> int:
    """The paper's epochs, extended until ``min_steps`` optimiser steps fit."""
    per_epoch = max(1, steps_per_epoch(n_train, batch_size))
    return max(config.epochs, math.ceil(config.min_steps / per_epoch))


def train_heads(
    train: PairData,
    val: PairData | None,
    spec: ModelSpec,
    config: FusionTrainConfig,
    batch_size: int,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``g_p``/``g_c`` with the spec's loss variant; deterministic for ``config.seed``."""
    if config.select_by not in ("rprec", "loss"):
        raise ValueError(f"select_by must be 'rprec' or 'loss', got {config.select_by!r}")
    if len(train) < 2:
        raise ValueError(f"need at least 2 training pairs for in-batch negatives, got {len(train)}")
    if batch_size < 2:
        raise ValueError(f"batch size must be at least 2 for in-batch negatives, got {batch_size}")
    device = resolve_device(config.device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    started = time.monotonic()
    threads_before = torch.get_num_threads()
    if device.type == "cpu" and config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _train(train, val, spec, config, batch_size, log, device, fork_devices, started)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    train: PairData,
    val: PairData | None,
    spec: ModelSpec,
    config: FusionTrainConfig,
    batch_size: int,
    log: Callable[[str], None] | None,
    device: torch.device,
    fork_devices: list[int],
    started: float,
) -> TrainResult:
    with torch.random.fork_rng(devices=fork_devices):
        # Seeds the global RNG (head init, dropout) without leaking into the caller's state.
        torch.manual_seed(config.seed)
        heads = make_heads(train, spec, config).to(device)
        opt = _adamw(heads, config)
        order_gen = torch.Generator().manual_seed(config.seed)
        tr = _Tensors.of(train, device)
        va = _Tensors.of(val, device) if val is not None and len(val) >= 2 else None
        # A fixed shuffled order: sorted inputs would put one category per val batch.
        val_order = (
            torch.randperm(len(val), generator=torch.Generator().manual_seed(config.seed + 1)).to(
                device
            )
            if va is not None
            else None
        )
        val_initial = (
            _eval_loss(heads, va, val_order, batch_size, spec, config) if va is not None else None
        )
        history: list[dict] = []
        best_score: tuple = (math.inf, math.inf)
        best_epoch, best_state = 0, None
        stopped = "completed"
        max_epochs = epochs_to_run(len(train), batch_size, config)
        autocast = (
            config.bf16_autocast_min_batch is not None
            and batch_size >= config.bf16_autocast_min_batch
        )
        for epoch in range(1, max_epochs + 1):
            epoch_start = time.monotonic()
            heads.train()
            perm = torch.randperm(len(train), generator=order_gen).to(device)
            # Summed as a tensor: one sync per epoch instead of one per step.
            total, count = torch.zeros((), device=device), 0
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                if len(idx) < 2:  # a lone pair has no negatives and a zero loss
                    continue
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = batch_loss(heads, tr, idx, spec, config)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
                count += len(idx)
            train_loss = float(total) / count
            # R-precision is computed whatever selects the epoch: the UI shows it, and it
            # shares the loss's forward pass.
            val_loss, val_rprec = (
                _validate(heads, va, val_order, batch_size, spec, config)
                if va is not None
                else (None, None)
            )
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_rprec": val_rprec,
                    "seconds": time.monotonic() - epoch_start,
                }
            )
            if log is not None:
                log(
                    f"{spec.name} epoch {epoch}: train {train_loss:.4f} val {val_loss} "
                    f"val R-prec {val_rprec}"
                )
            # Without validation the "best" epoch is simply the latest one.
            score = (
                _selection_score(config, val_loss, val_rprec) if val_loss is not None else (-epoch,)
            )
            if score < best_score:
                best_score, best_epoch = score, epoch
                if config.keep_best:
                    best_state = copy.deepcopy(heads.state_dict())
            elif (
                config.early_stopping_patience is not None
                and epoch - best_epoch >= config.early_stopping_patience
            ):
                stopped = "early_stopping"
                break
            elif (
                epoch > config.epochs
                and va is not None
                and config.extra_patience is not None
                and epoch - best_epoch >= config.extra_patience
            ):
                stopped = "converged"
                break
            if (
                config.max_train_seconds is not None
                and time.monotonic() - started >= config.max_train_seconds
                and epoch < max_epochs
            ):
                stopped = "time_budget"
                break
        if config.keep_best and best_state is not None:
            state, weights_epoch = best_state, best_epoch
        else:
            state, weights_epoch = heads.state_dict(), len(history)
    return TrainResult(
        state_dict={k: v.detach().cpu().clone() for k, v in state.items()},
        history=history,
        val_loss_initial=val_initial,
        best_epoch=best_epoch,
        weights_epoch=weights_epoch,
        epochs_run=len(history),
        stopped=stopped,
        seconds=time.monotonic() - started,
    )


@dataclass
class TrainingJob:
    """One (model, setting) ready to train: its data, batch size and artefact bookkeeping."""

    spec: ModelSpec
    setting: str
    train: PairData
    val: PairData
    batch_size: int
    config: FusionTrainConfig
    fingerprint: str
    #: Equal for jobs whose training runs are numerically identical (see :func:`training_key`).
    training_key: str
    row: dict
    meta_base: dict
    #: Key set of the train + val examples, stored beside the weights (see ``retrain``).
    train_keys: pl.DataFrame | None = None


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
    arrays = [
        getattr(d, a) for d in (train, val) for a in ("products", "categories", "category_codes")
    ]
    if tree:
        arrays += [a for d in (train, val) for a in (d.depth, d.chain) if a is not None]
    return array_fingerprint(
        ARTEFACT_VERSION,
        spec.modalities,
        spec.mask_same_category,
        tree,
        spec.residual,
        batch_size,
        {k: v for k, v in config.to_dict().items() if k != "device"},
        *arrays,
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

    Heads whose config fingerprint differs are never reused, whatever the data change; the
    configured batch size counts, not the one capped at the number of train pairs (data).
    """
    return array_fingerprint(
        ARTEFACT_VERSION,
        spec,
        setting,
        {k: v for k, v in config.to_dict().items() if k != "device"},
        drop_empty,
        {k: sorted(v) for k, v in sorted(input_model_ids.items())},
        repr(sorted(dims.items())),
    )


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
    storage,
    model: str,
    setting: str,
    previous: Mapping | None,
    *,
    fingerprint: str,
    config_fp: str,
    keys: pl.DataFrame | None,
    retrain_fraction: float = DEFAULT_RETRAIN_FRACTION,
    reuse_unchanged: bool = True,
    force_retrain: bool = False,
) -> ReuseDecision:
    """Reuse the head on disk when its weights are intact, its config fingerprint equals
    ``config_fp`` and its training examples changed by at most ``retrain_fraction``.

    ``previous`` is the artefact JSON (None: none or unreadable); ``keys`` the current key set
    (may be None only when ``fingerprint`` equals the stored one, i.e. identical data).
    ``retrain_fraction`` 0 reuses byte-identical data only. The change is measured against the
    data the head was *trained* on, so small changes add up until the head retrains.
    """
    from catret_pipeline.fusion import inference

    if previous is None:
        _, js = inference.artefact_paths(storage, model, setting)
        why = "artefact metadata unreadable" if js.exists() else "no trained artefact yet"
        return ReuseDecision(False, why)
    same_data = previous.get("fingerprint") == fingerprint
    prev_keys, keys_problem = read_train_keys(
        storage, model, setting, previous.get("train_keys_sha256")
    )
    fraction: float | None = None
    if same_data:
        fraction = 0.0
    elif prev_keys is not None and keys is not None:
        fraction = data_change_fraction(prev_keys, keys)
    if force_retrain:
        return ReuseDecision(False, "force_retrain: retrained on demand", fraction)
    if not reuse_unchanged:
        return ReuseDecision(False, "reuse_unchanged is off", fraction)
    if previous.get("weights_sha256") != inference.weights_sha256(storage, model, setting):
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
        return ReuseDecision(False, f"{keys_problem}: data change not measurable", None)
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


def _repair_reuse_records(
    storage, model: str, setting: str, previous: Mapping, keys: pl.DataFrame, config_fp: str
) -> None:
    from catret_pipeline.fusion import inference

    sha = write_train_keys(storage, model, setting, keys)
    inference.write_meta(
        storage,
        model,
        setting,
        {**previous, "train_keys_sha256": sha, "config_fingerprint": config_fp},
    )


def needs_images_absent(spec: ModelSpec, products: ProductFeatureTables) -> bool:
    """True for CLIP-I / CLIP-IA on a catalogue without a single image embedding.

    Trained on the attribute block alone they would give every product that shares its
    attributes (one manufacturer line, say) the same vector: a ranking of ties that no index can
    order, under an image model's name. Models with a title block run on the modalities present
    (the all-zero image block adds nothing to g_p).
    """
    return (
        IMAGE in spec.modalities
        and TITLE not in spec.modalities
        and len(products.tables[IMAGE].keys) == 0
    )


def prepare_training(
    storage,
    spec: ModelSpec,
    setting: str,
    pairs: pl.DataFrame,
    products: ProductFeatureTables,
    categories: CategoryVectors,
    config: FusionTrainConfig,
    *,
    category_tree: pl.DataFrame | None = None,
    drop_empty: bool = True,
    reuse_unchanged: bool = True,
    retrain_fraction: float = DEFAULT_RETRAIN_FRACTION,
    force_retrain: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainingJob | dict:
    """Build one (model, setting)'s data; the finished ``fusion_models`` row when there is
    nothing to train (skipped, or reused: see :func:`reuse_decision`)."""
    from catret_pipeline.fusion import inference

    retrain_fraction = check_retrain_fraction(retrain_fraction)

    started = time.monotonic()
    setting_pairs = pairs.filter(pl.col("setting") == setting)
    row = new_row(spec.name, setting)
    if needs_images_absent(spec, products):
        row.update(
            status="skipped",
            reason=(
                f"no image embeddings in this catalogue (text-only): {spec.name} is an image "
                "model without a title block"
            ),
            seconds=time.monotonic() - started,
        )
        return row
    names: dict[str, int] = {}
    build = dict(
        spec=spec,
        products=products,
        categories=categories,
        category_tree=category_tree,
        normalize=config.normalize_inputs,
        drop_empty=drop_empty,
        name_codes=names,
    )
    train = build_pair_data(setting_pairs.filter(pl.col("split") == "train"), **build)
    val = build_pair_data(setting_pairs.filter(pl.col("split") == "val"), **build)
    row["n_train"], row["n_val"] = len(train), len(val)
    row["n_dropped_empty"] = train.n_dropped_empty + val.n_dropped_empty
    if len(train) < 2:
        row.update(
            status="skipped",
            reason=f"{len(train)} usable train pair(s) in setting {setting!r} (need >= 2)",
            seconds=time.monotonic() - started,
        )
        return row
    if spec.residual and train.block_dims.get("title") != train.categories.shape[1]:
        row.update(
            status="skipped",
            reason=(
                f"residual heads need title vectors as wide as the category vectors "
                f"({train.block_dims.get('title')} vs {train.categories.shape[1]}): "
                "use one text encoder for both"
            ),
            seconds=time.monotonic() - started,
        )
        return row
    batch_size = min(config.batch_size_for(setting), len(train))
    fingerprint = array_fingerprint(
        ARTEFACT_VERSION,
        spec,
        setting,
        batch_size,
        {k: v for k, v in config.to_dict().items() if k != "device"},
        drop_empty,
        *(
            getattr(d, a)
            for d in (train, val)
            for a in ("products", "categories", "category_codes")
        ),
        *(a for d in (train, val) for a in (d.depth, d.chain) if a is not None),
    )
    input_model_ids = {
        **{m: products.tables[m].model_ids for m in spec.modalities},
        "category": categories.model_ids,
    }
    dims = {
        "product_in_dim": int(train.products.shape[1]),
        "category_in_dim": int(train.categories.shape[1]),
        "modality_dims": products.dims(spec.modalities),
    }
    config_fp = config_fingerprint(spec, setting, config, drop_empty, input_model_ids, dims)
    pt, _ = inference.artefact_paths(storage, spec.name, setting)
    row["artefact_path"] = str(pt.relative_to(storage.path()))
    previous = inference.read_meta(storage, spec.name, setting)
    # Hashing every example costs ~0.3 s per 30k pairs: skip it when the data is identical.
    same_data = previous is not None and previous.get("fingerprint") == fingerprint
    keys = None if same_data else training_keys({"train": train, "val": val})
    decision = reuse_decision(
        storage,
        spec.name,
        setting,
        previous,
        fingerprint=fingerprint,
        config_fp=config_fp,
        keys=keys,
        retrain_fraction=retrain_fraction,
        reuse_unchanged=reuse_unchanged,
        force_retrain=force_retrain,
    )
    row["data_change_fraction"] = decision.fraction
    row["reason"] = decision.reason
    if decision.reuse:
        if decision.repair:
            # Artefact from before key files (or whose key file was lost) on identical data:
            # the current keys are the trained-on keys, so record them instead of retraining.
            _repair_reuse_records(
                storage,
                spec.name,
                setting,
                previous,
                keys if keys is not None else training_keys({"train": train, "val": val}),
                config_fp,
            )
        _fill_row(row, previous)
        row.update(status="reused", seconds=time.monotonic() - started)
        if log is not None:
            log(f"{spec.name}/{setting}: reusing {pt}: {decision.reason}")
        return row
    if keys is None:
        keys = training_keys({"train": train, "val": val})
    meta_base = {
        "model": spec.name,
        "setting": setting,
        "spec": dataclasses.asdict(spec),
        "config": config.to_dict(),
        "batch_size": batch_size,
        "device": str(resolve_device(config.device)),
        "dims": dims,
        "input_model_ids": {**products.model_ids(), "category": categories.model_ids},
        "n_train": len(train),
        "n_val": len(val),
        "n_dropped_empty": row["n_dropped_empty"],
        "missing_modalities": {"train": train.missing, "val": val.missing},
        "fingerprint": fingerprint,
        "config_fingerprint": config_fp,
    }
    row["seconds"] = time.monotonic() - started
    return TrainingJob(
        spec=spec,
        setting=setting,
        train=train,
        val=val,
        batch_size=batch_size,
        config=config,
        fingerprint=fingerprint,
        training_key=training_key(spec, train, val, batch_size, config),
        row=row,
        meta_base=meta_base,
        train_keys=keys,
    )


def finish_training(
    storage, job: TrainingJob, result: TrainResult, shared_with: str | None = None
) -> dict:
    """Write the artefact of a trained job; returns its ``fusion_models`` row."""
    from catret_pipeline.fusion import inference

    meta = {
        **job.meta_base,
        "history": result.history,
        "val_loss_initial": result.val_loss_initial,
        "best_epoch": result.best_epoch,
        "weights_epoch": result.weights_epoch,
        "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "train_seconds": result.seconds,
        "training_shared_with": shared_with,
    }
    if job.train_keys is not None:
        # Keys first, then weights and JSON: a crash in between leaves a JSON whose recorded
        # key-file hash no longer matches, which the next run treats as "retrain".
        meta["train_keys_sha256"] = write_train_keys(
            storage, job.spec.name, job.setting, job.train_keys
        )
    inference.save_artefact(storage, job.spec.name, job.setting, result.state_dict, meta)
    row = dict(job.row)
    _fill_row(row, meta)
    row["seconds"] = row["seconds"] + (0.0 if shared_with else result.seconds)
    return row


def _train_job(job: TrainingJob) -> TrainResult:
    # Module-level so a spawned worker process can unpickle it.
    return train_heads(job.train, job.val, job.spec, job.config, job.batch_size)


def run_jobs(
    jobs: list[TrainingJob],
    workers: int = 1,
    on_done: Callable[[TrainingJob, TrainResult, str | None], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[int, tuple[TrainResult, str | None]]:
    """Train every job, once per distinct :func:`training_key`, in up to ``workers`` processes.

    Returns ``{job index: (result, name of the model whose run it shares or None)}``. Each
    run is seeded on its own, so results do not depend on ``workers`` or on the order.
    ``on_done`` is called in the calling process as each job's result becomes available.
    """
    leaders: dict[str, int] = {}
    followers: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        lead = leaders.setdefault(job.training_key, i)
        followers.setdefault(lead, [])
        if lead != i:
            followers[lead].append(i)
    # Longest runs first, so the pool's tail is short.
    order = sorted(leaders.values(), key=lambda i: -_estimated_cost(jobs[i]))
    out: dict[int, tuple[TrainResult, str | None]] = {}

    def done(lead: int, result: TrainResult) -> None:
        for i in [lead, *followers[lead]]:
            shared = None if i == lead else jobs[lead].spec.name
            out[i] = (result, shared)
            if shared and log is not None:
                log(f"{jobs[i].spec.name}/{jobs[i].setting}: same training as {shared}, shared")
            if on_done is not None:
                on_done(jobs[i], result, shared)

    cuda = any(resolve_device(jobs[i].config.device).type == "cuda" for i in order)
    if workers <= 1 or len(order) <= 1 or cuda:
        for lead in order:
            done(lead, _train_job(jobs[lead]))
        return out
    from catret_pipeline.workers.pool import run_in_processes

    run_in_processes(
        _train_job,
        [jobs[lead] for lead in order],
        workers,
        lambda pos, result: done(order[pos], result),
    )
    return out


def train_and_save(
    storage,
    spec: ModelSpec,
    setting: str,
    pairs: pl.DataFrame,
    products: ProductFeatureTables,
    categories: CategoryVectors,
    config: FusionTrainConfig,
    *,
    category_tree: pl.DataFrame | None = None,
    drop_empty: bool = True,
    reuse_unchanged: bool = True,
    retrain_fraction: float = DEFAULT_RETRAIN_FRACTION,
    force_retrain: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train one (model, setting) on its train split, validate on val, write the artefact.

    ``pairs`` is the whole ``evaluation_pairs`` table. Returns the ``fusion_models`` row. The
    artefact on disk is reused instead of retrained when :func:`reuse_decision` says so
    (intact weights, same config and input models, training data changed at most
    ``retrain_fraction``).
    """
    job = prepare_training(
        storage,
        spec,
        setting,
        pairs,
        products,
        categories,
        config,
        category_tree=category_tree,
        drop_empty=drop_empty,
        reuse_unchanged=reuse_unchanged,
        retrain_fraction=retrain_fraction,
        force_retrain=force_retrain,
        log=log,
    )
    if isinstance(job, dict):
        return job
    result = train_heads(job.train, job.val, spec, config, job.batch_size, log=log)
    return finish_training(storage, job, result)


def _fill_row(row: dict, meta: dict) -> None:
    history = meta["history"]
    vals = [h["val_loss"] for h in history if h["val_loss"] is not None]
    row.update(
        epochs_run=int(meta["epochs_run"]),
        best_epoch=int(meta["best_epoch"]),
        train_loss_first=history[0]["train_loss"] if history else None,
        train_loss_last=history[-1]["train_loss"] if history else None,
        val_loss_initial=meta["val_loss_initial"],
        val_loss_first=vals[0] if vals else None,
        val_loss_best=min(vals) if vals else None,
        val_rprec_best=_history_value(history, int(meta["best_epoch"]), "val_rprec"),
    )


def _history_value(history: list[dict], epoch: int, key: str) -> float | None:
    # Artefacts trained before a key existed lack it.
    return history[epoch - 1].get(key) if 1 <= epoch <= len(history) else None
