"""The sentence-transformers resource on the bundled offline MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from catret_pipeline.encoders.resources import TextEncoder
from catret_pipeline.encoders.text import BUNDLED_MINILM, TextModelUnavailableError


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    enc = TextEncoder(model_name_or_path=BUNDLED_MINILM, precision="fp32", batch_size=4)
    enc.model()  # load once for the module
    return enc


def test_loads_bundled_minilm_offline(text_encoder):
    model = text_encoder.model()
    assert model is text_encoder.model()
    assert model.dim == 384
    assert model.model.max_seq_length == 128
    mid = text_encoder.model_id
    assert mid.startswith("st:bundled-all-MiniLM-L6-v2@") and mid.endswith(":seq128")
    assert (
        TextEncoder(model_name_or_path=BUNDLED_MINILM, precision="fp32", max_seq_length=64).model_id
        != mid
    )


def test_similar_texts_closer_than_unrelated(text_encoder):
    emb = text_encoder.encode(
        [
            "red running shoes for men",
            "men's red jogging sneakers",
            "stainless steel kitchen knife set",
        ]
    )
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_duplicates_and_order(text_encoder):
    texts = [
        "radio antenna",
        "a much longer text about home decor and wall art",
        "radio antenna",
        "",
    ]
    seen = []
    emb = text_encoder.encode(texts, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(emb[0], emb[2])
    assert seen[-1] == (3, 3)  # three unique strings encoded
    alone = text_encoder.encode([texts[1]])
    np.testing.assert_allclose(alone[0], emb[1], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, 384)


def test_unavailable_model_names_the_fix(monkeypatch):
    import huggingface_hub.constants

    # What HF_HUB_OFFLINE=1 gives, read by huggingface_hub when it is imported.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TextModelUnavailableError, match="model_name_or_path"):
        TextEncoder(model_name_or_path="catret-test/definitely-not-cached").model()
