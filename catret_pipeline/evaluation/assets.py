"""Evaluation assets: per-query metrics, aggregates, error analysis, significance tests."""

import dagster as dg
import polars as pl

from catret_pipeline.evaluation.errors import classify_errors, summarise_errors
from catret_pipeline.evaluation.margins import baseline_margins
from catret_pipeline.evaluation.metrics import (
    METRIC_COLUMNS,
    PAPER_METRICS,
    aggregate_metrics,
    per_query_metrics,
    qrels_from_pairs,
    query_info,
)
from catret_pipeline.evaluation.significance import paired_tests
from catret_pipeline.markdown import markdown_table
from catret_pipeline.retrieval.hybrid import HYBRID_MODEL
from catret_pipeline.retrieval.vectors import BM25_MODEL, TEXT_BASELINE_NAMES

GROUP = "evaluation"
RUN_COLUMNS = ("model", "setting", "query", "rank", "asin")


class RunSelectionConfig(dg.Config):
    """Which rankings of ``retrieval_runs`` are evaluated under the plain model name."""

    primary_search: str = "exact"
    """``retrieval_runs.search`` says which path answered each list (``hnsw``, its ``exact``
    fallback, ``bm25``); one list per (model, setting, query) is the normal case and is used as
    is, whatever its path. Only when one query has lists from several paths (e.g. a run that kept
    both HNSW and exact lists for comparison) does this path keep the plain model name; each other
    path becomes an extra model ``<model>@<search>`` (a query without this path: its
    alphabetically first one)."""


class SignificanceConfig(dg.Config):
    reference_model: str = "clip-ita"
    """Model every other model is compared with."""
    n_permutations: int = 10_000
    """Sign-flip permutations (exact enumeration when 2^n_queries is smaller)."""
    seed: int = 0
    """Seed of the permutation signs."""
    metrics: list[str] = list(PAPER_METRICS)
    """Per-query metric columns to test."""


def select_runs(runs: pl.LazyFrame | pl.DataFrame, primary_search: str = "exact") -> pl.DataFrame:
    """The run columns; a query answered by several ``search`` paths is split into models."""
    lazy = runs.lazy()
    names = lazy.collect_schema().names()
    missing = [c for c in RUN_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"retrieval_runs lacks column(s) {missing}; has {names}")
    if "search" not in names:
        return lazy.select(RUN_COLUMNS).collect()
    keys = ["model", "setting", "query"]
    lazy = lazy.select(*RUN_COLUMNS, pl.col("search").cast(pl.String).fill_null(""))
    primary = (
        lazy.select(*keys, "search")
        .unique()
        .sort(*keys, pl.col("search") != primary_search, "search")
        .group_by(keys, maintain_order=True)
        .agg(pl.col("search").first().alias("primary"))
    )
    return (
        lazy.join(primary, on=keys)
        .with_columns(
            pl.when(pl.col("search") == pl.col("primary"))
            .then(pl.col("model"))
            .otherwise(pl.concat_str(pl.col("model"), pl.lit("@"), pl.col("search")))
            .alias("model")
        )
        .select(RUN_COLUMNS)
        .collect()
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def metrics_markdown(metrics: pl.DataFrame, subset: str = "all") -> str:
    """Markdown table of one subset's metrics, in % like the paper."""
    rows = metrics.filter(pl.col("subset") == subset).sort("setting", "model")
    cols = list(PAPER_METRICS)
    table = markdown_table(
        ["model", "setting", "n", *cols],
        [
            [row["model"], row["setting"], row["n_queries"], *(_pct(row[c]) for c in cols)]
            for row in rows.iter_rows(named=True)
        ],
    )
    return table + f"\n\nValues in %, subset `{subset}`; mAP@K divides by min(K, R)."


@dg.asset(
    group_name=GROUP,
    kinds={"polars", "numpy"},
    description="Every metric per (model, setting, query) with R, subset (seen/unseen) and query depth.",
)
def metrics_per_query(
    context: dg.AssetExecutionContext,
    config: RunSelectionConfig,
    retrieval_runs: pl.LazyFrame,
    evaluation_pairs: pl.DataFrame,
) -> pl.DataFrame:
    runs = select_runs(retrieval_runs, config.primary_search)
    per_query = per_query_metrics(
        runs, qrels_from_pairs(evaluation_pairs), query_info(evaluation_pairs)
    )
    no_relevant = per_query.filter(pl.col("R") == 0)
    empty = per_query.filter((pl.col("R") > 0) & (pl.col("n_retrieved") == 0))
    if no_relevant.height:
        context.log.warning(
            f"{no_relevant.height} ranking(s) have no relevant test product (R = 0) and are left "
            f"out of every mean, e.g. {no_relevant.select('model', 'setting', 'query').head(3).to_dicts()}"
        )
    context.add_output_metadata(
        {
            "n_rankings": dg.MetadataValue.int(per_query.height),
            "n_without_relevant": dg.MetadataValue.int(no_relevant.height),
            "n_empty_rankings": dg.MetadataValue.int(empty.height),
        }
    )
    return per_query


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Mean metrics per model x setting x subset (all / seen / unseen), fractions 0..1.",
)
def metrics(context: dg.AssetExecutionContext, metrics_per_query: pl.DataFrame) -> pl.DataFrame:
    table = aggregate_metrics(metrics_per_query)
    meta: dict[str, dg.MetadataValue] = {
        "metrics_all": dg.MetadataValue.md(metrics_markdown(table))
    }
    # Numeric entries are charted over time by the UI.
    for row in table.filter(pl.col("subset") == "all").iter_rows(named=True):
        if row["r_precision"] is not None:
            meta[f"r_precision/{row['model']}/{row['setting']}"] = dg.MetadataValue.float(
                float(row["r_precision"])
            )
    context.add_output_metadata(meta)
    return table


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Wrong top-1 results: predicted category vs query category in the tree.",
)
def errors(
    context: dg.AssetExecutionContext,
    config: RunSelectionConfig,
    retrieval_runs: pl.LazyFrame,
    evaluation_pairs: pl.DataFrame,
    category_tree: pl.DataFrame,
) -> pl.DataFrame:
    runs = select_runs(retrieval_runs, config.primary_search)
    table = classify_errors(runs, evaluation_pairs, category_tree, query_info(evaluation_pairs))
    counts = table.group_by("relation").agg(pl.len()).sort("relation")
    context.add_output_metadata(
        {
            f"n_{row['relation']}": dg.MetadataValue.int(int(row["len"]))
            for row in counts.iter_rows(named=True)
        }
        | {"summary": dg.MetadataValue.md(_summary_md(summarise_errors(table)))}
    )
    return table


def _summary_md(summary: pl.DataFrame) -> str:
    cols = [
        "n_errors",
        "share_ancestor",
        "share_descendant",
        "share_same_tree_other",
        "share_different_tree",
    ]
    return markdown_table(
        ["model", "setting", *cols],
        [
            [row["model"], row["setting"], row["n_errors"], *(_pct(row[c]) for c in cols[1:])]
            for row in summary.iter_rows(named=True)
        ],
    )


@dg.asset(
    group_name=GROUP,
    kinds={"polars", "scipy"},
    description="Paired t-test and sign-flip permutation test of the reference model vs each other model.",
)
def significance(
    context: dg.AssetExecutionContext, config: SignificanceConfig, metrics_per_query: pl.DataFrame
) -> pl.DataFrame:
    unknown = [m for m in config.metrics if m not in METRIC_COLUMNS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_COLUMNS)}")
    models = set(metrics_per_query["model"].unique().to_list())
    if config.reference_model not in models:
        context.log.warning(
            f"reference model {config.reference_model!r} has no rankings (models: {sorted(models)}); "
            "the significance table is empty"
        )
    table = paired_tests(
        metrics_per_query,
        reference=config.reference_model,
        metrics=config.metrics,
        n_permutations=config.n_permutations,
        seed=config.seed,
    )
    context.add_output_metadata(
        {
            "reference": dg.MetadataValue.text(config.reference_model),
            "n_tests": dg.MetadataValue.int(table.height),
            "n_perm_p_below_0_05": dg.MetadataValue.int(
                table.filter(pl.col("perm_pvalue") < 0.05).height
            ),
        }
    )
    return table


class MarginConfig(dg.Config):
    model: str = HYBRID_MODEL
    """The model we ship, compared with the best zero-shot baseline."""
    baselines: list[str] = [BM25_MODEL, *TEXT_BASELINE_NAMES, "clip"]
    """Zero-shot baselines; one without rankings (CLIP offline, the text baseline under the
    names of encoders not in use) is left out."""
    n_permutations: int = 10_000
    seed: int = 0


@dg.asset(
    name="baseline_margins",
    group_name=GROUP,
    kinds={"polars", "numpy"},
    description="Our model's R-precision margin over the best zero-shot baseline per setting "
    "and subset (all / seen / unseen), with permutation p-values.",
)
def baseline_margins_asset(
    context: dg.AssetExecutionContext, config: MarginConfig, metrics_per_query: pl.DataFrame
) -> pl.DataFrame:
    table = baseline_margins(
        metrics_per_query,
        config.model,
        config.baselines,
        n_permutations=config.n_permutations,
        seed=config.seed,
    )
    meta: dict = {"model": dg.MetadataValue.text(config.model)}
    for row in table.iter_rows(named=True):
        meta[f"margin/{row['setting']}/{row['subset']}"] = dg.MetadataValue.float(
            float(row["margin"])
        )
    context.add_output_metadata(meta)
    return table


@dg.asset_check(
    asset=metrics, description="Every metric is a fraction in [0, 1] and mAP@K >= its /K variant."
)
def metrics_are_fractions(metrics: pl.DataFrame) -> dg.AssetCheckResult:
    out_of_range = metrics.filter(
        pl.any_horizontal([(pl.col(c) < 0) | (pl.col(c) > 1 + 1e-9) for c in METRIC_COLUMNS])
    )
    inverted = metrics.filter(
        (pl.col("map_at_5") < pl.col("map_at_5_div_k") - 1e-12)
        | (pl.col("map_at_10") < pl.col("map_at_10_div_k") - 1e-12)
    )
    return dg.AssetCheckResult(
        passed=out_of_range.height == 0 and inverted.height == 0,
        metadata={
            "n_out_of_range": dg.MetadataValue.int(out_of_range.height),
            "n_map_below_div_k": dg.MetadataValue.int(inverted.height),
        },
    )


ASSETS: list = [metrics_per_query, metrics, errors, significance, baseline_margins_asset]
CHECKS: list = [metrics_are_fractions]
