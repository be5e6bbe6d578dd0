"""The store without HTTP: model selection, query validation, snapshots."""

from __future__ import annotations

import polars as pl
import pytest

from catret_pipeline.serving import selection
from catret_pipeline.serving.query import MAX_K, QueryError, clean_name, parse_k
from catret_pipeline.serving.store import Store, search
from catret_pipeline.serving.tables import read_once, signature

FUSION = pl.DataFrame(
    {
        "model": ["clip-ita", "clip-ita-res", "clip-i", "clip-ita", "clip-ita-res", "clip-i"],
        "setting": ["all", "all", "all", "general", "general", "general"],
        "status": ["trained", "reused", "skipped", "trained", "trained", "trained"],
        "val_rprec_best": [0.40, 0.45, 0.90, 1.0, 1.0, None],
        "val_loss_best": [2.0, 2.1, 1.0, 0.9, 0.8, 0.1],
    }
)


def test_best_validation_r_precision_serves_skipped_and_unscored_heads_do_not():
    c = selection.choose_model(FUSION, "all")
    assert (c.model, c.reason, c.val_r_precision) == ("clip-ita-res", "validation", 0.45)
    assert c.candidates == {"clip-ita": 0.40, "clip-ita-res": 0.45}


def test_ties_go_to_the_lower_validation_loss():
    assert selection.choose_model(FUSION, "general").model == "clip-ita-res"


def test_no_trained_head_falls_back_and_override_wins():
    assert selection.choose_model(FUSION, "specific").reason == "fallback"
    assert selection.choose_model(None, "all").model == selection.FALLBACK_MODEL
    forced = selection.choose_models(FUSION, ["all", "general"], "general=clip-ita")
    assert forced["general"].model == "clip-ita" and forced["general"].reason == "override"
    assert forced["all"].reason == "validation"
    assert selection.parse_override("clip-ita") == {"*": "clip-ita"}
    with pytest.raises(ValueError):
        selection.parse_override("all=")


@pytest.mark.parametrize("raw", ["", "  ", None, "x" * 201, "a\x07b", "a\u200bb"])
def test_bad_names_are_refused(raw):
    with pytest.raises(QueryError) as exc:
        clean_name(raw)
    assert exc.value.status == 400


def test_k_bounds():
    assert parse_k(None) == 10 and parse_k("7") == 7 and parse_k(MAX_K) == MAX_K
    for bad in ("0", str(MAX_K + 1), "-3", "1.5", "abc"):
        with pytest.raises(QueryError):
            parse_k(bad)


def test_read_once_keeps_the_bytes_it_opened(fresh_dir):
    """A table replaced by rename after it was opened is still read whole, from the old file."""
    path = fresh_dir / "assets" / "products.parquet"
    before = read_once(path)
    sig = signature(fresh_dir)
    pl.DataFrame({"asin": ["X"], "title": ["t"], "category_path": [["A"]]}).write_parquet(
        path.with_suffix(".tmp")
    )
    path.with_suffix(".tmp").rename(path)
    assert signature(fresh_dir) != sig
    assert read_once(path).height == 1 and before.height == 48


def test_a_request_keeps_its_snapshot_across_a_swap(fresh_dir):
    from catret_pipeline_tests.serving.tiny import write_catalogue

    store = Store(fresh_dir, interval=0, settle=0)
    held = store.snapshot  # what an in-flight request holds
    write_catalogue(fresh_dir, title_suffix=" new")
    assert store.check()
    assert not search(held, "Boots", 3).hits[0].title.endswith(" new")
    assert store.search("Boots", 3).hits[0].title.endswith(" new")


def test_unknown_setting(store):
    with pytest.raises(QueryError, match="unknown setting"):
        store.search("Boots", 3, "nope")
