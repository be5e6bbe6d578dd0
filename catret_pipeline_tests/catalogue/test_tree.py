"""Category tree: identity by full path, counts, and the structural checks (passing and failing)."""

import hashlib

import polars as pl
import pytest

from catret_pipeline.catalogue.tree import (
    build_tree,
    check_counts,
    check_parents,
    check_roots,
    node_id,
)

PATHS = [
    ["Electronics", "Accessories", "Cables"],
    ["Electronics", "Accessories", "Cables"],
    ["Electronics", "Accessories"],  # ends at an internal node
    ["Fashion", "Accessories", "Belts"],
    ["Fashion", "Watches", "Watches"],  # repeated name inside one path
    ["Books"],
]


@pytest.fixture
def tree() -> pl.DataFrame:
    return build_tree(PATHS)


def node(tree, *path):
    return tree.filter(pl.col("node_id") == node_id(list(path))).row(0, named=True)


def test_node_id_definition():
    expected = hashlib.sha1(b"A\x1fB").hexdigest()[:16]
    assert node_id(["A", "B"]) == expected
    # Joining with a separator that cannot occur in names keeps ["A B"] and ["A", "B"] apart.
    assert node_id(["A B"]) != node_id(["A", "B"])
    with pytest.raises(ValueError):
        node_id([])


def test_repeated_names_are_distinct_nodes(tree):
    acc = tree.filter(pl.col("name") == "Accessories")
    assert acc.height == 2 and acc["node_id"].n_unique() == 2
    watches = tree.filter(pl.col("name") == "Watches").sort("depth")
    assert watches["depth"].to_list() == [2, 3]
    assert watches["parent_id"][1] == watches["node_id"][0]


def test_rows_and_counts(tree):
    assert tree.height == 9
    assert tree.columns == [
        "node_id", "name", "parent_id", "depth", "path", "n_direct", "n_subtree", "is_leaf",
    ]  # fmt: skip
    e = node(tree, "Electronics")
    assert (e["depth"], e["parent_id"], e["n_direct"], e["n_subtree"], e["is_leaf"]) == (
        1,
        None,
        0,
        3,
        False,
    )
    a = node(tree, "Electronics", "Accessories")
    assert (a["n_direct"], a["n_subtree"], a["is_leaf"]) == (1, 3, False)
    c = node(tree, "Electronics", "Accessories", "Cables")
    assert (c["depth"], c["n_direct"], c["n_subtree"], c["is_leaf"]) == (3, 2, 2, True)
    b = node(tree, "Books")
    assert (b["n_direct"], b["n_subtree"], b["is_leaf"]) == (1, 1, True)
    assert tree.filter(pl.col("depth") == 1)["n_subtree"].sum() == len(PATHS)


def test_tree_is_order_independent(tree):
    assert build_tree(reversed(PATHS)).equals(tree)


def test_checks_pass_on_a_built_tree(tree):
    assert check_roots(tree) == []
    assert check_parents(tree) == []
    assert check_counts(tree, len(PATHS)) == []


def test_checks_fail_on_broken_trees(tree):
    # A second root with an existing name.
    dup_root = pl.concat(
        [
            tree,
            tree.filter(pl.col("name") == "Books").with_columns(node_id=pl.lit("ffffffffffffffff")),
        ]
    )
    assert check_roots(dup_root)
    # A dangling parent.
    cables = node_id(["Electronics", "Accessories", "Cables"])
    dangling = tree.filter(pl.col("node_id") != node_id(["Electronics", "Accessories"]))
    problems = check_parents(dangling)
    assert any(cables in p and "missing" in p for p in problems)
    # Counts that do not add up, and a wrong product total.
    bad_counts = tree.with_columns(
        n_subtree=pl.when(pl.col("name") == "Cables").then(5).otherwise(pl.col("n_subtree"))
    )
    assert any("n_subtree" in p for p in check_counts(bad_counts))
    assert any("products" in p for p in check_counts(tree, len(PATHS) + 1))
    # A leaf flag that lies.
    assert check_counts(tree.with_columns(is_leaf=pl.lit(True)))
    # A root whose top-level name has no root row.
    assert check_roots(tree.filter(pl.col("node_id") != node_id(["Fashion"])))
