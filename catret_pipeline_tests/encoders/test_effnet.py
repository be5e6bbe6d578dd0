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


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("effnet-onnx")


@pytest.fixture(scope="module")
def effnet_onnx(onnx_cache) -> OpenClipEncoder:
    """The tower in fp32 ONNX Runtime (precision onnx, what auto picks on a CPU)."""
    enc = OpenClipEncoder(
        model_name=EFFNET_MODEL,
        device="cpu",
        precision="onnx",
        onnx_cache_dir=str(onnx_cache),
        batch_size=8,
    )
    enc.model()
    return enc


def test_onnx_runs_the_tower_in_onnx_runtime_at_fp32(effnet_onnx, effnet, onnx_cache):
    model = effnet_onnx.model()
    assert model.precision == "onnx" and model.image_session is not None
    assert effnet_onnx.model_id == (
        "openclip:catret-effnet-lite0:efficientnet-lite0-57934424:onnx:onnx2"
    )
    # the unquantised export, cached where the resource says
    assert model.onnx_path is not None and model.onnx_path.endswith(".fp32.onnx")
    assert [p.parent for p in onnx_cache.glob("*.onnx")] == [onnx_cache]
    assert model.int8_cosine > 0.9999
    images = onnx_image.synthetic_images(6, size=300, seed=7)
    got, want = effnet_onnx.encode_images(images), effnet.encode_images(images)
    assert got.shape == want.shape == (6, 1280)
    cos = np.sum(got * want, axis=1)
    assert cos.min() > 0.9999  # measured 1.00000: the same vectors, other kernels
    assert not np.array_equal(got, want)  # and the session really ran
    # The text tower stays torch fp32: the same text vectors as the fp32 model.
    np.testing.assert_array_equal(
        effnet_onnx.encode_texts(["red shoes"]), effnet.encode_texts(["red shoes"])
    )


def test_a_second_process_reuses_the_cached_export(effnet_onnx, onnx_cache):
    import subprocess
    import sys

    code = (
        "from catret_pipeline.encoders import onnx_image\n"
        "from catret_pipeline.encoders.resources import OpenClipEncoder\n"
        f"enc = OpenClipEncoder(model_name={EFFNET_MODEL!r}, device='cpu', precision='onnx', "
        f"onnx_cache_dir={str(onnx_cache)!r})\n"
        "m = enc.model()\n"
        "print(m.precision, onnx_image.EXPORTS, m.onnx_path)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["onnx", "0", effnet_onnx.model().onnx_path]


def test_an_explicit_fp32_is_torch_and_onnx_is_cpu_only():
    assert ClipSpec(EFFNET_MODEL, device="cpu", precision="fp32").resolved_precision() == "fp32"
    with pytest.raises(ValueError, match="CPU only"):
        ClipSpec(EFFNET_MODEL, device="cuda", precision="onnx").resolved_device()
