"""Render ``report.md``: our results in the layout of the paper's Table 1, beside the paper's.

Pure string building from the evaluation tables; plots are linked by relative path (the report
and its PNGs share one directory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from catret_pipeline.markdown import markdown_table
from catret_pipeline.reporting.paper import (
    BASELINES,
    METRIC_NAMES,
    METRICS,
    SETTING_NAMES,
    SETTINGS,
    display_name,
    model_sort_key,
    paper_table1,
)

REFERENCE = "clip-ita"
#: Our variants of CLIP-ITA, each compared in the report with the paper's models.
VARIANTS = ("clip-ita-masked", "clip-ita-tree", "clip-ita-res")
ABLATION = "clip-i"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def _pvalue(p: float | None) -> str:
    if p is None or p != p:
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _stars(p: float | None) -> str:
    if p is None or p != p:
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def _settings(*frames: pl.DataFrame) -> list[str]:
    present: set[str] = set()
    for df in frames:
        if df.height and "setting" in df.columns:
            present |= set(df["setting"].unique().to_list())
    return [s for s in SETTINGS if s in present] + sorted(present - set(SETTINGS))


def _models(*frames: pl.DataFrame) -> list[str]:
    present: set[str] = set()
    for df in frames:
        if df.height and "model" in df.columns:
            present |= set(df["model"].unique().to_list())
    return sorted(present, key=model_sort_key)


def _lookup(
    table: pl.DataFrame, scale: float = 100.0
) -> dict[tuple[str, str], dict[str, float | None]]:
    """(model, setting) -> metric -> value (scaled) for subset ``all`` (or tables without subset)."""
    if "subset" in table.columns:
        table = table.filter(pl.col("subset") == "all")
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    for row in table.iter_rows(named=True):
        out[(row["model"], row["setting"])] = {
            m: None if row.get(m) is None else scale * float(row[m]) for m in METRICS
        }
    return out


def paper_layout_table(
    values: Mapping[tuple[str, str], Mapping[str, float | None]],
    models: Sequence[str],
    settings: Sequence[str],
) -> str:
    """Rows = models, one column per setting holding ``P@1 / P@5 / P@10 / mAP@5 / mAP@10 / R-prec``."""
    header = ["model"] + [SETTING_NAMES.get(s, s) for s in settings]
    rows = []
    for model in models:
        cells = [display_name(model)]
        for setting in settings:
            v = values.get((model, setting))
            cells.append("-" if v is None else " / ".join(_fmt(v.get(m)) for m in METRICS))
        rows.append(cells)
    return markdown_table(header, rows)


def _relative(ours: float, other: float) -> str:
    if other == 0:
        return "relative change undefined (the other model scores 0)"
    return f"{100 * (ours - other) / other:+.1f}% relative"


def _comparison(
    setting: str,
    model: str,
    ours: Mapping[tuple[str, str], Mapping[str, float | None]],
    significance: pl.DataFrame,
    others: Sequence[str],
) -> str:
    """One sentence on ``model``'s R-precision in ``setting`` against ``others``."""
    mine = ours.get((model, setting), {}).get("r_precision")
    name = display_name(model)
    if mine is None:
        return f"{name} has no R-precision in this setting."
    parts = []
    for other in others:
        theirs = ours.get((other, setting), {}).get("r_precision")
        if theirs is None or other == model:
            continue
        part = (
            f"{display_name(other)} {_fmt(theirs)}% ({mine - theirs:+.2f} points, "
            f"{_relative(mine, theirs)}"
        )
        p = _perm_p(significance, model, other, setting)
        if p is not None:
            part += f"; permutation p = {_pvalue(p)}"
        parts.append(part + ")")
    if not parts:
        return f"{name} reaches an R-precision of {_fmt(mine)}%; no model to compare with."
    return f"{name} reaches an R-precision of {_fmt(mine)}% against " + "; ".join(parts) + "."


def _perm_p(significance: pl.DataFrame, model: str, other: str, setting: str) -> float | None:
    """Permutation p-value of model vs other on R-precision, whichever side is the reference."""
    if not significance.height:
        return None
    rows = significance.filter(
        (pl.col("setting") == setting)
        & (pl.col("metric") == "r_precision")
        & (
            ((pl.col("reference") == model) & (pl.col("model") == other))
            | ((pl.col("reference") == other) & (pl.col("model") == model))
        )
    )
    return None if not rows.height else rows["perm_pvalue"][0]


def comparison_section(
    ours: Mapping[tuple[str, str], Mapping[str, float | None]],
    significance: pl.DataFrame,
    settings: Sequence[str],
) -> str:
    lines = []
    for setting in settings:
        sentences = []
        for model in (REFERENCE, *VARIANTS):
            if (model, setting) not in ours:
                if model == REFERENCE:
                    sentences.append(f"{display_name(model)} was not evaluated in this setting.")
                continue
            others = [ABLATION, *BASELINES] + ([REFERENCE] if model != REFERENCE else [])
            sentences.append(_comparison(setting, model, ours, significance, others))
        lines.append(f"- **{SETTING_NAMES.get(setting, setting)}**: " + " ".join(sentences))
    return "\n".join(lines)


def seen_unseen_table(metrics: pl.DataFrame, models: Sequence[str], settings: Sequence[str]) -> str:
    """R-precision (%) on seen / unseen query categories; n = number of queries."""
    header = ["model"]
    counts: dict[tuple[str, str], int] = {}
    for row in metrics.filter(pl.col("subset").is_in(["seen", "unseen"])).iter_rows(named=True):
        key = (row["setting"], row["subset"])
        counts[key] = max(counts.get(key, 0), int(row["n_queries"]))
    for setting in settings:
        for subset in ("seen", "unseen"):
            header.append(
                f"{SETTING_NAMES.get(setting, setting)}: {subset} (n={counts.get((setting, subset), 0)})"
            )
    values = {
        (r["model"], r["setting"], r["subset"]): r["r_precision"]
        for r in metrics.iter_rows(named=True)
    }
    rows = []
    for model in models:
        cells = [display_name(model)]
        for setting in settings:
            for subset in ("seen", "unseen"):
                v = values.get((model, setting, subset))
                cells.append(_fmt(None if v is None else 100 * v))
        rows.append(cells)
    return markdown_table(header, rows)


def margins_table(margins: pl.DataFrame, settings: Sequence[str]) -> str:
    """Our model against the best zero-shot baseline of each (setting, subset)."""
    if margins is None or not margins.height:
        return "_No comparison: our model or every zero-shot baseline has no rankings._"
    header = ["setting", "subset", "n", "ours", "best baseline", "margin (points)", "p_perm"]
    rows = []
    order = {s: i for i, s in enumerate(settings)}
    subset_order = {"all": 0, "seen": 1, "unseen": 2}
    ranked = sorted(
        margins.iter_rows(named=True),
        key=lambda r: (order.get(r["setting"], 99), subset_order.get(r["subset"], 9)),
    )
    for r in ranked:
        rows.append(
            [
                SETTING_NAMES.get(r["setting"], r["setting"]),
                r["subset"],
                str(r["n_queries"]),
                f"{display_name(r['model'])} {_fmt(100 * r['value'])}",
                f"{display_name(r['best_baseline'])} {_fmt(100 * r['baseline_value'])}",
                f"{100 * r['margin']:+.2f}{_stars(r['perm_pvalue'])}",
                _pvalue(r["perm_pvalue"]),
            ]
        )
    return markdown_table(header, rows)


def errors_table(
    errors: pl.DataFrame, per_query: pl.DataFrame, models: Sequence[str], settings: Sequence[str]
) -> str:
    from catret_pipeline.evaluation.errors import summarise_errors

    if not per_query.height:
        return "_No rankings._"
    summary = summarise_errors(errors, per_query)
    by_key = {(r["model"], r["setting"]): r for r in summary.iter_rows(named=True)}
    header = [
        "model",
        "setting",
        "wrong top-1 (% of queries)",
        "ancestor %",
        "descendant %",
        "same tree, other branch %",
        "different tree %",
        "other %",
        "mean depth diff (ancestor / descendant)",
    ]
    rows = []
    for setting in settings:
        for model in models:
            r = by_key.get((model, setting))
            if r is None:
                continue
            if not r["n_errors"]:
                rows.append(
                    [
                        display_name(model),
                        SETTING_NAMES.get(setting, setting),
                        f"0 of {r['n_queries']}",
                    ]
                    + ["-"] * 6
                )
                continue
            other = sum((r[f"share_{k}"] or 0.0) for k in ("same_category", "unknown", "no_result"))
            rows.append(
                [
                    display_name(model),
                    SETTING_NAMES.get(setting, setting),
                    f"{r['n_errors']} of {r['n_queries']} ({_fmt(100 * r['error_rate'], 1)})",
                    _fmt(100 * r["share_ancestor"], 1),
                    _fmt(100 * r["share_descendant"], 1),
                    _fmt(100 * r["share_same_tree_other"], 1),
                    _fmt(100 * r["share_different_tree"], 1),
                    _fmt(100 * other, 1),
                    f"{_fmt(r['mean_depth_diff_ancestor'])} / {_fmt(r['mean_depth_diff_descendant'])}",
                ]
            )
    return markdown_table(header, rows)


def significance_table(significance: pl.DataFrame, settings: Sequence[str]) -> str:
    if not significance.height:
        return "_No tests: the reference model has no rankings, or no other model to compare with._"
    metrics = [m for m in METRICS if m in set(significance["metric"].to_list())]
    metrics += sorted(set(significance["metric"].to_list()) - set(metrics))
    header = ["reference vs model", "setting", "n"] + [METRIC_NAMES.get(m, m) for m in metrics]
    rows = []
    for setting in settings:
        block = significance.filter(pl.col("setting") == setting)
        for model in sorted(block["model"].unique().to_list(), key=model_sort_key):
            sub = block.filter(pl.col("model") == model)
            by_metric = {r["metric"]: r for r in sub.iter_rows(named=True)}
            reference = sub["reference"][0]
            cells = [
                f"{display_name(reference)} vs {display_name(model)}",
                SETTING_NAMES.get(setting, setting),
                str(sub["n"].max()),
            ]
            for m in metrics:
                r = by_metric.get(m)
                if r is None:
                    cells.append("-")
                    continue
                cells.append(
                    f"{100 * r['mean_diff']:+.2f} (p_perm {_pvalue(r['perm_pvalue'])}, "
                    f"p_t {_pvalue(r['t_pvalue'])}){_stars(r['perm_pvalue'])}"
                )
            rows.append(cells)
    return markdown_table(header, rows)


def rprec_vs_paper_table(
    ours: Mapping[tuple[str, str], Mapping[str, float | None]],
    paper: Mapping[tuple[str, str], Mapping[str, float | None]],
    models: Sequence[str],
    settings: Sequence[str],
) -> str:
    header = ["model"] + [f"{SETTING_NAMES.get(s, s)}: ours / paper / diff" for s in settings]
    rows = []
    for model in models:
        cells = [display_name(model)]
        for setting in settings:
            a = ours.get((model, setting), {}).get("r_precision")
            b = paper.get((model, setting), {}).get("r_precision")
            diff = "-" if a is None or b is None else f"{a - b:+.2f}"
            cells.append(f"{_fmt(a)} / {_fmt(b)} / {diff}")
        rows.append(cells)
    return markdown_table(header, rows)


def results_table(metrics: pl.DataFrame) -> str:
    """Our results (subset ``all``) in the layout of the paper's Table 1, values in %."""
    models = _models(metrics)
    if not models:
        return "_No metrics._"
    return paper_layout_table(_lookup(metrics), models, _settings(metrics) or list(SETTINGS))


def render_report(
    metrics: pl.DataFrame,
    per_query: pl.DataFrame,
    errors: pl.DataFrame,
    significance: pl.DataFrame,
    plots: Mapping[str, str] | None = None,
    title: str = "catret evaluation report",
    dataset: str = "",
    margins: pl.DataFrame | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The whole report as Markdown. ``plots``: relative file name -> caption."""
    ours = _lookup(metrics)
    paper = _lookup(paper_table1(), scale=1.0)
    settings = _settings(metrics) or list(SETTINGS)
    models = _models(metrics)
    paper_models = sorted({m for m, _ in paper}, key=model_sort_key)
    reference = significance["reference"][0] if significance.height else REFERENCE

    out = [f"# {title}", ""]
    if dataset:
        out += [f"Dataset: {dataset}", ""]
    for note in notes:
        out += [f"> {note}", ""]
    n_queries = {
        s: int(
            metrics.filter((pl.col("setting") == s) & (pl.col("subset") == "all"))[
                "n_queries"
            ].max()
            or 0
        )
        for s in settings
    }
    out += [
        "Values in %: P@1 / P@5 / P@10 / mAP@5 / mAP@10 / R-prec. mAP@K divides each query's sum of "
        "precisions by min(K, R) (the normaliser the paper's numbers fit); the /K variant is in the "
        "`metrics` table. Queries per setting: "
        + ", ".join(f"{SETTING_NAMES.get(s, s)} {n_queries[s]}" for s in settings)
        + ".",
        "",
        "## Our results",
        "",
        results_table(metrics),
        "",
        "## The paper's Table 1 (Hendriksen et al., ECIR 2022)",
        "",
        paper_layout_table(paper, paper_models, list(SETTINGS)),
        "",
        "## R-precision: ours beside the paper",
        "",
        rprec_vs_paper_table(
            ours, paper, sorted(set(models) | set(paper_models), key=model_sort_key), settings
        ),
        "",
        "## CLIP-ITA against CLIP-I and the zero-shot baselines (R-precision)",
        "",
        comparison_section(ours, significance, settings),
        "",
        "## Our model against the best zero-shot baseline (R-precision, %)",
        "",
        "Per setting and subset, the best of the zero-shot baselines on those queries, our "
        "model's margin over it in points and the two-sided sign-flip permutation p-value over "
        "the same queries (* p < 0.05, ** p < 0.01).",
        "",
        margins_table(margins, settings),
        "",
        "## Seen vs unseen categories (R-precision, %)",
        "",
        "A test category is *seen* when its name occurs among the setting's train pairs.",
        "",
        seen_unseen_table(metrics, models, settings),
        "",
        "## Error analysis (wrong top-1 results)",
        "",
        "Where the top-1 product's category lies relative to the query category: ancestor (too "
        "general), descendant (too specific), another branch of the same tree, or another tree. "
        "Depth difference = predicted depth - query depth.",
        "",
        errors_table(errors, per_query, models, settings),
        "",
        "## Significance",
        "",
        f"Mean per-query difference {display_name(reference)} - model in points, with the two-sided "
        "sign-flip permutation p-value (p_perm) and the paired t-test p-value (p_t); * p_perm < 0.05, "
        "** p_perm < 0.01; no correction for multiple comparisons.",
        "",
        significance_table(significance, settings),
        "",
    ]
    if plots:
        out += ["## Plots", ""]
        for name, caption in plots.items():
            out += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(out).rstrip() + "\n"
