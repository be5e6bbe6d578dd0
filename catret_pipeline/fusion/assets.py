"""Dagster assets of the fusion domain: trained heads and the fused vectors they produce.

torch is imported inside the asset bodies only, so loading the definitions stays fast.
"""

import time

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, create_model

from catret_pipeline.fusion.config import FusionTrainConfig, flat_fields
from catret_pipeline.fusion.features import (
    MODEL_SPECS,
    SETTINGS,
    CategoryVectors,
    ProductFeatureTables,
    model_spec,
)
from catret_pipeline.fusion.report import fusion_models_metadata, trained_line
from catret_pipeline.fusion.retrain import DEFAULT_RETRAIN_FRACTION
from catret_pipeline.fusion.schemas import FUSION_MODELS_SCHEMA
from catret_pipeline.markdown import markdown_table
from catret_pipeline.storage.resources import CatretStorage

GROUP = "fusion"
DEFAULT_MODELS = list(MODEL_SPECS)

#: Every ``FusionTrainConfig`` hyper-parameter as a flat launchpad field, same default and
#: description (``config.flat_fields``): declare a new one there, not here.
_HyperParameters = create_model(
    "FusionHyperParameters", __base__=dg.Config, __module__=__name__, **flat_fields()
)


class FusionModelsConfig(_HyperParameters):
    """Which heads to train and how (defaults: the paper where it says, else docs/models.md)."""

    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description=f"Fusion models to train; known: {', '.join(MODEL_SPECS)}.",
    )
    settings: list[str] = Field(
        default_factory=lambda: list(SETTINGS), description="Evaluation settings to train."
    )
    drop_empty_products: bool = Field(
        True, description="Leave out of training pairs whose product has no embedding at all."
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

    def train_config(self) -> FusionTrainConfig:
        return FusionTrainConfig.from_flat(self.model_dump())


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
    from catret_pipeline.fusion.artefacts import read_meta
    from catret_pipeline.fusion.jobs import finish_training, prepare_training
    from catret_pipeline.fusion.runner import run_jobs

    specs = [model_spec(m) for m in config.models]  # unknown names fail before any training
    unknown = sorted(set(config.settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    train_config = config.train_config()
    products = ProductFeatureTables.from_frames(
        image_embeddings, title_embeddings, attribute_embeddings
    )
    categories = CategoryVectors.from_frame(category_embeddings)
    prepared = [
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
        for setting in config.settings
        for spec in specs
    ]
    jobs = [p for p in prepared if not isinstance(p, dict)]
    finished: dict[int, dict] = {}

    def on_done(job, result, shared_with) -> None:
        row = finish_training(storage, job, result, shared_with)
        finished[id(job)] = row
        context.log.info(trained_line(row, shared_with, result.seconds))

    for job in jobs:
        context.log.info(f"fusion: {job.spec.name}/{job.setting} retrains: {job.row['reason']}")
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
        meta = read_meta(storage, row["model"], row["setting"]) or {}
        curves[f"{row['model']}/{row['setting']}"] = meta.get("history", [])
    df = pl.DataFrame(rows, schema=FUSION_MODELS_SCHEMA)
    metadata = fusion_models_metadata(
        df,
        curves,
        retrain_fraction=config.retrain_fraction,
        force_retrain=config.force_retrain,
        input_model_ids={**products.model_ids(), "category": categories.model_ids},
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
