"""One (model, setting) from the asset's tables to a training job, or to its finished
``fusion_models`` row when there is nothing to train (skipped, or its head reused), and from a
finished training run to its artefact and row."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import polars as pl

from catret_pipeline.fusion.artefacts import (
    artefact_paths,
    read_stored_head,
    record_train_keys,
    write_trained_head,
)
from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import (
    IMAGE,
    TITLE,
    CategoryVectors,
    ModelSpec,
    PairData,
    ProductFeatureTables,
    build_pair_data,
)
from catret_pipeline.fusion.fingerprint import config_fingerprint, data_fingerprint, training_key
from catret_pipeline.fusion.retrain import (
    DEFAULT_RETRAIN_FRACTION,
    check_retrain_fraction,
    reuse_decision,
    training_keys,
)
from catret_pipeline.fusion.schemas import new_row
from catret_pipeline.fusion.train import TrainResult, resolve_device
from catret_pipeline.storage.artefacts import relative_key


@dataclasses.dataclass
class PairSource:
    """What builds one (model, setting)'s train and val arrays again, kept in place of them.

    The arrays are one dense row per (product, category) pair: at the paper's 39k products the
    18 jobs' arrays came to ~20 GB held at once (10k products peaked at 6.9 GB), more than these
    machines have. The source shares the product and category tables between jobs, and a worker
    builds one job's arrays only while it trains it. ``_pair_splits`` is deterministic, so the
    rebuilt arrays equal the ones the fingerprints were computed from.
    """

    pairs: pl.DataFrame
    spec: ModelSpec
    products: ProductFeatureTables
    categories: CategoryVectors
    category_tree: pl.DataFrame | None
    normalize: bool
    drop_empty: bool

    def build(self) -> tuple[PairData, PairData]:
        return _pair_splits(
            self.pairs,
            self.spec,
            self.products,
            self.categories,
            category_tree=self.category_tree,
            normalize=self.normalize,
            drop_empty=self.drop_empty,
        )


@dataclasses.dataclass
class TrainingJob:
    """One (model, setting) ready to train: its data (or its ``source``), batch size and
    artefact bookkeeping."""

    spec: ModelSpec
    setting: str
    #: None when ``source`` builds them (what ``prepare_training`` returns).
    train: PairData | None
    val: PairData | None
    batch_size: int
    config: FusionTrainConfig
    fingerprint: str
    #: Equal for jobs whose training runs are numerically identical (see ``training_key``).
    training_key: str
    row: dict
    meta_base: dict
    #: Key set of the train + val examples, stored beside the weights (see ``retrain``).
    train_keys: pl.DataFrame | None = None
    source: PairSource | None = None

    @property
    def n_train(self) -> int:
        return len(self.train) if self.train is not None else self.row["n_train"]

    def data(self) -> tuple[PairData, PairData]:
        """The train and val arrays, built from ``source`` when the job does not hold them."""
        if self.train is not None:
            return self.train, self.val
        return self.source.build()


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


def _skip_reason(spec: ModelSpec, setting: str, train: PairData) -> str | None:
    """Why the built training data cannot train ``spec`` (None: it can)."""
    if len(train) < 2:
        return f"{len(train)} usable train pair(s) in setting {setting!r} (need >= 2)"
    if spec.residual and train.block_dims.get("title") != train.categories.shape[1]:
        return (
            f"residual heads need title vectors as wide as the category vectors "
            f"({train.block_dims.get('title')} vs {train.categories.shape[1]}): "
            "use one text encoder for both"
        )
    return None


def _pair_splits(
    setting_pairs: pl.DataFrame,
    spec: ModelSpec,
    products: ProductFeatureTables,
    categories: CategoryVectors,
    *,
    category_tree: pl.DataFrame | None,
    normalize: bool,
    drop_empty: bool,
) -> tuple[PairData, PairData]:
    """The train and val pairs of one setting as ``spec`` sees them; one category-name code
    table across both, so a name has the same code in each."""
    names: dict[str, int] = {}
    train, val = (
        build_pair_data(
            setting_pairs.filter(pl.col("split") == split),
            spec=spec,
            products=products,
            categories=categories,
            category_tree=category_tree,
            normalize=normalize,
            drop_empty=drop_empty,
            name_codes=names,
        )
        for split in ("train", "val")
    )
    return train, val


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
    nothing to train (skipped, or reused: see ``retrain.reuse_decision``)."""
    retrain_fraction = check_retrain_fraction(retrain_fraction)
    started = time.monotonic()
    row = new_row(spec.name, setting)

    def finished(**values) -> dict:
        row.update(values, seconds=time.monotonic() - started)
        return row

    if needs_images_absent(spec, products):
        return finished(
            status="skipped",
            reason=(
                f"no image embeddings in this catalogue (text-only): {spec.name} is an image "
                "model without a title block"
            ),
        )
    source = PairSource(
        pairs.filter(pl.col("setting") == setting),
        spec,
        products,
        categories,
        category_tree,
        normalize=config.normalize_inputs,
        drop_empty=drop_empty,
    )
    train, val = source.build()
    row["n_train"], row["n_val"] = len(train), len(val)
    row["n_dropped_empty"] = train.n_dropped_empty + val.n_dropped_empty
    skip = _skip_reason(spec, setting, train)
    if skip is not None:
        return finished(status="skipped", reason=skip)

    batch_size = min(config.batch_size_for(setting), len(train))
    fingerprint = data_fingerprint(spec, setting, batch_size, config, drop_empty, train, val)
    dims = {
        "product_in_dim": int(train.products.shape[1]),
        "category_in_dim": int(train.categories.shape[1]),
        "modality_dims": products.dims(spec.modalities),
    }
    # Only the encoders this model reads: a new image encoder leaves a title-only head alone.
    input_model_ids = {
        **{m: products.tables[m].model_ids for m in spec.modalities},
        "category": categories.model_ids,
    }
    config_fp = config_fingerprint(spec, setting, config, drop_empty, input_model_ids, dims)
    pt, _ = artefact_paths(storage, spec.name, setting)
    row["artefact_path"] = relative_key(storage.artefact_root, pt)

    stored = read_stored_head(storage, spec.name, setting)
    # Hashing every example costs ~0.3 s per 30k pairs: skip it when the data is identical.
    same_data = stored.meta is not None and stored.meta.get("fingerprint") == fingerprint
    keys = None if same_data else training_keys({"train": train, "val": val})
    decision = reuse_decision(
        stored,
        fingerprint=fingerprint,
        config_fp=config_fp,
        keys=keys,
        retrain_fraction=retrain_fraction,
        reuse_unchanged=reuse_unchanged,
        force_retrain=force_retrain,
    )
    row["data_change_fraction"] = decision.fraction
    row["reason"] = decision.reason
    if keys is None and (decision.repair or not decision.reuse):
        keys = training_keys({"train": train, "val": val})
    if decision.reuse:
        if decision.repair:
            # On identical data the current keys are the trained-on keys: record them
            # instead of retraining.
            record_train_keys(storage, spec.name, setting, stored.meta, keys, config_fp)
        _fill_row(row, stored.meta)
        if log is not None:
            log(f"{spec.name}/{setting}: reusing {pt}: {decision.reason}")
        return finished(status="reused")

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
    row["seconds"] = time.monotonic() - started  # so far; training adds its own
    return TrainingJob(
        spec=spec,
        setting=setting,
        # The arrays go (this frame frees them) and the source stays: see PairSource.
        train=None,
        val=None,
        batch_size=batch_size,
        config=config,
        fingerprint=fingerprint,
        training_key=training_key(spec, train, val, batch_size, config),
        row=row,
        meta_base=meta_base,
        train_keys=keys,
        source=source,
    )


def finish_training(
    storage, job: TrainingJob, result: TrainResult, shared_with: str | None = None
) -> dict:
    """Write the artefact of a trained job; returns its ``fusion_models`` row."""
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
    meta = write_trained_head(
        storage, job.spec.name, job.setting, result.state_dict, meta, job.train_keys
    )
    row = dict(job.row)
    _fill_row(row, meta)
    row["seconds"] = row["seconds"] + (0.0 if shared_with else result.seconds)
    return row


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
