"""Splits and evaluation pairs: deterministic, order-independent, per-setting categories."""

import random

import polars as pl
import pytest

from catret_pipeline.catalogue.splits import (
    category_index,
    evaluation_pairs,
    make_pairs,
    split_products,
)
from catret_pipeline.catalogue.tree import node_id

ASINS = [f"B{i:06d}" for i in range(20_000)]


def test_split_is_deterministic_and_order_independent():
    a = split_products(ASINS, seed=0)
    shuffled = ASINS[:]
    random.Random(1).shuffle(shuffled)
    assert split_products(shuffled, seed=0) == a
    # Stable under catalogue growth: a product keeps its split when others are added.
    assert {k: a[k] for k in ASINS[:100]} == split_products(ASINS[:100], seed=0)
    other = split_products(ASINS, seed=1)
    assert sum(a[k] != other[k] for k in ASINS) > 5000


def test_split_ratios():
    s = split_products(ASINS, (0.7, 0.1, 0.2), seed=3)
    n = len(ASINS)
    frac = {k: sum(v == k for v in s.values()) / n for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.7) < 0.015
    assert abs(frac["val"] - 0.1) < 0.01
    assert abs(frac["test"] - 0.2) < 0.015
    assert set(split_products(ASINS[:500], (1.0, 0.0, 0.0)).values()) == {"train"}
    assert set(split_products(ASINS[:500], (0.0, 0.0, 1.0)).values()) == {"test"}


@pytest.mark.parametrize("bad", [(0.5, 0.5, 0.5), (0.8, 0.3, -0.1), (0.5, 0.5)])
def test_split_rejects_bad_ratios(bad):
    with pytest.raises(ValueError):
        split_products(["a"], bad)


PRODUCTS = pl.DataFrame(
    {
        "asin": [f"P{i}" for i in range(400)] + ["SHORT"],
        "category_path": [["Fashion", "Watches", "Watches", f"Leaf{i % 7}"] for i in range(400)]
        + [["Books"]],
    }
)


def test_pairs_general_and_specific():
    g = make_pairs(PRODUCTS, "general")
    assert set(g["category_name"]) == {"Fashion", "Books"}
    assert set(g["category_depth"]) == {1}
    assert g.filter(pl.col("asin") == "P0")["category_id"][0] == node_id(["Fashion"])
    s = make_pairs(PRODUCTS, "specific")
    p3 = s.filter(pl.col("asin") == "P3").row(0, named=True)
    assert p3["category_name"] == "Leaf3" and p3["category_depth"] == 4
    assert p3["category_id"] == node_id(["Fashion", "Watches", "Watches", "Leaf3"])
    assert s.filter(pl.col("asin") == "SHORT")["category_name"][0] == "Books"


def test_pairs_all_draws_every_level_reproducibly():
    a = make_pairs(PRODUCTS, "all", seed=0)
    assert set(a["category_depth"]) == {1, 2, 3, 4}
    counts = a["category_depth"].value_counts()
    assert counts["count"].min() > 60  # roughly uniform over the 4 levels
    assert a.equals(make_pairs(PRODUCTS, "all", seed=0))
    assert a.sort("asin").equals(make_pairs(PRODUCTS.reverse(), "all", seed=0).sort("asin"))
    assert not a.equals(make_pairs(PRODUCTS, "all", seed=1))
    # The two "Watches" levels are different nodes with the same name.
    w = a.filter(pl.col("category_name") == "Watches")
    assert set(w["category_depth"]) == {2, 3} and w["category_id"].n_unique() == 2
    row = a.row(0, named=True)
    path = PRODUCTS.filter(pl.col("asin") == row["asin"])["category_path"][0].to_list()
    assert row["category_id"] == node_id(path[: row["category_depth"]])


def test_category_index_bad_setting():
    with pytest.raises(ValueError, match="unknown setting"):
        category_index("a", 3, "leaf")


def test_evaluation_pairs_seen_in_train():
    products = pl.DataFrame(
        {
            "asin": ["a", "b", "c", "d"],
            "category_path": [["R", "X"], ["R", "Y"], ["R", "X"], ["S", "Z"]],
        }
    )
    splits = pl.DataFrame({"asin": ["a", "b", "c", "d"], "split": ["train", "test", "test", "val"]})
    pairs = evaluation_pairs(products, splits)
    assert pairs.columns == [
        "setting", "asin", "category_id", "category_name", "category_depth", "split", "seen_in_train",
    ]  # fmt: skip
    assert pairs.height == 12
    spec = {
        r["asin"]: r for r in pairs.filter(pl.col("setting") == "specific").iter_rows(named=True)
    }
    assert spec["a"]["seen_in_train"] and spec["c"]["seen_in_train"]
    assert not spec["b"]["seen_in_train"]  # Y only in test
    assert not spec["d"]["seen_in_train"]  # val rows carry the flag too
    gen = {r["asin"]: r for r in pairs.filter(pl.col("setting") == "general").iter_rows(named=True)}
    assert gen["b"]["seen_in_train"] and not gen["d"]["seen_in_train"]
    assert pairs["setting"].unique(maintain_order=True).to_list() == ["all", "general", "specific"]


def test_evaluation_pairs_requires_every_split():
    products = pl.DataFrame({"asin": ["a", "b"], "category_path": [["R"], ["R"]]})
    with pytest.raises(ValueError, match="no split"):
        evaluation_pairs(products, pl.DataFrame({"asin": ["a"], "split": ["train"]}))


def test_held_out_paths_go_wholly_to_test_and_are_unseen():
    from catret_pipeline.catalogue.splits import evaluation_pairs, is_held_out_path, split_catalogue

    paths = [["Root", f"Mid{i % 20 % 3}", f"Leaf{i % 20}"] for i in range(2000)]
    products = pl.DataFrame({"asin": [f"A{i:05d}" for i in range(2000)], "category_path": paths})
    plain = split_catalogue(products, seed=1, holdout_fraction=0.0)
    assert plain == split_products(products["asin"].to_list(), seed=1)

    split = split_catalogue(products, seed=1, holdout_fraction=0.3)
    held = {tuple(p) for p in paths if is_held_out_path(p, 0.3, seed=1)}
    assert 0 < len(held) < 20
    for asin, path in zip(products["asin"], paths, strict=True):
        if tuple(path) in held:
            assert split[asin] == "test"
        else:
            assert split[asin] == plain[asin]

    splits = pl.DataFrame({"asin": list(split), "split": list(split.values())})
    pairs = evaluation_pairs(products, splits, seed=1)
    specific_test = pairs.filter((pl.col("setting") == "specific") & (pl.col("split") == "test"))
    unseen = set(specific_test.filter(~pl.col("seen_in_train"))["category_name"])
    assert unseen == {p[-1] for p in held}
    with pytest.raises(ValueError):
        is_held_out_path(["a"], 1.5)


def test_validation_holds_out_paths_of_its_own():
    from catret_pipeline.catalogue.splits import (
        evaluation_pairs,
        held_out_split,
        is_held_out_path,
        split_catalogue,
    )

    paths = [["Root", f"Mid{i % 40 % 3}", f"Leaf{i % 40}"] for i in range(4000)]
    products = pl.DataFrame({"asin": [f"A{i:05d}" for i in range(4000)], "category_path": paths})
    test_only = split_catalogue(products, seed=2, holdout_fraction=0.2)
    both = split_catalogue(products, seed=2, holdout_fraction=0.2, val_holdout_fraction=0.2)
    val_held = {tuple(p) for p in paths if held_out_split(p, 0.2, 0.2, seed=2) == "val"}
    test_held = {tuple(p) for p in paths if is_held_out_path(p, 0.2, seed=2)}
    assert val_held and test_held and not val_held & test_held
    for asin, path in zip(products["asin"], paths, strict=True):
        if tuple(path) in val_held:
            assert both[asin] == "val"
        else:
            # The test hold-out and every other product's split do not move.
            assert both[asin] == test_only[asin]

    splits = pl.DataFrame({"asin": list(both), "split": list(both.values())})
    pairs = evaluation_pairs(products, splits, seed=2).filter(pl.col("setting") == "specific")
    val_unseen = pairs.filter((pl.col("split") == "val") & ~pl.col("seen_in_train"))
    assert set(val_unseen["category_name"]) == {p[-1] for p in val_held}
    assert held_out_split(["x"], 0.0, 0.0) is None
    with pytest.raises(ValueError, match="sum"):
        held_out_split(["x"], 0.7, 0.4)
