"""Error analysis on a hand-made tree."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from catret_pipeline.evaluation.errors import classify_errors, relation, summarise_errors
from catret_pipeline.evaluation.metrics import per_query_metrics, qrels_from_pairs, query_info

PATHS = [
    ("Electronics",),
    ("Electronics", "Audio"),
    ("Electronics", "Audio", "Headphones"),
    ("Electronics", "Audio", "Speakers"),
    ("Electronics", "Cameras"),
    ("Home",),
    ("Home", "Kitchen"),
    ("Home", "Audio"),  # a second node named "Audio"
]


def node_id(path: tuple[str, ...]) -> str:
    return hashlib.sha1("\x1f".join(path).encode()).hexdigest()[:16]


def tree() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "node_id": [node_id(p) for p in PATHS],
            "name": [p[-1] for p in PATHS],
            "parent_id": [node_id(p[:-1]) if len(p) > 1 else None for p in PATHS],
            "depth": [len(p) for p in PATHS],
            "path": [list(p) for p in PATHS],
        }
    )


# asin -> node path; all test products of setting "all"
PRODUCTS = {
    "hp1": ("Electronics", "Audio", "Headphones"),
    "hp2": ("Electronics", "Audio", "Headphones"),
    "au1": ("Electronics", "Audio"),
    "au2": ("Home", "Audio"),
    "sp1": ("Electronics", "Audio", "Speakers"),
    "ca1": ("Electronics", "Cameras"),
    "ki1": ("Home", "Kitchen"),
}


def pairs() -> pl.DataFrame:
    rows = [
        {
            "setting": "all",
            "asin": asin,
            "category_id": node_id(path),
            "category_name": path[-1],
            "category_depth": len(path),
            "split": "test",
            "seen_in_train": False,
        }
        for asin, path in PRODUCTS.items()
    ]
    return pl.DataFrame(rows)


def runs(rankings: dict[str, list[str]]) -> pl.DataFrame:
    rows = [
        {"model": "m", "setting": "all", "query": q, "rank": i + 1, "asin": a, "score": 0.0}
        for q, asins in rankings.items()
        for i, a in enumerate(asins)
    ]
    return pl.DataFrame(
        rows,
        schema={
            "model": pl.String,
            "setting": pl.String,
            "query": pl.String,
            "rank": pl.Int64,
            "asin": pl.String,
            "score": pl.Float64,
        },
    )


@pytest.mark.parametrize(
    ("pred", "query", "expected"),
    [
        (("E",), ("E", "A", "H"), "ancestor"),
        (("E", "A", "H"), ("E",), "descendant"),
        (("E", "A", "S"), ("E", "A", "H"), "same_tree_other"),
        (("E", "C"), ("E", "A", "H"), "same_tree_other"),
        (("H", "K"), ("E", "A"), "different_tree"),
        (("E", "A"), ("E", "A"), "same_category"),
        ((), ("E",), "unknown"),
        # same names, other root: not an ancestor
        (("H", "A"), ("E", "A", "X"), "different_tree"),
    ],
)
def test_relation(pred, query, expected):
    assert relation(pred, query) == expected


def test_classify_errors_on_hand_tree():
    r = runs(
        {
            "Headphones": ["au1", "hp1"],  # Electronics>Audio is an ancestor, depth -1
            "Speakers": ["hp1"],  # sibling branch
            "Cameras": ["ki1"],  # other tree
            "Audio": ["hp2"],  # descendant of Electronics>Audio (+1)
            "Kitchen": ["au2"],  # Home>Audio: same tree, other branch
            "Electronics": [
                "zz-unknown-asin"
            ],  # not in the pairs (and R = 0 for Electronics: skipped)
        }
    )
    # a second model: right top-1 on Headphones -> no error row; empty ranking on Cameras
    r2 = runs({"Headphones": ["hp2"], "Speakers": ["zz"]}).with_columns(pl.lit("m2").alias("model"))
    errs = classify_errors(pl.concat([r, r2]), pairs(), tree(), query_info(pairs()))
    got = {(row["model"], row["query"]): row for row in errs.iter_rows(named=True)}

    assert got[("m", "Headphones")]["relation"] == "ancestor"
    assert got[("m", "Headphones")]["depth_diff"] == -1
    assert got[("m", "Headphones")]["pred_category"] == "Audio"
    assert got[("m", "Headphones")]["top1_asin"] == "au1"
    assert got[("m", "Speakers")]["relation"] == "same_tree_other"
    assert got[("m", "Speakers")]["depth_diff"] == 0
    assert got[("m", "Cameras")]["relation"] == "different_tree"
    assert got[("m", "Audio")]["relation"] == "descendant"
    assert got[("m", "Audio")]["depth_diff"] == 1
    assert got[("m", "Audio")]["query_category_id"] == node_id(("Electronics", "Audio"))
    assert got[("m", "Kitchen")]["relation"] == "same_tree_other"
    # Electronics has no test product: not an evaluated query
    assert ("m", "Electronics") not in got
    assert ("m2", "Headphones") not in got
    assert got[("m2", "Speakers")]["relation"] == "unknown"
    assert got[("m2", "Speakers")]["pred_category"] is None
    # m2 never ran Cameras / Audio / Kitchen: empty rankings
    assert got[("m2", "Cameras")]["relation"] == "no_result"
    assert got[("m2", "Cameras")]["top1_asin"] is None
    assert set(errs.columns) >= {
        "model",
        "setting",
        "query",
        "top1_asin",
        "pred_category",
        "relation",
        "depth_diff",
    }


def test_query_name_on_several_nodes_takes_the_closest():
    # "Audio" is Electronics>Audio (au1) and Home>Audio (au2). A Kitchen product is in another
    # tree for the first reading but in the same tree for the second: the closer one wins.
    errs = classify_errors(runs({"Audio": ["ki1"]}), pairs(), tree())
    row = errs.row(0, named=True)
    assert row["relation"] == "same_tree_other"
    assert row["query_category_id"] == node_id(("Home", "Audio"))


def test_summary_shares_and_error_rate():
    r = runs({"Headphones": ["au1"], "Speakers": ["sp1"], "Cameras": ["ki1"], "Audio": ["hp1"]})
    errs = classify_errors(r, pairs(), tree())
    pq = per_query_metrics(r, qrels_from_pairs(pairs()))
    s = summarise_errors(errs, pq).row(0, named=True)
    # Kitchen is judged but was not run: an empty ranking, a "no_result" error
    assert s["n_errors"] == 4
    assert s["n_queries"] == 5
    assert s["error_rate"] == pytest.approx(0.8)
    for relation_name in ("ancestor", "different_tree", "descendant", "no_result"):
        assert s[f"share_{relation_name}"] == pytest.approx(1 / 4)
    assert s["mean_depth_diff_ancestor"] == -1
