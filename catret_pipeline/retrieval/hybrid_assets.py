"""Assets of ``catret-hybrid``: weights fitted on validation, then the test rankings.

``hybrid_weights`` holds, per (setting, route), the weight of each component, the trained head
it uses and what the weights and each component alone scored on validation; ``hybrid_runs``
ranks every test query of every setting with them (exact scoring over the setting's test
collection) and feeds ``retrieval_runs``.
"""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.fusion.features import CategoryVectors, ProductFeatureTables
from catret_pipeline.markdown import markdown_table
from catret_pipeline.retrieval.bm25 import Bm25Params
from catret_pipeline.retrieval.hybrid import (
    COMPONENTS,
    HYBRID_MODEL,
    ROUTES,
    fit_routes,
    rank_routed,
)
from catret_pipeline.retrieval.hybrid_scores import HybridContext, SettingData, standardise
from catret_pipeline.retrieval.schemas import MIN_DEPTH, RunRows
from catret_pipeline.storage.resources import CatretStorage

GROUP = "retrieval"
HYBRID_SEARCH = "hybrid"

HYBRID_WEIGHTS_SCHEMA = {
    "setting": pl.String,
    "route": pl.String,
    "head_model": pl.String,
    "n_val_queries": pl.Int64,
    "fallback": pl.Boolean,
    "val_r_precision": pl.Float64,
    "val_ap": pl.Float64,
    "shrinkage": pl.Float64,
    **{f"w_{c}": pl.Float64 for c in COMPONENTS},
    **{f"val_r_precision_{c}": pl.Float64 for c in COMPONENTS},
}

#: Components a route may use. A new name has no prototype, and no head: a head's epoch was
#: picked on the same validation split, so its validation score on new names is optimistic
#: (measured: it earned weight on validation and lost on test, docs/models.md).
ROUTE_COMPONENTS = {
    "seen": ("bm25", "title", "attributes", "head", "prototype"),
    "unseen": ("bm25", "title", "attributes", "novelty"),
}


class HybridConfig(dg.Config):
    """How ``catret-hybrid`` fits its weights (docs/models.md, "catret-hybrid")."""

    grid_step: float = Field(
        0.1, description="Weight grid resolution on the simplex (0.1: 1,001 points for 5 parts)."
    )
    min_route_queries: int = Field(
        5,
        ge=1,
        description="A route (seen / unseen names) with fewer validation queries takes the "
        "weights fitted on all validation queries.",
    )
    shrink: bool = Field(
        True,
        description="Pull each route's weights towards its best single component by the "
        "amount cross-validation on the validation queries picks (0 = none, 1 = that component "
        "alone).",
    )
    head_model: str = Field(
        "",
        description="Trained fusion model whose score is the 'head' component; '' = the one with "
        "the best validation R-precision in each setting.",
    )


def _context(
    products: pl.LazyFrame,
    image_embeddings: pl.DataFrame,
    title_embeddings: pl.DataFrame,
    attribute_embeddings: pl.DataFrame,
    category_embeddings: pl.DataFrame,
) -> HybridContext:
    titles = products.select("asin", "title").collect().unique(subset="asin", keep="first")
    return HybridContext(
        titles=dict(titles.iter_rows()),
        products=ProductFeatureTables.from_frames(
            image_embeddings, title_embeddings, attribute_embeddings
        ),
        categories=CategoryVectors.from_frame(category_embeddings),
        bm25=Bm25Params(),
    )


def _settings(evaluation_pairs: pl.DataFrame) -> list[SettingData]:
    pairs = evaluation_pairs.select("setting", "asin", "category_name", "split", "seen_in_train")
    return [
        SettingData(s, pairs.filter(pl.col("setting") == s))
        for s in sorted(pairs["setting"].unique().to_list())
    ]


def pick_head(fusion_models: pl.DataFrame, setting: str, wanted: str = "") -> str | None:
    """The fusion model whose score the hybrid uses in ``setting``: ``wanted`` when it trained
    there, else the best validation R-precision (ties by name); None without any."""
    rows = fusion_models.filter(
        (pl.col("setting") == setting)
        & (pl.col("status") != "skipped")
        & pl.col("val_rprec_best").is_not_null()
    )
    if wanted:
        return wanted if wanted in rows["model"].to_list() else None
    if rows.is_empty():
        return None
    return rows.sort(["val_rprec_best", "model"], descending=[True, False])["model"][0]


def _load_head(storage: CatretStorage, model: str | None, setting: str):
    if model is None:
        return None
    from catret_pipeline.fusion import inference

    return inference.load_fusion_model(storage, model, setting)


@dg.asset(
    group_name=GROUP,
    kinds={"numpy", "polars"},
    description="catret-hybrid: per (setting, seen/unseen route) the weights of BM25, zero-shot "
    "title and attribute cosines, a trained head and category prototypes, fitted on validation.",
)
def hybrid_weights(
    context: dg.AssetExecutionContext,
    config: HybridConfig,
    storage: CatretStorage,
    evaluation_pairs: pl.DataFrame,
    products: pl.LazyFrame,
    image_embeddings: pl.DataFrame,
    title_embeddings: pl.DataFrame,
    attribute_embeddings: pl.DataFrame,
    category_embeddings: pl.DataFrame,
    fusion_models: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    ctx = _context(
        products, image_embeddings, title_embeddings, attribute_embeddings, category_embeddings
    )
    rows = []
    for data in _settings(evaluation_pairs):
        head_name = pick_head(fusion_models, data.setting, config.head_model)
        head = _load_head(storage, head_name, data.setting)
        asins = data.collection("val")
        names, seen = data.queries("val")
        z = standardise(ctx.component_scores(asins, names, head, ctx.setting_prototypes(data)))
        comps = {r: [c for c in ROUTE_COMPONENTS[r] if c in z] for r in ROUTES}
        fitted = fit_routes(
            z,
            data.relevant("val", names, asins),
            seen,
            comps,
            step=config.grid_step,
            min_route_queries=config.min_route_queries,
            shrink=config.shrink,
        )
        for route in ROUTES:
            f = fitted[route]
            rows.append(
                {
                    "setting": data.setting,
                    "route": route,
                    "head_model": head_name,
                    "n_val_queries": f.n_queries,
                    "fallback": f.fallback,
                    "val_r_precision": f.val_r_precision,
                    "val_ap": f.val_ap,
                    "shrinkage": f.shrinkage,
                    **{f"w_{c}": f.weights.get(c, 0.0) for c in COMPONENTS},
                    **{f"val_r_precision_{c}": f.single.get(c) for c in COMPONENTS},
                }
            )
            context.log.info(
                f"hybrid {data.setting}/{route}: {f.n_queries} val queries"
                f"{' (fallback to all-query weights)' if f.fallback else ''}, val R-prec "
                f"{f.val_r_precision:.4f}, weights "
                + ", ".join(f"{c}={w:.1f}" for c, w in f.weights.items() if w)
            )
    df = pl.DataFrame(rows, schema=HYBRID_WEIGHTS_SCHEMA)
    table = markdown_table(
        ["setting", "route", "head", "val queries", "val R-prec", "shrinkage", *COMPONENTS],
        [
            [
                r["setting"],
                r["route"] + (" (fallback)" if r["fallback"] else ""),
                r["head_model"] or "-",
                r["n_val_queries"],
                "-"
                if r["val_r_precision"] != r["val_r_precision"]
                else f"{r['val_r_precision']:.4f}",
                f"{r['shrinkage']:.2f}",
                *(f"{r[f'w_{c}']:.2f}" for c in COMPONENTS),
            ]
            for r in df.iter_rows(named=True)
        ],
    )
    return dg.Output(df, metadata={"weights": dg.MetadataValue.md(table)})


def _route_weights(weights: pl.DataFrame, setting: str) -> tuple[dict, str | None]:
    rows = weights.filter(pl.col("setting") == setting)
    out = {}
    head = None
    for r in rows.iter_rows(named=True):
        out[r["route"]] = {c: float(r[f"w_{c}"] or 0.0) for c in COMPONENTS}
        head = head or r["head_model"]
    return out, head


@dg.asset(
    group_name=GROUP,
    kinds={"numpy", "polars"},
    description="catret-hybrid's ranked test products per (setting, query), depth max(10, R), "
    "scored exactly over the setting's test collection with the hybrid_weights of the query's "
    "route.",
)
def hybrid_runs(
    context: dg.AssetExecutionContext,
    storage: CatretStorage,
    hybrid_weights: pl.DataFrame,
    evaluation_pairs: pl.DataFrame,
    products: pl.LazyFrame,
    image_embeddings: pl.DataFrame,
    title_embeddings: pl.DataFrame,
    attribute_embeddings: pl.DataFrame,
    category_embeddings: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    ctx = _context(
        products, image_embeddings, title_embeddings, attribute_embeddings, category_embeddings
    )
    out = RunRows()
    for data in _settings(evaluation_pairs):
        weights, head_name = _route_weights(hybrid_weights, data.setting)
        if not weights:
            context.log.warning(f"hybrid: no weights for setting {data.setting}; no rankings")
            continue
        head = _load_head(storage, head_name, data.setting)
        asins = data.collection("test")
        names, seen = data.queries("test")
        if not names or not asins:
            continue
        z = standardise(ctx.component_scores(asins, names, head, ctx.setting_prototypes(data)))
        r = data.relevant("test", names, asins).sum(axis=1)
        depth = np.minimum(np.maximum(r, MIN_DEPTH), len(asins))
        ranked = rank_routed(z, seen, weights, depth)
        for name, (cols, scores) in zip(names, ranked, strict=True):
            out.add(
                HYBRID_MODEL, data.setting, name, [asins[j] for j in cols], scores, HYBRID_SEARCH
            )
    df = out.frame()
    return dg.Output(
        df, metadata={"n_queries": dg.MetadataValue.int(df.select("setting", "query").n_unique())}
    )


ASSETS = [hybrid_weights, hybrid_runs]
CHECKS: list = []
