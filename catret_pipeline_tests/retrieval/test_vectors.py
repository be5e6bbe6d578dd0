"""The model -> (product vectors, query vectors) mapping."""

import numpy as np
import polars as pl
import pytest

from catret_pipeline.retrieval.vectors import (
    CLIP_RANDOM_INIT,
    VectorTables,
    clip_baseline_name,
)
from catret_pipeline.vectors_math import embedding_matrix


def arr(rows, dim=None):
    m = np.asarray(rows, dtype=np.float32)
    return pl.Series("embedding", m).cast(pl.Array(pl.Float32, dim or m.shape[1]))


def tables():
    return VectorTables(
        title_embeddings=pl.DataFrame(
            {"asin": ["b", "a", "c"], "model_id": "t", "content_hash": "h"}
        ).with_columns(arr([[0, 1], [1, 0], [1, 1]])),
        image_embeddings=pl.DataFrame({"asin": ["a"]}).with_columns(arr([[5, 5, 5]])),
        category_embeddings=pl.DataFrame(
            {
                "node_id": ["n2", "n1", "n3"],
                "name": ["Accessories", "Accessories", "Audio"],
                "model_id": "t",
                "content_hash": "h",
            }
        ).with_columns(arr([[2, 2], [1, 1], [3, 3]])),
        category_clip_embeddings=pl.DataFrame(
            {"node_id": ["n1"], "name": ["Accessories"]}
        ).with_columns(arr([[7, 7, 7]])),
        fused_representations=pl.DataFrame(
            {
                "model": ["clip-ita", "clip-ita", "clip-ita", "clip-i"],
                "setting": ["all", "all", "general", "all"],
                "kind": ["product", "category", "product", "product"],
                "key": ["a", "Audio", "a", "a"],
            }
        ).with_columns(arr([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])),
    )


def test_models_listed_baselines_first():
    assert tables().vector_models() == ["mpnet", "clip", "clip-i", "clip-ita"]


def test_zero_shot_products_and_same_name_queries():
    t = tables()
    p = t.products("mpnet", "all")
    assert p.keys == ["a", "b", "c"]
    np.testing.assert_array_equal(p.matrix[0], [1, 0])
    q = t.queries("mpnet", "general")
    # two nodes named "Accessories": one query, the vector of the smaller node_id (n1)
    assert q.keys == ["Accessories", "Audio"]
    np.testing.assert_array_equal(q.matrix[0], [1, 1])
    # CLIP: only products with an image
    assert t.products("clip", "all").keys == ["a"]
    assert t.queries("clip", "all").dim == 3


def test_trained_models_per_setting_and_kind():
    t = tables()
    assert t.products("clip-ita", "all").keys == ["a"]
    np.testing.assert_array_equal(t.products("clip-ita", "general").matrix[0], [0, 0, 1, 0])
    assert t.queries("clip-ita", "all").keys == ["Audio"]
    assert len(t.queries("clip-ita", "general")) == 0
    assert len(t.products("clip-ita-masked", "all")) == 0


def test_restrict_and_null_rows_are_counted():
    df = pl.DataFrame(
        {"asin": ["a", "b"], "embedding": [[1.0, 2.0], None]},
        schema={"asin": pl.String, "embedding": pl.List(pl.Float32)},
    )
    p = VectorTables(title_embeddings=df).products("mpnet", "all")
    assert p.keys == ["a"] and p.n_null == 1
    assert p.restrict(["a", "zzz"]).keys == ["a"]
    assert p.restrict([]).keys == []


def test_embedding_matrix_list_and_errors():
    m = embedding_matrix(pl.Series([[1.0, 2.0], [3.0, 4.0]]))
    assert m.shape == (2, 2) and m.dtype == np.float32
    with pytest.raises(ValueError, match="different lengths"):
        embedding_matrix(pl.Series([[1.0, 2.0], [3.0]]))
    with pytest.raises(ValueError, match="null"):
        embedding_matrix(pl.Series([[1.0], None]))


def test_trained_model_named_like_a_baseline_is_refused():
    bad = VectorTables(
        fused_representations=pl.DataFrame(
            {"model": ["bm25"], "setting": ["all"], "kind": ["product"], "key": ["a"]}
        ).with_columns(arr([[1.0]]))
    )
    with pytest.raises(ValueError, match="clash"):
        bad.vector_models()


def test_clip_row_is_named_random_init_unless_the_towers_are_aligned():
    from catret_pipeline.encoders.openclip import ClipSpec

    random_tiny = ClipSpec(model_name="catret-tiny-vit").model_id
    packaged = ClipSpec(model_name="catret-effnet-lite0").model_id
    tagged = ClipSpec(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k").model_id
    assert clip_baseline_name([random_tiny]) == CLIP_RANDOM_INIT
    assert clip_baseline_name([packaged]) == CLIP_RANDOM_INIT
    assert clip_baseline_name([tagged]) == "clip"
    # a mix (a refresh half way between encoders) is not the paper's CLIP either
    assert clip_baseline_name([tagged, random_tiny]) == CLIP_RANDOM_INIT
    # the id agrees with the spec's own flag
    for spec in (
        ClipSpec(model_name="catret-tiny-vit"),
        ClipSpec(model_name="ViT-B-32", pretrained="x"),
    ):
        assert clip_baseline_name([spec.model_id]) == ("clip" if spec.aligned else CLIP_RANDOM_INIT)
