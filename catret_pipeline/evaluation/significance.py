"""Paired significance tests of a reference model against every other model.

Pairs are queries: for each setting and metric, the per-query scores of the reference and of the
other model over the queries both have a score for (R > 0). ``mean_diff`` = mean(reference -
other), so a positive value means the reference is better.

- Paired t-test (``scipy.stats.ttest_rel``). Degenerate cases are decided, not left to scipy's
  warnings: n < 2 -> NaN; every difference 0 -> p = 1; all differences equal and non-zero (zero
  variance, up to float noise) -> p = 0.
- Paired permutation test by sign flipping: under H0 the sign of each difference is a fair coin.
  Two-sided, statistic |mean difference|, p = (1 + #{|perm| >= |observed|}) / (1 + n_perm)
  (Phipson & Smyth's unbiased estimate, never 0). When 2^n <= n_perm all sign vectors are
  enumerated and p is exact (#{|perm| >= |observed|} / 2^n). One seeded sign matrix per setting
  is shared by every model and metric, which keeps the tests reproducible and costs one matrix
  product per setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from catret_pipeline.evaluation.metrics import PAPER_METRICS, _require

SIGNIFICANCE_COLUMNS: tuple[str, ...] = (
    "reference",
    "model",
    "setting",
    "metric",
    "n",
    "mean_diff",
    "t_pvalue",
    "perm_pvalue",
)

# Sign-matrix cells per block (float64, 32 MiB): bounds memory at n_permutations x n_queries.
_BLOCK_CELLS = 1 << 22
# Relative tolerance (of sum |d|) when comparing permuted sums with the observed one: the same
# numbers summed in another order differ in the last bits (float64: ~n * 1e-16).
_TOL = 1e-11


def paired_t_pvalue(diff: np.ndarray) -> float:
    diff = np.asarray(diff, dtype=np.float64)
    diff = diff[~np.isnan(diff)]
    if diff.size < 2:
        return float("nan")
    # Differences equal up to float noise (0.6 - 0.2 vs 0.5 - 0.1) have no variance to test.
    tol = 1e-12 * max(1.0, float(np.abs(diff).max()))
    if np.abs(diff).max() <= tol:
        return 1.0
    if np.ptp(diff) <= tol:
        return 0.0
    from scipy import stats

    # Paired t-test on (reference - other, 0): the same statistic as on the two score vectors.
    return float(stats.ttest_rel(diff, np.zeros_like(diff)).pvalue)


def _sign_blocks(n: int, n_permutations: int, seed: int):
    """Yield float64 (block, n) matrices of +-1 signs: exhaustive when 2^n <= n_permutations."""
    if n < 63 and (1 << n) <= n_permutations:
        codes = np.arange(1 << n, dtype=np.int64)
        bits = (codes[:, None] >> np.arange(n, dtype=np.int64)) & 1
        yield (1 - 2 * bits).astype(np.float64), True
        return
    rng = np.random.default_rng(seed)
    step = max(1, _BLOCK_CELLS // max(n, 1))
    done = 0
    while done < n_permutations:
        b = min(step, n_permutations - done)
        # One random bit per sign, drawn as packed bytes (much cheaper than integers()).
        raw = rng.bytes((b * n + 7) // 8)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=b * n).reshape(b, n)
        yield 1.0 - 2.0 * bits, False
        done += b


def permutation_pvalues(
    diffs: np.ndarray, n_permutations: int = 10_000, seed: int = 0
) -> np.ndarray:
    """Two-sided sign-flip p-values for each column of ``diffs`` (n_pairs x n_tests), no NaN."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim == 1:
        diffs = diffs[:, None]
    n, m = diffs.shape
    if n == 0:
        return np.full(m, np.nan)
    if np.isnan(diffs).any():
        raise ValueError("permutation_pvalues takes complete columns; drop NaN pairs first")
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    # Sums stand in for means (same n in every permutation).
    observed = np.abs(diffs.sum(axis=0))
    threshold = observed - _TOL * np.maximum(1.0, np.abs(diffs).sum(axis=0))
    count = np.zeros(m, dtype=np.int64)
    total = 0
    exact = False
    for signs, is_exact in _sign_blocks(n, n_permutations, seed):
        exact = is_exact
        stats = np.abs(signs @ diffs)
        count += (stats >= threshold).sum(axis=0)
        total += signs.shape[0]
    if exact:
        return count / total
    return (count + 1) / (total + 1)


def paired_tests(
    per_query: pl.DataFrame,
    reference: str = "clip-ita",
    metrics: Sequence[str] = PAPER_METRICS,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pl.DataFrame:
    """Reference vs every other model, per setting and metric; columns :data:`SIGNIFICANCE_COLUMNS`.

    Uses the ``all`` subset (every scored query). Settings where the reference has no rankings
    yield no rows.
    """
    _require(per_query, ("model", "setting", "query", "R", *metrics), "per_query")
    scored = per_query.filter(pl.col("R") > 0)
    rows: list[dict] = []
    for setting in sorted(scored["setting"].unique().to_list()):
        in_setting = scored.filter(pl.col("setting") == setting)
        models = sorted(m for m in in_setting["model"].unique().to_list() if m != reference)
        if reference not in in_setting["model"].unique().to_list() or not models:
            continue
        ref = in_setting.filter(pl.col("model") == reference).select("query", *metrics)
        # Group the comparisons by the exact set of paired queries, so each group shares one
        # sign matrix (normally a single group: every model is scored on every query).
        groups: dict[tuple, list[tuple[str, str, np.ndarray]]] = {}
        for model in models:
            other = in_setting.filter(pl.col("model") == model).select("query", *metrics)
            joined = ref.join(other, on="query", suffix="_other").sort("query")
            for metric in metrics:
                a, b = pl.col(metric), pl.col(f"{metric}_other")
                valid = joined.filter(
                    a.is_not_null() & b.is_not_null() & a.is_not_nan() & b.is_not_nan()
                )
                key = tuple(valid["query"].to_list())
                diff = (valid[metric] - valid[f"{metric}_other"]).to_numpy().astype(np.float64)
                groups.setdefault(key, []).append((model, metric, diff))
        for key, items in groups.items():
            n = len(key)
            if n == 0:
                perm = np.full(len(items), np.nan)
            else:
                perm = permutation_pvalues(
                    np.column_stack([d for _, _, d in items]), n_permutations, seed
                )
            for (model, metric, diff), p_perm in zip(items, perm, strict=True):
                rows.append(
                    {
                        "reference": reference,
                        "model": model,
                        "setting": setting,
                        "metric": metric,
                        "n": int(n),
                        "mean_diff": float(diff.mean()) if n else float("nan"),
                        "t_pvalue": paired_t_pvalue(diff),
                        "perm_pvalue": float(p_perm),
                    }
                )
    schema = {
        "reference": pl.String,
        "model": pl.String,
        "setting": pl.String,
        "metric": pl.String,
        "n": pl.Int64,
        "mean_diff": pl.Float64,
        "t_pvalue": pl.Float64,
        "perm_pvalue": pl.Float64,
    }
    metric_order = {m: i for i, m in enumerate(metrics)}
    out = pl.DataFrame(rows, schema=schema)
    return out.sort(
        "setting", "model", pl.col("metric").replace_strict(metric_order, return_dtype=pl.Int64)
    ).select(SIGNIFICANCE_COLUMNS)
