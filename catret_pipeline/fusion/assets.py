"""Dagster assets of the fusion domain: trained heads and the fused vectors they produce.

torch is imported inside the asset bodies only, so loading the definitions stays fast.
"""

import time

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.fusion.features import (
    MODEL_SPECS,
    SETTINGS,
    CategoryVectors,
    ProductFeatureTables,
    model_spec,
)
from catret_pipeline.fusion.retrain import DEFAULT_RETRAIN_FRACTION
from catret_pipeline.fusion.schemas import FUSION_MODELS_SCHEMA
from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.resources import CatretStorage

GROUP = "fusion"
DEFAULT_MODELS = list(MODEL_SPECS)


class FusionModelsConfig(dg.Config):
    """Which heads to train and how (defaults: the paper where it says, else docs/models.md)."""

    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description=f"Fusion models to train; known: {', '.join(MODEL_SPECS)}.",
    )
    settings: list[str] = Field(
        default_factory=lambda: list(SETTINGS), description="Evaluation settings to train."
    )
    proj_dim: int = Field(256, description="Output size of g_p and g_c (paper: open).")
    hidden_dims: list[int] = Field(
        default_factory=lambda: [512, 512], description="Hidden widths (paper: two layers)."
    )
    dropout: float = Field(0.0, description="Dropout after each hidden layer (docs/models.md).")
    lr: float = Field(1e-4, description="AdamW learning rate (paper: open; docs/models.md).")
    weight_decay: float = Field(0.01, description="AdamW weight decay.")
    epochs: int = Field(30, description="Epochs (paper: 30).")
    min_steps: int = Field(
        1000,
        ge=0,
        description=(
            "Extend training beyond `epochs` until this many optimiser steps have run, stopping "
            "early on validation loss (docs/models.md); 0: exactly `epochs`."
        ),
    )
    extra_patience: int | None = Field(
        25,
        description=(
            "Epochs without a lower validation loss that end the extension beyond `epochs` "
            "(None: run it to the end)."
        ),
    )
    batch_size_general: int = Field(8, description="Batch size, most-general setting (paper: 8).")
    batch_size_all: int = Field(128, description="Batch size, all-categories setting (paper: 128).")
    batch_size_specific: int = Field(
        128, description="Batch size, most-specific setting (paper: 128)."
    )
    tau: float = Field(1.0, description="InfoNCE temperature (paper: 1).")
    lam: float = Field(0.5, description="Weight of the product->category direction (paper: 0.5).")
    seed: int = Field(0, description="Seed for head init, dropout and batch order.")
    keep_best: bool = Field(True, description="Keep the best validation epoch's weights.")
    select_by: str = Field(
        "loss",
        description=(
            "Best epoch by validation R-precision ('rprec', ties by loss) or by validation "
            "loss ('loss'); also what the patience counts (docs/models.md)."
        ),
    )
    bf16_autocast_min_batch: int | None = Field(
        None,
        description=(
            "Train under bf16 autocast when the batch holds at least this many pairs "
            "(None: never). Faster on CPU at batch 128, slower at 8, and less reproducible "
            "between equivalent builds (docs/models.md)."
        ),
    )
    early_stopping_patience: int | None = Field(
        None, description="Stop after this many epochs without a better val loss (None: never)."
    )
    max_train_seconds: float | None = Field(
        None, description="Wall-clock budget per (model, setting); None: unlimited."
    )
    normalize_inputs: bool = Field(True, description="L2-normalise each input block.")
    drop_empty_products: bool = Field(
        True, description="Leave out of training pairs whose product has no embedding at all."
    )
    tree_weight: float = Field(0.5, description="clip-ita-tree: target weight of parent/child.")
    tree_decay: float = Field(0.5, description="clip-ita-tree: factor per extra depth level.")
    res_skip_init: str = Field(
        "pca",
        description=(
            "clip-ita-res: initial shared skip when proj_dim < text width ('pca' or 'random'); "
            "the identity otherwise."
        ),
    )
    res_skip_lr_scale: float = Field(
        0.1,
        description="clip-ita-res: lr multiplier of the shared skip (0 freezes it; docs/models.md).",
    )
    res_anchor: float = Field(
        0.0, description="clip-ita-res: weight of ||A - A_init||^2 in the loss."
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', ...")
    torch_threads: int | None = Field(
        1, description="torch CPU threads per training process (None: torch's default)."
    )
    workers: int = Field(
        2,
        description=(
            "Processes training heads side by side on CPU (1: in-process). Each run is seeded "
            "on its own, so results do not depend on it."
        ),
    )
    reuse_unchanged: bool = Field(
        True,
        description="Reuse trained artefacts at all (false: retrain every run, like force_retrain).",
    )
    retrain_fraction: float = Field(
        DEFAULT_RETRAIN_FRACTION,
        ge=0.0,
        description=(
            "Keep a trained head while its train+val examples differ from those it was trained "
            "on by at most this fraction (|symmetric difference| / |trained-on set|) and its "
            "config and input models are unchanged; 0: retrain on any change (docs/models.md)."
        ),
    )
    force_retrain: bool = Field(
        False, description="Retrain every selected head now, whatever changed (on demand)."
    )

    def train_config(self):
        from catret_pipeline.fusion.train import FusionTrainConfig

        return FusionTrainConfig(
            proj_dim=self.proj_dim,
            hidden_dims=tuple(self.hidden_dims),
            dropout=self.dropout,
            lr=self.lr,
            weight_decay=self.weight_decay,
            epochs=self.epochs,
            min_steps=self.min_steps,
            extra_patience=self.extra_patience,
            batch_sizes={
                "general": self.batch_size_general,
                "all": self.batch_size_all,
                "specific": self.batch_size_specific,
            },
            tau=self.tau,
            lam=self.lam,
            seed=self.seed,
            keep_best=self.keep_best,
            select_by=self.select_by,
            bf16_autocast_min_batch=self.bf16_autocast_min_batch,
            early_stopping_patience=self.early_stopping_patience,
            max_train_seconds=self.max_train_seconds,
            normalize_inputs=self.normalize_inputs,
            tree_weight=self.tree_weight,
            tree_decay=self.tree_decay,
            res_skip_init=self.res_skip_init,
            res_skip_lr_scale=self.res_skip_lr_scale,
            res_anchor=self.res_anchor,
            device=self.device,
            torch_threads=self.torch_threads,
        )


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def _summary_md(df: pl.DataFrame) -> str:
    header = [
        "model",
        "setting",
        "status",
        "data change",
        "epochs",
        "best",
        "train first→last",
        "val initial→best",
        "val R-prec",
        "n_train",
        "n_val",
        "s",
    ]
    rows = []
    for r in df.iter_rows(named=True):
        change = r["data_change_fraction"]
        rows.append(
            [
                r["model"],
                r["setting"],
                f"{r['status']}" + (f" ({r['reason']})" if r["reason"] else ""),
                "-" if change is None else f"{change:.1%}",
                r["epochs_run"],
                r["best_epoch"],
                f"{_fmt(r['train_loss_first'])}→{_fmt(r['train_loss_last'])}",
                f"{_fmt(r['val_loss_initial'])}→{_fmt(r['val_loss_best'])}",
                _fmt(r["val_rprec_best"]),
                r["n_train"],
                r["n_val"],
                f"{r['seconds']:.1f}",
            ]
        )
    return markdown_table(header, rows)


def _curves_md(curves: dict[str, list[dict]]) -> str:
    parts = []
    for key, history in curves.items():
        rows = [[h["epoch"], _fmt(h["train_loss"]), _fmt(h["val_loss"])] for h in history]
        parts.append(f"**{key}**\n\n" + markdown_table(["epoch", "train", "val"], rows) + "\n")
    return "\n".join(parts)


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "polars"},
    description=(
        "Projection heads g_p/g_c of CLIP-I, CLIP-IA, CLIP-ITA and our variants, one per "
        "(model, setting), trained on frozen embeddings; weights under models/<model>/<setting>.pt."
    ),
)
def fusion_models(
    context: dg.AssetExecutionContext,
    config: FusionModelsConfig,
    storage: CatretStorage,
    evaluation_pairs: pl.DataFrame,
    image_embeddings: pl.DataFrame,
    title_embeddings: pl.DataFrame,
    attribute_embeddings: pl.DataFrame,
    category_embeddings: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    from catret_pipeline.fusion import inference
    from catret_pipeline.fusion.train import finish_training, prepare_training, run_jobs

    specs = [model_spec(m) for m in config.models]  # unknown names fail before any training
    unknown = sorted(set(config.settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    train_config = config.train_config()
    products = ProductFeatureTables.from_frames(
        image_embeddings, title_embeddings, attribute_embeddings
    )
    categories = CategoryVectors.from_frame(category_embeddings)
    prepared = []
    for setting in config.settings:
        for spec in specs:
            prepared.append(
                prepare_training(
                    storage,
                    spec,
                    setting,
                    evaluation_pairs,
                    products,
                    categories,
                    train_config,
                    category_tree=category_tree,
                    drop_empty=config.drop_empty_products,
                    reuse_unchanged=config.reuse_unchanged,
                    retrain_fraction=config.retrain_fraction,
                    force_retrain=config.force_retrain,
                    log=context.log.debug,
                )
            )
    jobs = [p for p in prepared if not isinstance(p, dict)]
    finished: dict[int, dict] = {}

    def on_done(job, result, shared_with) -> None:
        row = finish_training(storage, job, result, shared_with)
        finished[id(job)] = row
        context.log.info(
            f"fusion: {job.spec.name}/{job.setting} trained"
            f"{' (same run as ' + shared_with + ')' if shared_with else ''}: "
            f"train {_fmt(row['train_loss_first'])}→{_fmt(row['train_loss_last'])}, "
            f"val best {_fmt(row['val_loss_best'])}, val R-prec {_fmt(row['val_rprec_best'])} "
            f"(epoch {row['best_epoch']}/{row['epochs_run']}) in {result.seconds:.1f}s"
        )

    for p in prepared:
        if not isinstance(p, dict):
            context.log.info(f"fusion: {p.spec.name}/{p.setting} retrains: {p.row['reason']}")
    context.log.info(
        f"fusion: {len(jobs)} head(s) to train, {len(prepared) - len(jobs)} skipped or reused; "
        f"{config.workers} worker process(es)"
    )
    run_jobs(jobs, workers=config.workers, on_done=on_done, log=context.log.info)
    rows, curves = [], {}
    for p in prepared:
        row = p if isinstance(p, dict) else finished[id(p)]
        rows.append(row)
        if row["status"] == "skipped":
            context.log.warning(f"fusion: {row['model']}/{row['setting']} skipped: {row['reason']}")
            continue
        meta = inference.read_meta(storage, row["model"], row["setting"]) or {}
        curves[f"{row['model']}/{row['setting']}"] = meta.get("history", [])
    df = pl.DataFrame(rows, schema=FUSION_MODELS_SCHEMA)
    metadata: dict = {
        "summary": dg.MetadataValue.md(_summary_md(df)),
        "loss_curves": dg.MetadataValue.md(_curves_md(curves)),
        "loss_curves_json": dg.MetadataValue.json(curves),
        "n_trained": dg.MetadataValue.int(int((df["status"] == "trained").sum())),
        "n_reused": dg.MetadataValue.int(int((df["status"] == "reused").sum())),
        "n_skipped": dg.MetadataValue.int(int((df["status"] == "skipped").sum())),
        "retrain_fraction": dg.MetadataValue.float(float(config.retrain_fraction)),
        "force_retrain": dg.MetadataValue.bool(config.force_retrain),
        "input_model_ids": dg.MetadataValue.json(
            {**products.model_ids(), "category": categories.model_ids}
        ),
    }
    # Flat floats, one per (model, setting), so the UI charts them across materialisations.
    for r in df.iter_rows(named=True):
        for col in ("train_loss_last", "val_loss_best", "val_rprec_best", "data_change_fraction"):
            if r[col] is not None:
                metadata[f"{r['model']}.{r['setting']}.{col}"] = dg.MetadataValue.float(
                    float(r[col])
                )
    return dg.Output(df, metadata=metadata)


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "polars"},
    description=(
        "Fused vectors of every trained (model, setting): the setting's test-split products and "
        "a query vector for every distinct category name in category_tree (unit length)."
    ),
)
def fused_representations(
    context: dg.AssetExecutionContext,
    storage: CatretStorage,
    fusion_models: pl.DataFrame,
    evaluation_pairs: pl.DataFrame,
    image_embeddings: pl.DataFrame,
    title_embeddings: pl.DataFrame,
    attribute_embeddings: pl.DataFrame,
    category_embeddings: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    from catret_pipeline.fusion import inference

    products = ProductFeatureTables.from_frames(
        image_embeddings, title_embeddings, attribute_embeddings
    )
    categories = CategoryVectors.from_frame(category_embeddings)
    tree_names = category_tree["name"].unique(maintain_order=True).sort().to_list()
    cat_raw, cat_names = categories.for_names(tree_names, normalize=False)
    missing_names = len(tree_names) - len(cat_names)
    if missing_names:
        context.log.warning(
            f"{missing_names} category name(s) of category_tree have no category_embeddings row; "
            "they get no query vector"
        )
    frames, stats = [], []
    usable = fusion_models.filter(pl.col("status") != "skipped")
    for model, setting in usable.select("model", "setting").iter_rows():
        started = time.monotonic()
        loaded = inference.load_fusion_model(storage, model, setting)
        asins = (
            evaluation_pairs.filter((pl.col("setting") == setting) & (pl.col("split") == "test"))[
                "asin"
            ]
            .unique(maintain_order=True)
            .to_list()
        )
        p = inference.encode_products(storage, model, setting, asins, products, loaded=loaded)
        q = loaded.encode_category_inputs(cat_raw)
        for kind, keys, vecs in (("product", asins, p), ("category", cat_names, q)):
            frames.append(
                pl.DataFrame(
                    {
                        "model": [model] * len(keys),
                        "setting": [setting] * len(keys),
                        "kind": [kind] * len(keys),
                        "key": keys,
                        "embedding": pl.Series(
                            "embedding", vecs, dtype=pl.Array(pl.Float32, vecs.shape[1])
                        ),
                    }
                )
            )
        stats.append((model, setting, len(asins), len(cat_names), time.monotonic() - started))
    widths = {f["embedding"].dtype.size for f in frames}
    if len(widths) > 1:
        raise ValueError(
            f"trained models project to different sizes {sorted(widths)}; retrain them with one proj_dim"
        )
    if frames:
        df = pl.concat(frames)
    else:
        df = pl.DataFrame(
            schema={
                "model": pl.String,
                "setting": pl.String,
                "kind": pl.String,
                "key": pl.String,
                "embedding": pl.Array(pl.Float32, 1),
            }
        )
    md = markdown_table(
        ["model", "setting", "products", "categories", "s"],
        [[m, s, n_p, n_c, f"{sec:.1f}"] for m, s, n_p, n_c, sec in stats],
    )
    return dg.Output(
        df,
        metadata={
            "per_model": dg.MetadataValue.md(md),
            "category_names_without_embedding": dg.MetadataValue.int(missing_names),
            "models": dg.MetadataValue.json([f"{m}/{s}" for m, s, *_ in stats]),
        },
    )


@dg.asset_check(asset=fusion_models, description="Every trained head lowered its validation loss.")
def fusion_models_learned(fusion_models: pl.DataFrame) -> dg.AssetCheckResult:
    rows = fusion_models.filter(
        (pl.col("status") != "skipped")
        & pl.col("val_loss_initial").is_not_null()
        & pl.col("val_loss_best").is_not_null()
    )
    bad = rows.filter(pl.col("val_loss_best") >= pl.col("val_loss_initial"))
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "checked": dg.MetadataValue.int(rows.height),
            "not_learning": dg.MetadataValue.json(
                [f"{m}/{s}" for m, s in bad.select("model", "setting").iter_rows()]
            ),
        },
    )


@dg.asset_check(
    asset=fused_representations, description="Fused vectors are finite and of unit length."
)
def fused_representations_unit_norm(fused_representations: pl.DataFrame) -> dg.AssetCheckResult:
    if fused_representations.height == 0:
        return dg.AssetCheckResult(passed=True, metadata={"rows": dg.MetadataValue.int(0)})
    emb = fused_representations["embedding"].to_numpy()
    norms = np.linalg.norm(emb, axis=1)
    bad = int((~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3)).sum())
    return dg.AssetCheckResult(
        passed=bad == 0,
        metadata={
            "rows": dg.MetadataValue.int(fused_representations.height),
            "bad_rows": dg.MetadataValue.int(bad),
        },
    )


ASSETS = [fusion_models, fused_representations]
CHECKS = [fusion_models_learned, fused_representations_unit_norm]
