"""HNSW index: search vs exact, deep k, atomic save, load-back, recall; exact top-k ties."""

import os

import numpy as np
import polars as pl
import pytest

from catret_pipeline.retrieval.exact import exact_topk
from catret_pipeline.retrieval.hnsw_build import build_index
from catret_pipeline.retrieval.hnsw_params import HnswParams
from catret_pipeline.retrieval.hnsw_search import recall_at_k, search
from catret_pipeline.retrieval.hnsw_store import load_index, read_index_meta, save_index
from catret_pipeline.vectors_math import l2_normalize


def clustered(n=400, d=32, clusters=20, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    return (centers[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))).astype(
        np.float32
    )


def labels_for(n):
    return pl.DataFrame(
        {"row_id": np.arange(n, dtype=np.int64), "asin": [f"A{i:04d}" for i in range(n)]}
    )


def saved(tmp_path, vectors, params=None, name="idx"):
    index = build_index(vectors, None, params or HnswParams())
    bin_path, lab_path = tmp_path / f"{name}.bin", tmp_path / f"{name}.labels.parquet"
    save_index(index, bin_path, labels_for(len(vectors)), lab_path, extra={"model": "m"})
    return index, bin_path, lab_path


def assert_same_ranking(res, exact_ids, exact_scores):
    for got_ids, got_scores, ids, scores in zip(
        res.row_ids, res.scores, exact_ids, exact_scores, strict=True
    ):
        assert set(got_ids.tolist()) == set(ids.tolist())
        # hnswlib's SIMD distances and numpy's matmul round differently in the last bits.
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)


# --- exact ------------------------------------------------------------------------------


def test_exact_topk_matches_full_sort_and_breaks_ties_by_row_id():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    vecs = np.concatenate([base, base[:10]])  # rows 30..39 duplicate rows 0..9: exact ties
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    ids, scores = exact_topk(vecs, queries, 15, max_batch_bytes=4 * 40 * 2)  # 2 queries/batch
    full = queries @ vecs.T
    for q in range(7):
        expected = np.lexsort((np.arange(40), -full[q]))[:15]
        assert ids[q].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[q], full[q, expected], rtol=1e-6)
    # a duplicated row always comes right after its original, never before
    top = exact_topk(vecs, base[3:4], 2)[0][0].tolist()
    assert top == [3, 33]


def test_exact_topk_clips_k_and_rejects_nan():
    vecs = np.eye(3, dtype=np.float32)
    ids, _ = exact_topk(vecs, vecs, 10)
    assert ids.shape == (3, 3)
    assert ids[:, 0].tolist() == [0, 1, 2]
    bad = vecs.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact_topk(bad, vecs, 2)


# --- search == exact ---------------------------------------------------------------------


def test_hnsw_search_equals_exact_on_clustered_data(tmp_path):
    x = clustered()
    q = clustered(n=40, seed=1)
    _, bin_path, lab_path = saved(tmp_path, x)
    loaded = load_index(bin_path, lab_path)
    res = search(loaded, q, 10)
    assert res.method == ["hnsw"] * 40
    assert_same_ranking(res, *exact_topk(l2_normalize(x), l2_normalize(q), 10))
    # row ids and asins agree
    assert res.asins[0].tolist() == [f"A{i:04d}" for i in res.row_ids[0]]


def test_k_deeper_than_ef_raises_ef_and_then_restores_it(tmp_path):
    x = clustered()
    q = clustered(n=20, seed=2)
    _, bin_path, lab_path = saved(tmp_path, x, HnswParams(ef=5))
    loaded = load_index(bin_path, lab_path)
    assert loaded.index.ef == 5
    res = search(loaded, q, 60)
    assert all(len(r) == 60 for r in res.row_ids)
    assert res.method == ["hnsw"] * 20
    assert loaded.index.ef == 5
    # the same lists as a search run at ef = k explicitly ...
    loaded.index.set_ef(60)
    at_k = loaded.index.knn_query(l2_normalize(q), k=60)[0]
    assert [sorted(r.tolist()) for r in res.row_ids] == [sorted(r) for r in at_k.tolist()]
    # ... and (nearly) the exact lists: ef = k is enough on clustered data
    exact_ids, _ = exact_topk(l2_normalize(x), l2_normalize(q), 60)
    hits = sum(
        len(set(a.tolist()) & set(b.tolist())) for a, b in zip(res.row_ids, exact_ids, strict=True)
    )
    assert hits / (20 * 60) >= 0.98


def test_k_larger_than_collection_returns_everything_sorted(tmp_path):
    x = clustered(n=60)
    _, bin_path, lab_path = saved(tmp_path, x)
    loaded = load_index(bin_path, lab_path)
    res = search(loaded, x[:3], 1000)
    for ids, scores in zip(res.row_ids, res.scores, strict=True):
        assert sorted(ids.tolist()) == list(range(60))
        assert np.all(np.diff(scores) <= 1e-7)
    assert res.row_ids[0][0] == 0  # a stored vector finds itself first


def test_exact_fallback_when_hnsw_cannot_fill_k(tmp_path):
    x = clustered(n=50)
    _, bin_path, lab_path = saved(tmp_path, x)
    loaded = load_index(bin_path, lab_path)
    loaded.vectors()  # read while every item is still visible (get_items refuses deleted ones)
    # Hidden elements leave hnswlib fewer than n reachable items, so k = n cannot be filled.
    loaded.index.mark_deleted(7)
    res = search(loaded, x[:2], 50)
    assert res.method == ["exact", "exact"]
    assert sorted(res.row_ids[0].tolist()) == list(range(50))
    assert search(loaded, x[:2], 50, fallback=False).method == ["failed", "failed"]
    assert search(loaded, x[:2], 5).method == ["hnsw", "hnsw"]


def test_search_rejects_wrong_dimension(tmp_path):
    _, bin_path, lab_path = saved(tmp_path, clustered(n=20))
    with pytest.raises(ValueError, match="dimension"):
        search(load_index(bin_path, lab_path), np.ones((1, 5)), 3)


# --- save / load ---------------------------------------------------------------------------


def test_load_back_equals_built_index(tmp_path):
    x = clustered()
    index, bin_path, lab_path = saved(tmp_path, x, HnswParams(M=8, ef_construction=50, ef=33))
    loaded = load_index(bin_path, lab_path)
    meta = read_index_meta(lab_path)
    assert (meta["space"], meta["dim"], meta["M"], meta["ef"], meta["model"]) == (
        "ip",
        32,
        8,
        33,
        "m",
    )
    assert loaded.index.ef == 33  # not hnswlib's default of 10
    assert loaded.n == 400 and loaded.labels[5] == "A0005"
    np.testing.assert_allclose(loaded.vectors(), l2_normalize(x), atol=1e-6)
    q = clustered(n=10, seed=3)
    a = index.knn_query(l2_normalize(q), k=10)
    b = loaded.index.knn_query(l2_normalize(q), k=10)
    np.testing.assert_array_equal(a[0], b[0])
    assert load_index(bin_path, lab_path, ef=200).index.ef == 200


def test_failing_save_leaves_previous_files_intact(tmp_path):
    x = clustered(n=100)
    _, bin_path, lab_path = saved(tmp_path, x)
    before = bin_path.read_bytes()

    class DiskFullIndex:
        """A real index whose save dies half-way, as on a full disk."""

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def save_index(self, path):
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise OSError("No space left on device")

    other = build_index(clustered(n=100, seed=9))
    with pytest.raises(OSError, match="No space"):
        save_index(DiskFullIndex(other), bin_path, labels_for(100), lab_path)
    assert bin_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["idx.bin", "idx.labels.parquet"]  # no temp left
    loaded = load_index(bin_path, lab_path)
    assert search(loaded, x[:1], 1).row_ids[0].tolist() == [0]


def test_mismatched_binary_and_labels_are_detected(tmp_path):
    _, bin_a, lab_a = saved(tmp_path, clustered(n=100), name="a")
    _, bin_b, _ = saved(tmp_path, clustered(n=120), name="b")
    os.replace(bin_b, bin_a)
    with pytest.raises(ValueError, match="different builds"):
        load_index(bin_a, lab_a)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "nope.bin", lab_a)


def test_save_refuses_labels_that_do_not_match_the_index(tmp_path):
    index = build_index(clustered(n=10))
    with pytest.raises(ValueError, match="rows"):
        save_index(index, tmp_path / "x.bin", labels_for(9), tmp_path / "x.labels.parquet")
    assert not (tmp_path / "x.bin").exists()


# --- recall ---------------------------------------------------------------------------------


def test_recall_is_one_on_clustered_data_and_low_for_a_starved_graph_on_random_data():
    x = clustered()
    q = clustered(n=50, seed=4)
    assert recall_at_k(build_index(x), x, q, 10) >= 0.99

    rng = np.random.default_rng(0)
    hard = rng.normal(size=(2000, 64)).astype(np.float32)
    hard_q = rng.normal(size=(100, 64)).astype(np.float32)
    starved = build_index(hard, None, HnswParams(M=2, ef_construction=2, ef=1))
    assert recall_at_k(starved, hard, hard_q, 10) < 0.5


def test_recall_counts_duplicate_vectors_as_hits_and_uses_ids():
    x = clustered(n=100)
    dup = np.concatenate([x, x])  # every vector twice: exact ties everywhere
    ids = np.arange(200) + 1000
    index = build_index(dup, ids)
    assert recall_at_k(index, dup, x[:20], 10, ids=ids) == 1.0
