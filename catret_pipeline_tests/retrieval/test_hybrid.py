"""catret-hybrid's maths on small synthetic data (no Dagster, no encoders)."""

import math

import numpy as np
import polars as pl
import pytest

from catret_pipeline.evaluation.margins import baseline_margins
from catret_pipeline.retrieval.hybrid import (
    choose_shrinkage,
    fit_routes,
    fit_weights,
    fuse,
    grid_quality,
    prototypes,
    rank_routed,
    ranking_quality,
    simplex_grid,
    zscore_rows,
)


def test_zscore_rows_standardises_and_zeroes_constant_rows():
    z = zscore_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(z[0].std(), 1, atol=1e-6)
    assert (z[1] == 0).all()


def test_simplex_grid_counts_and_sums():
    grid = simplex_grid(["a", "b", "c"], 0.25)
    assert len(grid) == math.comb(4 + 2, 2)
    assert all(abs(sum(w.values()) - 1) < 1e-9 for w in grid)
    with pytest.raises(ValueError):
        simplex_grid(["a"], 0.3)


def test_ranking_quality_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    relevant = np.array([[True, False, True, False]])
    rp, ap = ranking_quality(scores, relevant)
    assert rp[0] == pytest.approx(0.5)  # R = 2, one of the top two is relevant
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    rp, ap = ranking_quality(scores, np.zeros_like(relevant))
    assert np.isnan(rp[0]) and np.isnan(ap[0])


def _sorted_ranking_quality(scores, relevant):
    """The reference: every row sorted (stable, so ties go by column), then R-precision and AP
    read off the ranking, as ranking_quality computed them before it counted positions."""
    q, n = scores.shape
    r = relevant.sum(axis=1)
    hits = np.take_along_axis(relevant, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    cum = np.cumsum(hits, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rp = np.where(r > 0, cum[np.arange(q), np.clip(r - 1, 0, n - 1)] / r, np.nan)
        ap = np.where(r > 0, (hits * (cum / np.arange(1, n + 1))).sum(axis=1) / r, np.nan)
    return rp, ap


@pytest.mark.parametrize(
    ("queries", "items", "per_query", "nan"),
    [(300, 400, 1.5, False), (40, 400, 3, False), (4, 400, 150, False), (30, 200, 2, True)],
)
def test_ranking_quality_equals_sorting_every_row_bit_for_bit(queries, items, per_query, nan):
    # Counting each relevant item's position (few relevant per query) and sorting (many, or a
    # NaN) must give the sort's numbers exactly: the weight grid's argmax compares them.
    rng = np.random.default_rng(queries)
    scores = rng.standard_normal((queries, items)).astype(np.float32)
    scores[:, ::5] = np.round(scores[:, ::5], 1)  # ties, broken by column order
    scores[:, 7] = scores[:, 3]
    if nan:
        scores[2, 5] = np.nan
    relevant = np.zeros((queries, items), dtype=bool)
    for i in range(queries):
        relevant[i, rng.choice(items, size=rng.poisson(per_query), replace=False)] = True
    relevant[0] = False  # a query without relevant items: NaN
    got, want = ranking_quality(scores, relevant), _sorted_ranking_quality(scores, relevant)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w, equal_nan=True)


def _world(rng, n_names, per_name, head_noise_unseen, seen_fraction=0.5):
    """Products of ``n_names`` categories. 'title' is a moderately informative score for every
    name; 'head' is very informative for seen names and noise for unseen ones (a trained head
    that overfits its training categories)."""
    n = n_names * per_name
    labels = np.repeat(np.arange(n_names), per_name)
    seen = np.arange(n_names) < int(seen_fraction * n_names)
    relevant = labels[None, :] == np.arange(n_names)[:, None]
    title = relevant * 1.0 + rng.normal(0, 0.9, (n_names, n))
    head = np.where(
        seen[:, None],
        relevant * 3.0 + rng.normal(0, 1.0, (n_names, n)),
        rng.normal(0, head_noise_unseen, (n_names, n)),
    )
    z = {"title": zscore_rows(title), "head": zscore_rows(head)}
    return z, relevant, seen


def test_routed_hybrid_beats_the_plain_head_on_unseen_names_and_title_on_seen():
    rng = np.random.default_rng(0)
    z_val, rel_val, seen_val = _world(rng, 40, 15, 1.0)
    z_test, rel_test, seen_test = _world(rng, 40, 15, 1.0)
    comps = {"seen": ["title", "head"], "unseen": ["title", "head"]}
    fitted = fit_routes(z_val, rel_val, seen_val, comps, step=0.1)
    assert fitted["seen"].weights["head"] > fitted["unseen"].weights["head"]
    weights = {r: f.weights for r, f in fitted.items()}
    depth = rel_test.sum(axis=1)
    ranked = rank_routed(z_test, seen_test, weights, depth)
    hybrid = np.array(
        [rel_test[i, cols].mean() for i, (cols, _) in enumerate(ranked)]
    )  # R-precision: depth = R
    head_alone, _ = ranking_quality(z_test["head"], rel_test)
    title_alone, _ = ranking_quality(z_test["title"], rel_test)
    unseen = ~seen_test
    assert hybrid[unseen].mean() > head_alone[unseen].mean() + 0.1
    assert hybrid[seen_test].mean() > title_alone[seen_test].mean() + 0.1


def test_one_set_of_weights_without_routing_loses_on_unseen():
    """The reason for routing: one weight vector for every query has to trade the routes off."""
    rng = np.random.default_rng(1)
    z_val, rel_val, seen_val = _world(rng, 40, 15, 1.0)
    z_test, rel_test, seen_test = _world(rng, 40, 15, 1.0)
    shared, *_ = fit_weights(z_val, rel_val, np.arange(40), ["title", "head"], 0.1)
    routed = fit_routes(
        z_val, rel_val, seen_val, {r: ["title", "head"] for r in ("seen", "unseen")}
    )
    unseen = ~seen_test
    rp_shared, _ = ranking_quality(fuse(z_test, shared)[unseen], rel_test[unseen])
    rp_routed, _ = ranking_quality(fuse(z_test, routed["unseen"].weights)[unseen], rel_test[unseen])
    assert rp_routed.mean() > rp_shared.mean()


def test_small_route_falls_back_to_all_query_weights():
    rng = np.random.default_rng(2)
    z, rel, seen = _world(rng, 20, 10, 1.0, seen_fraction=0.9)  # 2 unseen names
    fitted = fit_routes(
        z, rel, seen, {r: ["title", "head"] for r in ("seen", "unseen")}, min_route_queries=5
    )
    assert fitted["unseen"].fallback and not fitted["seen"].fallback
    assert fitted["unseen"].n_queries == 2
    everyone, *_ = fit_weights(z, rel, np.arange(20), ["title", "head"], 0.1)
    assert fitted["unseen"].weights == everyone


def test_plain_argmax_without_bootstrap():
    rng = np.random.default_rng(3)
    z, rel, _ = _world(rng, 10, 10, 1.0, seen_fraction=1.0)
    w, rp, _, single, _ = fit_weights(
        z, rel, np.arange(10), ["title", "head"], 0.5, n_bootstrap=0, shrink=False
    )
    assert w in simplex_grid(["title", "head"], 0.5)
    assert rp >= max(single.values()) - 1e-9


def test_prototypes_average_nonzero_rows():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    index, m = prototypes(feats, ["a", "a", "a", "b"])
    np.testing.assert_allclose(m[index["a"]], [2**-0.5, 2**-0.5], atol=1e-6)
    np.testing.assert_allclose(m[index["b"]], [1.0, 0.0])


def _per_query(model, values, subset):
    return pl.DataFrame(
        {
            "model": model,
            "setting": "specific",
            "query": [f"q{i}" for i in range(len(values))],
            "subset": subset,
            "R": 1,
            "r_precision": values,
        }
    )


def test_baseline_margins_picks_the_best_baseline_per_subset():
    subset = ["seen"] * 8 + ["unseen"] * 8
    per_query = pl.concat(
        [
            _per_query("ours", [1.0] * 8 + [0.5] * 8, subset),
            _per_query("bm25", [0.9] * 8 + [0.0] * 8, subset),
            _per_query("mpnet", [0.2] * 8 + [0.6] * 8, subset),
        ]
    )
    table = baseline_margins(per_query, "ours", ["bm25", "mpnet", "clip"], n_permutations=1000)
    rows = {r["subset"]: r for r in table.iter_rows(named=True)}
    assert rows["seen"]["best_baseline"] == "bm25"
    assert rows["seen"]["margin"] == pytest.approx(0.1)
    assert rows["seen"]["perm_pvalue"] < 0.01  # 8 queries, all ahead: 2 / 256
    assert rows["unseen"]["best_baseline"] == "mpnet"
    assert rows["unseen"]["margin"] == pytest.approx(-0.1)
    assert rows["all"]["n_queries"] == 16


def _noisy_world(rng, n_names, per_name=10):
    """One moderately informative component and three that are noise: on a few validation
    queries the noise fits by chance."""
    n = n_names * per_name
    labels = np.repeat(np.arange(n_names), per_name)
    relevant = labels[None, :] == np.arange(n_names)[:, None]
    z = {"title": zscore_rows(relevant * 1.0 + rng.normal(0, 1.2, (n_names, n)))}
    for name in ("n1", "n2", "n3"):
        z[name] = zscore_rows(rng.normal(0, 1.0, (n_names, n)))
    return z, relevant


def test_cross_validated_shrinkage_pulls_a_chance_fit_back_to_the_informative_component():
    comps = ["title", "n1", "n2", "n3"]
    z_val, rel_val = _noisy_world(np.random.default_rng(11), 8)
    z_test, rel_test = _noisy_world(np.random.default_rng(12), 200)
    rows = np.arange(8)
    loose, *_ = fit_weights(z_val, rel_val, rows, comps, 0.1, shrink=False)
    shrunk, _, _, _, level = fit_weights(z_val, rel_val, rows, comps, 0.1)
    assert loose["title"] < 0.9  # the noise components earned weight on 8 queries
    assert level > 0 and shrunk["title"] > loose["title"]
    quality = {
        name: np.nanmean(ranking_quality(fuse(z_test, w), rel_test)[0])
        for name, w in (("loose", loose), ("shrunk", shrunk))
    }
    assert quality["shrunk"] > quality["loose"]


def test_no_shrinkage_when_fusion_beats_every_component_out_of_fold():
    rng = np.random.default_rng(4)
    z, rel, _ = _world(rng, 30, 10, 1.0, seen_fraction=1.0)
    comps = ["title", "head"]
    grid = simplex_grid(comps, 0.1)
    rp, ap = grid_quality(z, rel, np.arange(30), grid)
    level, score = choose_shrinkage(
        z, rel, np.arange(30), comps, grid, 0.5 * (rp + ap), n_bootstrap=50, seed=0
    )
    assert score.shape == (5,) and level < 1.0
    assert score[0] >= score[-1]
