"""The paper's Table 1 (Hendriksen et al., ECIR 2022), as data, in %.

Columns P@1 / P@5 / P@10 / mAP@5 / mAP@10 / R-precision; settings "all categories", "most
general", "most specific". The figures come from a third-party translation of the paper: a
reference to put our numbers beside, not a target.
"""

from __future__ import annotations

import polars as pl

#: Paper model name -> our model id.
MODEL_IDS: dict[str, str] = {
    "BM25": "bm25",
    "CLIP": "clip",
    "MPNet": "mpnet",
    "CLIP-I": "clip-i",
    "CLIP-IA": "clip-ia",
    "CLIP-ITA": "clip-ita",
}
#: Our model id -> display name (models the paper lacks included).
DISPLAY_NAMES: dict[str, str] = {v: k for k, v in MODEL_IDS.items()} | {
    "clip-ita-masked": "CLIP-ITA (masked)",
    "clip-ita-tree": "CLIP-ITA (masked + tree targets)",
    "clip-ita-res": "CLIP-ITA (masked + residual)",
    "catret-hybrid": "catret-hybrid (ours)",
    "minilm": "MiniLM (zero-shot, not the paper's MPNet)",
    "text-zero-shot": "text encoder (zero-shot)",
    "clip-random-init": "CLIP (random init: no aligned weights offline, not the paper's CLIP)",
}
#: Report order: zero-shot baselines, ablations, the paper's model, then our variants.
MODEL_ORDER: tuple[str, ...] = (
    "bm25",
    "clip",
    "clip-random-init",
    "mpnet",
    "minilm",
    "text-zero-shot",
    "clip-i",
    "clip-ia",
    "clip-ita",
    "clip-ita-masked",
    "clip-ita-tree",
    "clip-ita-res",
    "catret-hybrid",
)
BASELINES: tuple[str, ...] = ("bm25", "clip", "mpnet", "minilm", "text-zero-shot")

SETTINGS: tuple[str, ...] = ("all", "general", "specific")
SETTING_NAMES: dict[str, str] = {
    "all": "all categories",
    "general": "most general",
    "specific": "most specific",
}

METRICS: tuple[str, ...] = ("p_at_1", "p_at_5", "p_at_10", "map_at_5", "map_at_10", "r_precision")
METRIC_NAMES: dict[str, str] = {
    "p_at_1": "P@1",
    "p_at_5": "P@5",
    "p_at_10": "P@10",
    "map_at_5": "mAP@5",
    "map_at_10": "mAP@10",
    "map_at_5_div_k": "mAP@5 (/K)",
    "map_at_10_div_k": "mAP@10 (/K)",
    "r_precision": "R-prec",
}

# model -> setting -> (P@1, P@5, P@10, mAP@5, mAP@10, R-prec), in %.
TABLE1: dict[str, dict[str, tuple[float, float, float, float, float, float]]] = {
    "BM25": {
        "all": (0.01, 0.01, 0.01, 0.01, 0.01, 0.01),
        "general": (2.94, 4.71, 4.71, 8.33, 8.28, 4.48),
        "specific": (0.02, 0.02, 0.01, 0.01, 0.01, 0.01),
    },
    "CLIP": {
        "all": (0.01, 0.02, 0.02, 0.03, 0.04, 0.02),
        "general": (11.76, 12.35, 11.76, 16.12, 15.18, 9.47),
        "specific": (11.92, 9.81, 9.23, 15.12, 14.95, 8.14),
    },
    "MPNet": {
        "all": (0.01, 0.06, 0.06, 0.07, 0.09, 0.05),
        "general": (14.70, 15.80, 15.01, 18.44, 18.78, 9.35),
        "specific": (33.36, 28.56, 26.93, 37.43, 36.77, 25.29),
    },
    "CLIP-I": {
        "all": (3.30, 3.80, 3.79, 6.81, 7.25, 3.67),
        "general": (17.85, 17.14, 16.78, 19.88, 20.14, 13.02),
        "specific": (14.06, 12.11, 11.53, 18.24, 17.90, 11.22),
    },
    "CLIP-IA": {
        "all": (2.50, 3.34, 3.29, 5.95, 6.24, 3.27),
        "general": (21.42, 21.91, 22.78, 25.59, 26.29, 20.74),
        "specific": (35.30, 30.21, 29.32, 39.93, 39.27, 28.86),
    },
    "CLIP-ITA": {
        "all": (9.90, 13.27, 13.43, 20.30, 20.53, 13.42),
        "general": (35.71, 30.95, 30.95, 35.51, 34.28, 25.79),
        "specific": (45.85, 41.04, 40.02, 50.04, 49.87, 39.69),
    },
}


def paper_table1() -> pl.DataFrame:
    """Long form: ``model`` (our id), ``setting``, one column per metric, values in %."""
    rows = [
        {"model": MODEL_IDS[name], "setting": setting, **dict(zip(METRICS, values, strict=True))}
        for name, by_setting in TABLE1.items()
        for setting, values in by_setting.items()
    ]
    return pl.DataFrame(rows)


def display_name(model: str) -> str:
    if model in DISPLAY_NAMES:
        return DISPLAY_NAMES[model]
    base, sep, variant = model.partition("@")
    if sep and base in DISPLAY_NAMES:
        return f"{DISPLAY_NAMES[base]} ({variant})"
    return model


def model_sort_key(model: str) -> tuple[int, str]:
    base = model.partition("@")[0]
    position = MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER)
    return (position, model)
