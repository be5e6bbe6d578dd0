"""The category tree induced by the products' root-to-leaf paths.

A node is a path prefix, not a name: "Accessories" under two roots (or "Watches" under
"Watches") are different nodes. ``node_id`` hashes the full path, so it is stable across runs
and catalogues, and a node keeps its id when products are added or removed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

import polars as pl

PATH_SEP = "\x1f"

TREE_SCHEMA = {
    "node_id": pl.String,
    "name": pl.String,
    "parent_id": pl.String,
    "depth": pl.Int64,
    "path": pl.List(pl.String),
    "n_direct": pl.Int64,
    "n_subtree": pl.Int64,
    "is_leaf": pl.Boolean,
}


def node_id(path: Sequence[str]) -> str:
    """First 16 hex digits of sha1 of the path joined by U+001F."""
    if not path:
        raise ValueError("a category path has at least one name")
    return hashlib.sha1(PATH_SEP.join(path).encode("utf-8")).hexdigest()[:16]


def build_tree(paths: Iterable[Sequence[str]]) -> pl.DataFrame:
    """One row per distinct path prefix, sorted by path; counts are over the given paths."""
    direct: Counter = Counter()
    subtree: Counter = Counter()
    for path in paths:
        t = tuple(path)
        if not t:
            raise ValueError("empty category path")
        direct[t] += 1
        for d in range(1, len(t) + 1):
            subtree[t[:d]] += 1
    has_child = {p[:-1] for p in subtree if len(p) > 1}
    nodes = sorted(subtree)
    return pl.DataFrame(
        {
            "node_id": [node_id(p) for p in nodes],
            "name": [p[-1] for p in nodes],
            "parent_id": [node_id(p[:-1]) if len(p) > 1 else None for p in nodes],
            "depth": [len(p) for p in nodes],
            "path": [list(p) for p in nodes],
            "n_direct": [direct.get(p, 0) for p in nodes],
            "n_subtree": [subtree[p] for p in nodes],
            "is_leaf": [p not in has_child for p in nodes],
        },
        schema=TREE_SCHEMA,
    )


# Structural checks: each returns a list of problems (empty = passed), capped for readability.
MAX_PROBLEMS = 20


def check_roots(tree: pl.DataFrame) -> list[str]:
    """Exactly one root per distinct top-level name, and its id is the hash of that name."""
    problems = []
    roots = tree.filter(pl.col("depth") == 1)
    names = Counter(roots.get_column("name").to_list())
    problems += [f"{n} roots named {name!r}" for name, n in names.items() if n > 1]
    tops = set(tree.get_column("path").list.first().to_list())
    problems += [f"top-level name {t!r} has no root node" for t in sorted(tops - set(names))]
    for nid, name, parent, path in roots.select("node_id", "name", "parent_id", "path").iter_rows():
        if parent is not None:
            problems.append(f"root {name!r} has parent {parent}")
        if list(path) != [name] or nid != node_id([name]):
            problems.append(f"root {name!r} has path {path} / id {nid}")
    return problems[:MAX_PROBLEMS]


def check_parents(tree: pl.DataFrame) -> list[str]:
    """Ids unique and consistent with paths; every parent_id exists and is the path's prefix."""
    problems = []
    ids = tree.get_column("node_id").to_list()
    dup = [i for i, n in Counter(ids).items() if n > 1]
    problems += [f"node_id {i} occurs more than once" for i in dup]
    known = set(ids)
    for nid, parent, depth, path in tree.select(
        "node_id", "parent_id", "depth", "path"
    ).iter_rows():
        if depth != len(path) or nid != node_id(path):
            problems.append(f"node {nid} does not match its path {path} (depth {depth})")
        if depth > 1:
            if parent is None or parent not in known:
                problems.append(f"node {nid} {path}: parent {parent} missing")
            elif parent != node_id(path[:-1]):
                problems.append(f"node {nid} {path}: parent {parent} is not its path prefix")
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems[:MAX_PROBLEMS]


def check_counts(tree: pl.DataFrame, n_products: int | None = None) -> list[str]:
    """n_subtree == n_direct + sum of children's n_subtree; is_leaf == no children;
    roots' n_subtree sums to the number of products."""
    problems = []
    child_sum = (
        tree.filter(pl.col("parent_id").is_not_null())
        .group_by("parent_id")
        .agg(pl.col("n_subtree").sum().alias("children"))
    )
    joined = tree.join(child_sum, left_on="node_id", right_on="parent_id", how="left").with_columns(
        pl.col("children").fill_null(0)
    )
    bad = joined.filter(pl.col("n_subtree") != pl.col("n_direct") + pl.col("children"))
    for nid, path, ns, nd, ch in (
        bad.select("node_id", "path", "n_subtree", "n_direct", "children")
        .head(MAX_PROBLEMS)
        .iter_rows()
    ):
        problems.append(f"node {nid} {path}: n_subtree {ns} != n_direct {nd} + children {ch}")
    has_kids = set(tree.get_column("parent_id").drop_nulls().to_list())
    for nid, is_leaf in tree.select("node_id", "is_leaf").iter_rows():
        if is_leaf == (nid in has_kids):
            problems.append(f"node {nid}: is_leaf={is_leaf} but has children={nid in has_kids}")
    if n_products is not None:
        total = int(tree.filter(pl.col("depth") == 1).get_column("n_subtree").sum() or 0)
        if total != n_products:
            problems.append(f"roots' n_subtree sum to {total}, products: {n_products}")
    return problems[:MAX_PROBLEMS]
