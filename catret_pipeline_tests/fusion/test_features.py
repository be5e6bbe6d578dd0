import numpy as np
import polars as pl
import pytest

from catret_pipeline.fusion.features import (
    MODEL_SPECS,
    CategoryVectors,
    ProductFeatureTables,
    build_pair_data,
    model_spec,
)
from catret_pipeline.vectors_math import embedding_matrix


def _vec_frame(keys, vectors, key="asin", **extra):
    arr = np.asarray(vectors, dtype=np.float32)
    return pl.DataFrame(
        {
            key: keys,
            "model_id": ["m"] * len(keys),
            "content_hash": [f"h{i}" for i in range(len(keys))],
            "embedding": pl.Series("embedding", arr, dtype=pl.Array(pl.Float32, arr.shape[1])),
            **extra,
        }
    )


@pytest.fixture()
def tables():
    image = _vec_frame(["a", "b"], [[3.0, 4.0], [1.0, 0.0]])  # "c" has no ok image
    title = _vec_frame(["a", "b", "c"], [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    attrs = _vec_frame(
        ["a", "b", "c"],
        [[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]],
        has_attributes=[True, True, False],
    )
    return ProductFeatureTables.from_frames(image, title, attrs)


def test_zero_blocks_for_missing_modalities_and_normalisation(tables):
    x, missing = tables.features(["a", "c", "zz"], ("image", "title", "attributes"))
    assert x.shape == (3, 2 + 3 + 2)
    assert np.allclose(x[0], [0.6, 0.8, 1, 0, 0, 2**-0.5, 2**-0.5])
    # c: no image row, has_attributes False -> only the title block is non-zero.
    assert np.allclose(x[1], [0, 0, 0, 0, 1, 0, 0])
    assert np.allclose(x[2], 0)  # unknown product: every block zero
    assert missing == {"image": 2, "title": 1, "attributes": 2}
    raw, _ = tables.features(["a"], ("image",), normalize=False)
    assert np.allclose(raw, [[3.0, 4.0]])


def test_modality_order_follows_the_model(tables):
    assert MODEL_SPECS["clip-i"].modalities == ("image",)
    assert MODEL_SPECS["clip-ia"].modalities == ("image", "attributes")
    assert MODEL_SPECS["clip-ita"].modalities == ("image", "title", "attributes")
    x, _ = tables.features(["b"], MODEL_SPECS["clip-ia"].modalities)
    assert np.allclose(x, [[1, 0, 1, 0]])
    assert tables.dims(MODEL_SPECS["clip-ia"].modalities) == {"image": 2, "attributes": 2}
    with pytest.raises(ValueError, match="unknown fusion model"):
        model_spec("clip-x")


def test_list_columns_and_bad_columns():
    s = pl.Series("embedding", [[1.0, 2.0], [3.0, 4.0]])  # List(Float64)
    assert embedding_matrix(s).dtype == np.float32
    assert embedding_matrix(s).shape == (2, 2)
    with pytest.raises(ValueError, match="different lengths"):
        embedding_matrix(pl.Series("embedding", [[1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="not a vector column"):
        embedding_matrix(pl.Series("embedding", [1.0, 2.0]))


def test_duplicate_keys_are_a_clear_error():
    dup = _vec_frame(["a", "a"], [[1.0], [2.0]])
    ok = _vec_frame(["a"], [[1.0]])
    with pytest.raises(ValueError, match="image_embeddings has 1 asin"):
        ProductFeatureTables.from_frames(dup, ok, ok)


def test_category_vectors_by_id_and_name():
    cats = _vec_frame(
        ["n1", "n2", "n3"], [[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]], key="node_id"
    ).with_columns(name=pl.Series(["Accessories", "Audio", "Accessories"]))
    cv = CategoryVectors.from_frame(cats)
    assert np.allclose(cv.for_ids(["n2", "n1"]), [[0, 1], [1, 0]])
    vecs, found = cv.for_names(["Audio", "Unknown", "Accessories"], normalize=False)
    assert found == ["Audio", "Accessories"]
    assert np.allclose(vecs, [[0, 2], [1, 0]])
    with pytest.raises(ValueError, match="no category_embeddings row"):
        cv.for_ids(["n9"])


def test_build_pair_data_drops_products_without_any_embedding(tables):
    cats = _vec_frame(["n1", "n2"], [[1.0, 0.0], [0.0, 1.0]], key="node_id").with_columns(
        name=pl.Series(["A", "B"])
    )
    pairs = pl.DataFrame(
        {
            "asin": ["a", "zz", "c", "b"],
            "category_id": ["n1", "n2", "n2", "n1"],
            "category_name": ["A", "B", "B", "A"],
        }
    )
    codes: dict[str, int] = {}
    data = build_pair_data(
        pairs, MODEL_SPECS["clip-i"], tables, CategoryVectors.from_frame(cats), name_codes=codes
    )
    # clip-i sees only images: "zz" and "c" have none, so they carry no signal.
    assert data.asins == ["a", "b"]
    assert data.n_dropped_empty == 2
    assert data.category_codes.tolist() == [codes["A"], codes["A"]]
    assert np.allclose(data.categories, [[1, 0], [1, 0]])
    kept = build_pair_data(
        pairs, MODEL_SPECS["clip-ita"], tables, CategoryVectors.from_frame(cats), drop_empty=False
    )
    assert len(kept) == 4 and kept.n_dropped_empty == 0
    with pytest.raises(ValueError, match="needs category_tree"):
        build_pair_data(
            pairs, MODEL_SPECS["clip-ita-tree"], tables, CategoryVectors.from_frame(cats)
        )
