"""The offline image tower: EfficientNet-Lite0 with the packaged ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest

from catret_pipeline.encoders import clip_loading, onnx_image, openclip, packaged
from catret_pipeline.encoders.openclip import EFFNET_MODEL, TINY_MODEL, ClipSpec
from catret_pipeline.encoders.resources import OpenClipEncoder


@pytest.fixture(scope="module")
def effnet() -> OpenClipEncoder:
    enc = OpenClipEncoder(model_name=EFFNET_MODEL, precision="fp32", batch_size=8)
    enc.model()
    return enc


def test_trunk_holds_exactly_the_packaged_weights(effnet):
    import torch

    source = torch.load(packaged.EFFNET_LITE0.path(), map_location="cpu", weights_only=True)
    trunk = effnet.model().model.visual.trunk.state_dict()
    assert len(source) == len(trunk) + 2  # + the ImageNet classifier, not part of the trunk
    for (src_name, src), (name, got) in zip(source.items(), trunk.items(), strict=False):
        assert torch.equal(src, got), (src_name, name)
    assert list(source)[-2:] == ["_fc.weight", "_fc.bias"]


def test_identity_dims_and_alignment(effnet):
    model = effnet.model()
    assert effnet.model_id == "openclip:catret-effnet-lite0:efficientnet-lite0-57934424:fp32"
    assert model.dim == 1280 and model.text_dim == 1280
    assert effnet.aligned is False and model.aligned is False
    assert model.image_size == 224
    # TensorFlow-style scaling (x*255 - 127) / 128
    norm = model.preprocess.transforms[-1]
    np.testing.assert_allclose(norm.mean, [127 / 255] * 3)
    np.testing.assert_allclose(norm.std, [128 / 255] * 3)
    assert OpenClipEncoder(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k").aligned is True
    assert OpenClipEncoder(model_name=TINY_MODEL, checkpoint_path="/x.pt").aligned is True
    assert OpenClipEncoder(model_name=TINY_MODEL).aligned is False


def test_embeddings_are_the_pooled_trunk_features(effnet):
    import torch

    model = effnet.model()
    images = onnx_image.synthetic_images(4, size=256, seed=5)
    emb = effnet.encode_images(images)
    assert emb.shape == (4, 1280) and emb.dtype == np.float32
    batch = torch.stack([model.load_image(img) for img in images])
    with torch.inference_mode():
        pooled = model.model.visual.trunk(batch)
    ref = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    # pretrained features separate images (random-init ones are all ~0.99 alike)
    sims = emb @ emb.T
    assert float(sims[np.triu_indices(4, 1)].min()) < 0.95
    texts = effnet.encode_texts(["red shoes", "a lamp"])
    assert texts.shape == (2, 1280)


def test_wrong_weights_are_refused():
    import torch

    trunk = openclip.load_clip(ClipSpec(EFFNET_MODEL, precision="fp32")).model.visual.trunk
    source = {k: v.clone() for k, v in trunk.state_dict().items()}
    first = next(iter(source))
    source[first] = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="does not fit trunk tensor"):
        clip_loading.trunk_state_dict(trunk, source)


def test_int8_onnx_is_refused_for_the_conv_tower():
    with pytest.raises(ValueError, match="convolutional"):
        openclip.load_clip(ClipSpec(EFFNET_MODEL, precision="int8-onnx"))
