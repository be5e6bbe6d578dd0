"""The whole-catalogue serving index without Dagster: build, keep, update in place, rebuild on a
model change, its recall check, and when the server may use the saved graph."""

from __future__ import annotations

import numpy as np
import pytest

from catret_pipeline.delivery import serving_index as si
from catret_pipeline.delivery.rankings import unit_catalogue
from catret_pipeline.retrieval.hnsw_params import HnswParams, UpdatePolicy
from catret_pipeline.serving.index import SavedIndex, build_product_index

RECALL = si.RecallSettings(bound=0.95, sample_queries=50, seed=0, ef_max=400)


def _catalogue(n: int = 300, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    asins = [f"P{i:04d}" for i in rng.permutation(n)]
    return asins, rng.normal(size=(n, dim)).astype(np.float32)


def _refresh(root, model, labels, unit):
    cats = unit[:5] + 0.01
    return si.refresh_serving_index(
        root, "all", model, labels, unit, cats, HnswParams(), UpdatePolicy(), RECALL
    )


def test_build_keep_update_and_rebuild_on_model_change(tmp_path):
    asins, vecs = _catalogue()
    labels, unit = unit_catalogue(asins, vecs)
    first = _refresh(tmp_path, "m1", labels, unit)
    assert first["action"] == "built" and first["n_items"] == 300
    assert first["recall_at_10"] >= RECALL.bound
    assert (tmp_path / first["index_path"]).is_file()
    assert si.check_serving_index(tmp_path, first)["problem"] is None

    assert _refresh(tmp_path, "m1", labels, unit)["action"] == "unchanged"

    moved = unit.copy()
    moved[:3] = moved[[3, 4, 5]]
    upd = _refresh(tmp_path, "m1", labels, moved)
    assert (upd["action"], upd["n_changed"], upd["n_added"]) == ("updated", 3, 0)

    # The same vectors under another model's name: another space, so rebuilt, not kept.
    other = _refresh(tmp_path, "m2", labels, moved)
    assert other["action"] == "built" and "force" in other["reason"]
    assert si.check_serving_index(tmp_path, other)["problem"] is None


def test_the_check_names_a_table_row_that_is_not_its_files(tmp_path):
    labels, unit = unit_catalogue(*_catalogue())
    row = _refresh(tmp_path, "m1", labels, unit)
    assert "items" in si.check_serving_index(tmp_path, row | {"n_items": 299})["problem"]
    assert "recall" in si.check_serving_index(tmp_path, row | {"recall_bound": 1.01})["problem"]


def test_no_products_builds_nothing(tmp_path):
    row = _refresh(tmp_path, "m1", np.array([], dtype=object), np.zeros((0, 4), np.float32))
    assert row["index_path"] is None and row["reason"] == "no product vectors"


@pytest.mark.parametrize(
    ("model", "change", "source"),
    [
        ("m1", False, "serving_indexes"),
        ("m2", False, "built"),  # the table serves another model now
        ("m1", True, "built"),  # vectors moved since the index was saved
    ],
)
def test_the_server_uses_the_saved_graph_only_when_it_is_this_catalogue(
    tmp_path, model, change, source
):
    asins, vecs = _catalogue()
    row = _refresh(tmp_path, "m1", *unit_catalogue(asins, vecs))
    saved = SavedIndex(model, tmp_path / row["index_path"], tmp_path / row["labels_path"])
    if change:
        vecs = vecs.copy()
        vecs[7] = -vecs[7]
    index = build_product_index(asins, vecs, model, saved, method="hnsw")
    assert (index.method, index.source) == ("hnsw", source)
    exact = build_product_index(asins, vecs, model, saved, method="exact")
    assert exact.source == "exact"
    q = vecs[11] + 0.05
    got, _ = index.search(q, 10)
    want, _ = exact.search(q, 10)
    assert len(set(got) & set(want)) >= 9


def test_unchecked_exact_search_equals_the_checked_one():
    from catret_pipeline.retrieval.exact import exact_topk
    from catret_pipeline.vectors_math import l2_normalize

    asins, vecs = _catalogue(n=200)
    index = build_product_index(asins, vecs, method="exact")
    for q in vecs[:5] + 0.1:
        got = index.search(q, 7)
        pos, scores = exact_topk(index.vectors, l2_normalize(q[None, :]), 7)
        assert got == (index.asins[pos[0]].tolist(), scores[0].tolist())
