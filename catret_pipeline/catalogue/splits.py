"""Product-level train/val/test split and the three evaluation settings.

Both are functions of (seed, asin) only: independent of input order, and a product keeps its
split and its drawn category when other products are added or removed, so results of runs on
growing catalogues stay comparable.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

import polars as pl

from catret_pipeline.catalogue.tree import node_id

SPLITS = ("train", "val", "test")
SETTINGS = ("all", "general", "specific")

PAIRS_SCHEMA = {
    "setting": pl.String,
    "asin": pl.String,
    "category_id": pl.String,
    "category_name": pl.String,
    "category_depth": pl.Int64,
}
EVALUATION_PAIRS_SCHEMA = {**PAIRS_SCHEMA, "split": pl.String, "seen_in_train": pl.Boolean}


def _unit_hash(*parts: object) -> int:
    """64 bits of sha256 over the parts; the salt in parts[0] keeps the streams independent."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3:
        raise ValueError(f"need three ratios (train, val, test), got {ratios!r}")
    r = tuple(float(x) for x in ratios)
    if any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be >= 0 and sum to 1, got {r}")
    return r  # type: ignore[return-value]


def split_of(asin: str, ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> str:
    train, val, _ = check_ratios(ratios)
    u = _unit_hash("split", seed, asin) / 2.0**64
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def split_products(
    asins: Iterable[str], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, str]:
    """asin -> ``train`` / ``val`` / ``test`` from a uniform hash of (seed, asin)."""
    check_ratios(ratios)
    return {a: split_of(a, ratios, seed) for a in asins}


def _holdout_u(path: Sequence[str], seed: int) -> float:
    return _unit_hash("holdout", seed, *path) / 2.0**64


def _check_fraction(name: str, fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {fraction}")


def is_held_out_path(path: Sequence[str], fraction: float, seed: int = 0) -> bool:
    """Whether a full category path is held out of training for test (all its products go to
    test).

    A product-level split alone leaves almost every test category seen in training (on the
    fashion catalogue: 2 unseen test pairs of 22,905); holding out whole paths makes the
    unseen-category subset, the point of the task, measurable.
    """
    _check_fraction("holdout fraction", fraction)
    if fraction == 0.0:
        return False
    return _holdout_u(path, seed) < fraction


def held_out_split(
    path: Sequence[str], test_fraction: float, val_fraction: float = 0.0, seed: int = 0
) -> str | None:
    """``test`` / ``val`` when the full path is held out of training for that split, else None.

    One hash draw per path: ``u < test_fraction`` goes to test (so the test hold-out does not
    depend on ``val_fraction``), the next ``val_fraction`` of the unit interval to validation.
    Validation needs unseen categories of its own: every choice made on validation (epochs,
    score-fusion weights, which model serves) must see how a model does on names it never
    trained on, without looking at test.
    """
    _check_fraction("holdout fraction", test_fraction)
    _check_fraction("val holdout fraction", val_fraction)
    if test_fraction + val_fraction > 1.0 + 1e-9:
        raise ValueError(
            f"holdout fractions sum to {test_fraction + val_fraction} > 1 "
            f"(test {test_fraction}, val {val_fraction})"
        )
    if test_fraction == 0.0 and val_fraction == 0.0:
        return None
    u = _holdout_u(path, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return None


def split_catalogue(
    products: pl.DataFrame,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    holdout_fraction: float = 0.0,
    val_holdout_fraction: float = 0.0,
) -> dict[str, str]:
    """:func:`split_products`, with the products of held-out category paths forced to test
    (``holdout_fraction`` of the paths) or to validation (``val_holdout_fraction``)."""
    check_ratios(ratios)
    out = {}
    for asin, path in products.select("asin", "category_path").iter_rows():
        held = held_out_split(path, holdout_fraction, val_holdout_fraction, seed)
        out[asin] = held or split_of(asin, ratios, seed)
    return out


def category_index(asin: str, path_len: int, setting: str, seed: int = 0) -> int:
    """Which level of the path (0 = root) the product is paired with in ``setting``."""
    if path_len < 1:
        raise ValueError(f"{asin}: empty category path")
    if setting == "general":
        return 0
    if setting == "specific":
        return path_len - 1
    if setting == "all":
        # A per-product RNG: the draw does not depend on which other products exist.
        return random.Random(_unit_hash("pair-all", seed, asin)).randrange(path_len)
    raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")


def make_pairs(products: pl.DataFrame, setting: str, seed: int = 0) -> pl.DataFrame:
    """One (product, category) pair per product; ``products`` needs ``asin`` + ``category_path``."""
    rows: dict[str, list] = {k: [] for k in PAIRS_SCHEMA}
    for asin, path in products.select("asin", "category_path").iter_rows():
        i = category_index(asin, len(path), setting, seed)
        prefix = list(path[: i + 1])
        rows["setting"].append(setting)
        rows["asin"].append(asin)
        rows["category_id"].append(node_id(prefix))
        rows["category_name"].append(prefix[-1])
        rows["category_depth"].append(i + 1)
    return pl.DataFrame(rows, schema=PAIRS_SCHEMA)


def evaluation_pairs(
    products: pl.DataFrame,
    splits: pl.DataFrame,
    seed: int = 0,
    settings: Sequence[str] = SETTINGS,
) -> pl.DataFrame:
    """Pairs for every setting with the product's split and ``seen_in_train``.

    ``seen_in_train``: the pair's category *name* occurs among the same setting's train pairs
    (names, because the query is the name); set on train and val rows too.
    """
    parts = []
    for setting in settings:
        pairs = make_pairs(products, setting, seed).join(
            splits.select("asin", "split"), on="asin", how="left", validate="1:1"
        )
        missing = pairs.filter(pl.col("split").is_null()).height
        if missing:
            raise ValueError(f"{missing} products have no split; re-materialise product_splits")
        train_names = pairs.filter(pl.col("split") == "train").get_column("category_name").unique()
        parts.append(
            pairs.with_columns(seen_in_train=pl.col("category_name").is_in(train_names.implode()))
        )
    if not parts:
        return pl.DataFrame(schema=EVALUATION_PAIRS_SCHEMA)
    return (
        pl.concat(parts)
        .select(list(EVALUATION_PAIRS_SCHEMA))
        .sort(pl.col("setting").replace_strict({s: i for i, s in enumerate(SETTINGS)}), "asin")
    )
