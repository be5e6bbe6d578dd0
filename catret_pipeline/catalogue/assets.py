"""Catalogue assets: the category tree (+ structural checks), product splits, evaluation pairs."""

import dagster as dg
import polars as pl

from catret_pipeline.catalogue.splits import SETTINGS, SPLITS, evaluation_pairs, split_catalogue
from catret_pipeline.catalogue.tree import build_tree, check_counts, check_parents, check_roots
from catret_pipeline.markdown import markdown_table

GROUP = "catalogue"


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="One row per category node (a path prefix) with direct and subtree counts.",
)
def category_tree(products: pl.LazyFrame) -> dg.Output[pl.DataFrame]:
    paths = products.select("category_path").collect().get_column("category_path").to_list()
    tree = build_tree(paths)
    per_depth = tree.group_by("depth").agg(pl.len().alias("nodes")).sort("depth")
    meta = {
        "nodes": dg.MetadataValue.int(tree.height),
        "roots": dg.MetadataValue.int(tree.filter(pl.col("depth") == 1).height),
        "leaves": dg.MetadataValue.int(int(tree.get_column("is_leaf").sum())),
        "max_depth": dg.MetadataValue.int(int(tree.get_column("depth").max() or 0)),
        "distinct_names": dg.MetadataValue.int(tree.get_column("name").n_unique()),
        "nodes_per_depth": dg.MetadataValue.md(
            markdown_table(["depth", "nodes"], per_depth.rows())
        ),
    }
    return dg.Output(tree, metadata=meta)


def _result(problems: list[str], ok_text: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        description=ok_text if not problems else "; ".join(problems),
        metadata={"problems": dg.MetadataValue.int(len(problems))},
    )


@dg.asset_check(asset=category_tree, blocking=True, description="One root per top-level name.")
def category_tree_roots(category_tree: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(check_roots(category_tree), "one root per distinct top-level name")


@dg.asset_check(
    asset=category_tree,
    blocking=True,
    description="Node ids unique and match their paths; every parent_id exists.",
)
def category_tree_parents(category_tree: pl.DataFrame) -> dg.AssetCheckResult:
    return _result(check_parents(category_tree), "every parent exists; ids match paths")


@dg.asset_check(
    asset=category_tree,
    blocking=True,
    description="n_subtree = n_direct + children's n_subtree; roots sum to the product count.",
    additional_ins={"products": dg.AssetIn("products")},
)
def category_tree_counts(
    category_tree: pl.DataFrame, products: pl.LazyFrame
) -> dg.AssetCheckResult:
    n_products = products.select(pl.len()).collect().item()
    return _result(check_counts(category_tree, n_products), f"counts add up to {n_products}")


class SplitConfig(dg.Config):
    """Product-level split: a uniform hash of (seed, asin) against cumulative ratios.

    ``holdout_fraction`` of the full category paths (chosen by a hash of seed + path) send all
    their products to test, so their leaf categories are unseen in training, and
    ``val_holdout_fraction`` more send theirs to validation, so that choices made on validation
    see unseen categories too; 0 and 0 give the paper's plain product-level split.
    """

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0
    holdout_fraction: float = 0.1
    val_holdout_fraction: float = 0.1


@dg.asset(
    group_name=GROUP,
    kinds={"polars"},
    description="Product-level train / val / test split (hash of seed + asin).",
)
def product_splits(config: SplitConfig, products: pl.LazyFrame) -> dg.Output[pl.DataFrame]:
    mapping = split_catalogue(
        products.select("asin", "category_path").collect(),
        (config.train, config.val, config.test),
        config.seed,
        config.holdout_fraction,
        config.val_holdout_fraction,
    )
    df = pl.DataFrame(
        {"asin": list(mapping), "split": list(mapping.values())},
        schema={"asin": pl.String, "split": pl.String},
    ).sort("asin")
    counts = {s: int((df.get_column("split") == s).sum()) for s in SPLITS}
    meta = {f"n_{s}": dg.MetadataValue.int(n) for s, n in counts.items()}
    meta["seed"] = dg.MetadataValue.int(config.seed)
    meta["holdout_fraction"] = dg.MetadataValue.float(config.holdout_fraction)
    meta["val_holdout_fraction"] = dg.MetadataValue.float(config.val_holdout_fraction)
    return dg.Output(df, metadata=meta)


class PairsConfig(dg.Config):
    """Seed of the per-product category draw in the ``all`` setting."""

    seed: int = 0


@dg.asset(
    name="evaluation_pairs",
    group_name=GROUP,
    kinds={"polars"},
    description="(setting, product, category) pairs with split and seen/unseen flag.",
    deps=[category_tree],
)
def evaluation_pairs_asset(
    config: PairsConfig, products: pl.LazyFrame, product_splits: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    prods = products.select("asin", "category_path").collect()
    pairs = evaluation_pairs(prods, product_splits, config.seed)
    rows = []
    for setting in SETTINGS:
        p = pairs.filter(pl.col("setting") == setting)
        test = p.filter(pl.col("split") == "test")
        unseen = test.filter(~pl.col("seen_in_train"))
        val = p.filter(pl.col("split") == "val")
        val_unseen = val.filter(~pl.col("seen_in_train"))
        rows.append(
            [
                setting,
                p.get_column("category_name").n_unique(),
                test.height,
                test.get_column("category_name").n_unique(),
                unseen.height,
                unseen.get_column("category_name").n_unique(),
                val.get_column("category_name").n_unique(),
                val_unseen.get_column("category_name").n_unique(),
            ]
        )
    md = markdown_table(
        [
            "setting",
            "categories",
            "test pairs",
            "test queries",
            "unseen test pairs",
            "unseen queries",
            "val queries",
            "unseen val queries",
        ],
        rows,
    )
    return dg.Output(pairs, metadata={"per_setting": dg.MetadataValue.md(md)})


ASSETS = [category_tree, product_splits, evaluation_pairs_asset]
CHECKS = [category_tree_roots, category_tree_parents, category_tree_counts]
