"""Evaluation speed: ``evaluation.metrics.evaluate`` against a plain per-query Python loop.

Run from the repository root::

    .venv/bin/python benchmarks/bench_metrics.py             # ~1 min on 2 idle cores
    .venv/bin/python benchmarks/bench_metrics.py --queries 500 --products 4000 --no-write

Synthetic but shaped like the pipeline's tables (docs/architecture.md):

* ``evaluation_pairs``: ``--products`` test products, each paired with ``--cats-per-product``
  category nodes (a leaf and its ancestors in the real tree) drawn from ``--queries`` category
  names with Zipf-like popularity, so a few queries have thousands of relevant products and
  most have a handful (R is very skewed, as in XMarket); 80% of the names also get a train pair
  (``seen``), the rest are ``unseen``;
* ``retrieval_runs``: per model and query a ranking of depth ``max(10, R)`` (what
  ``retrieval_runs`` writes), each position a relevant product with probability ``--hit-rate``
  (repeats possible, which the metrics must count once) and a random product otherwise.

Both implementations score every (model, query) and aggregate per (model, setting, subset); the
script checks that they agree (max |difference| over all metric cells) and times them in the same
run for each number of models in ``--models``. The naive reference is the loop one writes first:
rows grouped into Python dicts, each ranking sorted and scored position by position.

The table goes to stdout and to the ``metrics`` section of docs/benchmarks.md (``--no-write``).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "p_at_1",
    "p_at_5",
    "p_at_10",
    "map_at_5",
    "map_at_10",
    "map_at_5_div_k",
    "map_at_10_div_k",
    "r_precision",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=40_000, help="Test products (40000).")
    p.add_argument("--queries", type=int, default=5_000, help="Category names (5000).")
    p.add_argument("--cats-per-product", type=int, default=3, help="Nodes per product (3).")
    p.add_argument("--hit-rate", type=float, default=0.4, help="P(position is relevant) (0.4).")
    p.add_argument("--models", default="1,6", help="Models per run, comma-separated (1,6).")
    p.add_argument("--repeats", type=int, default=3, help="Timed evaluate() calls (3).")
    p.add_argument("--target-s", type=float, default=5.0, help="Target seconds (5).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


# ---- data -----------------------------------------------------------------------------------


def make_pairs(products: int, queries: int, per_product: int, rng) -> pl.DataFrame:
    weights = 1.0 / np.arange(1, queries + 1) ** 1.1
    weights /= weights.sum()
    cat = rng.choice(queries, size=(products, per_product), p=weights)
    # Every name judged at least once, so the query count is the one asked for.
    first = np.arange(min(queries, products))
    cat[first, 0] = first
    asin = np.repeat(np.arange(products), per_product)
    test = pl.DataFrame(
        {
            "asin": [f"P{i:07d}" for i in asin],
            "category_id": cat.reshape(-1).astype(np.int64),
        }
    ).unique()
    seen_ids = np.flatnonzero(rng.random(queries) < 0.8)
    train = pl.DataFrame(
        {"asin": [f"T{j:07d}" for j in seen_ids], "category_id": seen_ids.astype(np.int64)}
    )
    categories = pl.DataFrame(
        {
            "category_id": np.arange(queries, dtype=np.int64),
            "category_name": [f"category {j}" for j in range(queries)],
            "category_depth": rng.integers(1, 5, queries).astype(np.int64),
            "seen": np.isin(np.arange(queries), seen_ids),
        }
    )
    return (
        pl.concat(
            [
                test.with_columns(pl.lit("test").alias("split")),
                train.with_columns(pl.lit("train").alias("split")),
            ]
        )
        .join(categories, on="category_id")
        .with_columns(
            pl.lit("all").alias("setting"),
            ((pl.col("split") == "test") & pl.col("seen")).alias("seen_in_train"),
        )
        .drop("seen")
    )


def make_runs(pairs: pl.DataFrame, models: int, hit_rate: float, rng) -> pl.DataFrame:
    rel = (
        pairs.filter(pl.col("split") == "test")
        .select(pl.col("category_name").alias("query"), "asin")
        .unique()
        .sort("query", "asin")
    )
    grouped = rel.group_by("query", maintain_order=True).agg(pl.col("asin"))
    qnames = grouped["query"].to_list()
    r = grouped["asin"].list.len().to_numpy().astype(np.int64)
    flat = np.array(rel["asin"].to_list())
    offsets = np.concatenate([[0], np.cumsum(r)[:-1]])
    all_asins = np.unique(flat)
    depth = np.maximum(r, 10)
    frames = []
    for m in range(models):
        q = np.repeat(np.arange(len(qnames)), depth)
        rank = np.arange(q.size) - np.repeat(np.cumsum(depth) - depth, depth) + 1
        hit = rng.random(q.size) < hit_rate
        pick = offsets[q] + (rng.random(q.size) * r[q]).astype(np.int64)
        asin = np.where(hit, flat[pick], all_asins[rng.integers(0, all_asins.size, q.size)])
        frames.append(
            pl.DataFrame(
                {
                    "model": f"model{m}",
                    "setting": "all",
                    "query": np.array(qnames, dtype=object)[q],
                    "rank": rank.astype(np.int64),
                    "asin": asin,
                    "score": -rank.astype(np.float32),
                }
            )
        )
    return pl.concat(frames)


# ---- naive reference --------------------------------------------------------------------------


def naive_evaluate(runs: pl.DataFrame, pairs: pl.DataFrame) -> dict[tuple, dict]:
    """{(model, setting, subset): {'n_queries', metric...}} with per-query Python loops."""
    relevant: dict[tuple, set] = defaultdict(set)
    seen: set = set()
    for setting, asin, name, split, seen_in_train in pairs.select(
        "setting", "asin", "category_name", "split", "seen_in_train"
    ).iter_rows():
        if split == "test":
            relevant[(setting, name)].add(asin)
        if split == "train" or (split == "test" and seen_in_train):
            seen.add((setting, name))
    rankings: dict[tuple, dict] = defaultdict(dict)
    for model, setting, query, rank, asin in runs.select(
        "model", "setting", "query", "rank", "asin"
    ).iter_rows():
        rankings[(model, setting, query)][rank] = asin
    models = {(m, s) for m, s, _ in rankings}
    queries_of: dict[str, set] = defaultdict(set)
    for s, q in relevant:
        queries_of[s].add(q)
    for _, s, q in rankings:
        queries_of[s].add(q)

    sums: dict[tuple, dict] = {}
    for model, setting in models:
        for query in queries_of[setting]:
            rel = relevant.get((setting, query), set())
            big_r = len(rel)
            if big_r == 0:
                continue
            ranking = rankings.get((model, setting, query), {})
            credited: set = set()
            hits_at: list[bool] = []  # position i+1 relevant?
            for rank in range(1, max(ranking, default=0) + 1):
                asin = ranking.get(rank)
                is_hit = asin is not None and asin in rel and asin not in credited
                if is_hit:
                    credited.add(asin)
                hits_at.append(is_hit)
            values = {}
            for k in (1, 5, 10):
                values[f"p_at_{k}"] = sum(hits_at[:k]) / k
            for k in (5, 10):
                ap, hits = 0.0, 0
                for i, h in enumerate(hits_at[:k]):
                    if h:
                        hits += 1
                        ap += hits / (i + 1)
                values[f"map_at_{k}"] = ap / min(k, big_r)
                values[f"map_at_{k}_div_k"] = ap / k
            values["r_precision"] = sum(hits_at[:big_r]) / big_r
            subset = "seen" if (setting, query) in seen else "unseen"
            for sub in ("all", subset):
                acc = sums.setdefault((model, setting, sub), dict.fromkeys(METRICS, 0.0))
                acc["n_queries"] = acc.get("n_queries", 0) + 1
                for name in METRICS:
                    acc[name] += values[name]
    return {
        key: {
            "n_queries": acc["n_queries"],
            **{m: acc[m] / acc["n_queries"] for m in METRICS},
        }
        for key, acc in sums.items()
    }


def max_difference(metrics: pl.DataFrame, naive: dict[tuple, dict]) -> float:
    worst = 0.0
    for row in metrics.iter_rows(named=True):
        key = (row["model"], row["setting"], row["subset"])
        ref = naive.get(key)
        if ref is None:
            if row["n_queries"]:
                return math.inf
            continue
        if ref["n_queries"] != row["n_queries"]:
            return math.inf
        worst = max(worst, *(abs(row[m] - ref[m]) for m in METRICS))
    return worst


def _fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from catret_pipeline.evaluation.metrics import evaluate

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    pairs = make_pairs(args.products, args.queries, args.cats_per_product, rng)
    test = pairs.filter(pl.col("split") == "test")
    r_per_query = test.group_by("category_name").len()["len"]
    n_judged = r_per_query.len()
    print(
        f"{test.height:,} test pairs, {test['asin'].n_unique():,} products, {n_judged:,} judged "
        f"queries (R median {r_per_query.median():.0f}, max {r_per_query.max():,})",
        flush=True,
    )

    rows, results = [], {}
    for n_models in [int(m) for m in args.models.split(",") if m.strip()]:
        runs = make_runs(pairs, n_models, args.hit_rate, rng)
        evaluate(runs.head(1000), pairs)  # warm-up (polars thread pool, imports)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics, per_query = evaluate(runs, pairs)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive = naive_evaluate(runs, pairs)
        t_naive = time.perf_counter() - t0
        diff = max_difference(metrics, naive)
        t_fast = float(np.median(times))
        results[n_models] = (t_fast, t_naive, runs.height, per_query.height, diff)
        rows.append(
            [
                n_models,
                f"{per_query.height:,}",
                f"{runs.height:,}",
                f"{t_fast:.2f} ({min(times):.2f}-{max(times):.2f})",
                f"{t_naive:.2f}",
                f"{t_naive / t_fast:.1f}x",
                f"{per_query.height / t_fast:,.0f}",
                "yes" if t_fast <= args.target_s else "no",
                f"{diff:.1e}",
            ]
        )
        print(rows[-1], flush=True)
    load_after = os.getloadavg()

    table = markdown_table(
        [
            "models",
            "rankings scored",
            "run rows",
            f"evaluate() s (median of {args.repeats}, min-max)",
            "naive Python s",
            "speed-up",
            "rankings/s",
            f"<= {args.target_s:g} s",
            "max |diff| vs naive",
        ],
        rows,
    )
    cmd_args = [a if not Path(a).is_absolute() else os.path.relpath(a, REPO) for a in sys.argv]
    command = ".venv/bin/python " + shlex.join(cmd_args)
    facts = "\n".join(
        [
            f"- Machine: {machine()}",
            f"- Command (repository root): `{command}`",
            f"- Load average (1/5/15 min) before {_fmt_load(load_before)}, after "
            f"{_fmt_load(load_after)} on {os.cpu_count()} cores (other processes share them); "
            f"wall time {time.perf_counter() - t_start:.0f} s; polars {pl.__version__}.",
            f"- Data: {args.products:,} test products x {args.cats_per_product} category nodes "
            f"from {args.queries:,} names with Zipf-like popularity ({test.height:,} test pairs, "
            f"{n_judged:,} judged queries, R median {r_per_query.median():.0f}, max "
            f"{r_per_query.max():,}); 80% of the names seen in train. Rankings of depth "
            f"max(10, R) per (model, query), each position relevant with probability "
            f"{args.hit_rate}, repeats allowed.",
            "- Both sides compute the 8 metric columns (P@1/5/10, mAP@5/10 with min(K, R) and K "
            "normalisers, R-precision) per query and the (model, setting, subset) means; "
            "`evaluate` also builds the per-query table with subset and query depth.",
        ]
    )
    first = results[min(results)]
    last = results[max(results)]
    reading = (
        f"Reading: `evaluate` scores {n_judged:,} queries over {args.products:,} products for one "
        f"model in {first[0]:.2f} s, {first[1] / first[0]:.1f}x faster than the naive loop "
        f"({first[1]:.2f} s); "
        f"with {max(results)} models ({last[3]:,} rankings, {last[2]:,} run rows) in "
        f"{last[0]:.2f} s ({last[1] / last[0]:.1f}x). Results agree with the naive reference to "
        f"{max(r[4] for r in results.values()):.0e}. Both are far under the {args.target_s:g} s "
        "target at this size; `evaluate` works on whole columns (polars joins find the relevant "
        "hits, only those reach numpy), so its cost follows the number of run rows, and it also "
        "returns the per-query table the naive loop does not build."
    )
    body = (
        f"## Evaluation metrics: {args.queries:,} queries over {args.products:,} products\n\n"
        "Written by `benchmarks/bench_metrics.py` (see its docstring).\n\n"
        f"{facts}\n\n{table}\n\n{reading}\n"
    )
    print()
    print(body)
    if not args.no_write:
        write_section("metrics", body)
        print(f"written to {os.path.relpath(REPO / 'docs' / 'benchmarks.md')}")


if __name__ == "__main__":
    main()
