"""Our model against the best zero-shot baseline, per setting and subset (all / seen / unseen).

The question the project has to answer on every catalogue: does the model we ship beat the
best thing a user could run without training? "Best" is decided per (setting, subset) on the
same test queries, and the margin is tested with the paired sign-flip permutation test of
``significance.py`` over those queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from catret_pipeline.evaluation.significance import paired_t_pvalue, permutation_pvalues

SUBSETS = ("all", "seen", "unseen")

MARGIN_COLUMNS = {
    "setting": pl.String,
    "subset": pl.String,
    "metric": pl.String,
    "model": pl.String,
    "n_queries": pl.Int64,
    "value": pl.Float64,
    "best_baseline": pl.String,
    "baseline_value": pl.Float64,
    "margin": pl.Float64,
    "perm_pvalue": pl.Float64,
    "t_pvalue": pl.Float64,
}


def _subset_rows(per_query: pl.DataFrame, subset: str) -> pl.DataFrame:
    scored = per_query.filter(pl.col("R") > 0)
    return scored if subset == "all" else scored.filter(pl.col("subset") == subset)


def baseline_margins(
    per_query: pl.DataFrame,
    model: str,
    baselines: Sequence[str],
    metric: str = "r_precision",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per (setting, subset) where ``model`` and a baseline were scored: the best
    baseline by mean ``metric`` over the queries both answered, the margin (model - baseline,
    a fraction) and its permutation / t-test p-values."""
    rows = []
    for setting in sorted(per_query["setting"].unique().to_list()):
        in_setting = per_query.filter(pl.col("setting") == setting)
        for subset in SUBSETS:
            part = _subset_rows(in_setting, subset)
            ours = part.filter(pl.col("model") == model).select("query", metric)
            if ours.is_empty():
                continue
            best = None
            for base in baselines:
                theirs = part.filter(pl.col("model") == base).select("query", metric)
                joined = ours.join(theirs, on="query", suffix="_base").drop_nulls().drop_nans()
                if joined.is_empty():
                    continue
                mean = float(joined[f"{metric}_base"].mean())
                if best is None or mean > best[1]:
                    best = (base, mean, joined)
            if best is None:
                continue
            base, base_mean, joined = best
            diff = (joined[metric] - joined[f"{metric}_base"]).to_numpy().astype(np.float64)
            rows.append(
                {
                    "setting": setting,
                    "subset": subset,
                    "metric": metric,
                    "model": model,
                    "n_queries": int(diff.size),
                    "value": float(joined[metric].mean()),
                    "best_baseline": base,
                    "baseline_value": base_mean,
                    "margin": float(diff.mean()),
                    "perm_pvalue": float(permutation_pvalues(diff, n_permutations, seed)[0]),
                    "t_pvalue": paired_t_pvalue(diff),
                }
            )
    return pl.DataFrame(rows, schema=MARGIN_COLUMNS)
