"""The open_clip resource: tiny offline model, context slicing, images, model ids, errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from catret_pipeline.encoders import clip_spec, openclip
from catret_pipeline.encoders.openclip import TINY_MODEL, ClipSpec, WeightsUnavailableError
from catret_pipeline.encoders.resources import OpenClipEncoder

SHORT_TEXTS = [
    "red shoe",
    "a photo of a radio antenna",
    "home decor",
    "kitchen knife set, 8 pieces",
]


@pytest.fixture(scope="module")
def clip() -> OpenClipEncoder:
    return OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", batch_size=4)


def _image(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))


def test_tiny_model_loads_offline_once(clip):
    model = clip.model()
    assert model is clip.model()  # cached per process
    assert model.dim == 128 and model.image_size == 64 and model.context_length == 77
    assert clip.model_id == "openclip:catret-tiny-vit:random-seed0:fp32"


def test_sliced_context_equals_full_context(clip):
    model = clip.model()
    tokens = model.tokenizer(SHORT_TEXTS)
    lengths = model.token_lengths(tokens)
    assert int(lengths.max()) < 20
    full = model.encode_text_tokens(tokens, context=None)
    sliced = model.encode_text_tokens(tokens, context=int(lengths.max()))
    assert full.shape == sliced.shape
    assert float((full - sliced).abs().max()) < 1e-4
    # and a context that cuts a text short really changes it, so the check above can fail
    cut = model.encode_text_tokens(tokens, context=2)
    assert float((full - cut).abs().max()) > 1e-3


def test_encode_texts_normalised_deduplicated_and_order_free(clip):
    emb = clip.encode_texts([*SHORT_TEXTS, SHORT_TEXTS[0]])
    assert emb.dtype == np.float32 and emb.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[4])
    alone = clip.encode_texts([SHORT_TEXTS[2]])
    np.testing.assert_allclose(alone[0], emb[2], atol=1e-5)  # batch-mates do not leak in


def test_long_text_truncated_like_open_clip(clip):
    long = " ".join(["word"] * 200)
    model = clip.model()
    got = clip.encode_texts([long, "short"])
    full = model.encode_text_tokens(model.tokenizer([long]), context=None)
    ref = full / full.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-5)


def test_encode_images_paths_and_pil(clip, tmp_path):
    png = tmp_path / "a.png"
    jpg = tmp_path / "b.jpg"
    _image(1).save(png)
    _image(2, size=(400, 300)).save(jpg, quality=90)
    emb = clip.encode_images([png, jpg, _image(1)])
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-5)
    assert float(emb[0] @ emb[1]) < 0.9999


def test_bad_image_reported_per_row(clip, tmp_path):
    good = tmp_path / "ok.png"
    _image(3).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    seen = []
    res = clip.encode_image_files(
        [good, bad, good, good, good], progress=lambda d, t: seen.append((d, t))
    )
    assert res.ok.tolist() == [True, False, True, True, True]
    assert set(res.errors) == {1}
    assert not res.embeddings[1].any()
    assert seen[-1] == (5, 5) and len(seen) == 2  # batch_size 4
    with pytest.raises(ValueError, match="failed to decode"):
        clip.encode_images([good, bad])


def test_parallel_decode_keeps_rows_and_errors_in_place(clip, tmp_path):
    paths = []
    for i in range(11):
        p = tmp_path / f"img{i}.jpg"
        if i in (2, 7):
            p.write_bytes(b"broken")
        else:
            _image(10 + i).save(p)
        paths.append(p)
    model = clip.model()
    one = model.encode_image_files(paths, batch_size=5, decode_workers=1)
    many = model.encode_image_files(paths, batch_size=5, decode_workers=3)
    assert set(many.errors) == {2, 7} == set(one.errors)
    assert many.ok.tolist() == one.ok.tolist()
    np.testing.assert_allclose(many.embeddings, one.embeddings, atol=1e-6)
    # Worker processes decode the same pixels: same rows, same errors, same vectors.
    procs = model.encode_image_files(paths, batch_size=5, decode_processes=2)
    assert set(procs.errors) == {2, 7} and procs.ok.tolist() == one.ok.tolist()
    assert "UnidentifiedImageError" in procs.errors[2]
    np.testing.assert_allclose(procs.embeddings, one.embeddings, atol=1e-6)
    # Workers killed between calls (OOM killer, say): the next call still gives every row.
    for worker in list(model.decoders[2].pool._processes.values()):
        worker.kill()
        worker.join()
    again = model.encode_image_files(paths, batch_size=5, decode_processes=2)
    assert set(again.errors) == {2, 7}
    np.testing.assert_allclose(again.embeddings, one.embeddings, atol=1e-6)
    # each row is its own image, not a neighbour's: distinct images give distinct vectors
    good = np.flatnonzero(many.ok)
    assert len({tuple(np.round(many.embeddings[i], 5)) for i in good}) == len(good)


def test_seeded_random_init_is_reproducible():
    spec = ClipSpec(model_name=TINY_MODEL, precision="fp32", seed=7)
    first = openclip.load_clip(spec).encode_texts(["same text"])
    for key in [k for k in openclip._MODEL_CACHE if k[0] == spec]:
        del openclip._MODEL_CACHE[key]  # force a fresh build from the seed
    second = openclip.load_clip(spec).encode_texts(["same text"])
    np.testing.assert_array_equal(first, second)
    other = openclip.load_clip(
        ClipSpec(model_name=TINY_MODEL, precision="fp32", seed=8)
    ).encode_texts(["same text"])
    assert float(np.abs(first - other).max()) > 1e-3


def test_bf16_weights_close_to_fp32(clip):
    bf16 = OpenClipEncoder(model_name=TINY_MODEL, precision="bf16")
    assert bf16.model_id.endswith(":bf16")
    a = clip.encode_texts(SHORT_TEXTS)
    b = bf16.encode_texts(SHORT_TEXTS)
    assert b.dtype == np.float32
    assert float(np.min(np.sum(a * b, axis=1))) > 0.98
    ia = clip.encode_images([_image(5)])
    ib = bf16.encode_images([_image(5)])
    assert float(ia[0] @ ib[0]) > 0.98


def test_model_id_tracks_checkpoint_contents(clip, tmp_path):
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(clip.model().model.state_dict(), ckpt)
    enc = OpenClipEncoder(
        model_name=TINY_MODEL, precision="fp32", checkpoint_path=str(ckpt), seed=99
    )
    id1 = enc.model_id
    assert id1.startswith("openclip:catret-tiny-vit:file-")
    # weights come from the file, not from the seed
    np.testing.assert_allclose(enc.encode_texts(["x"]), clip.encode_texts(["x"]), atol=1e-6)
    sd = clip.model().model.state_dict()
    sd["logit_scale"] = sd["logit_scale"] + 1
    torch.save(sd, ckpt)
    assert (
        OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", checkpoint_path=str(ckpt)).model_id
        != id1
    )


def test_missing_weights_error_names_the_config(monkeypatch, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path"):
        OpenClipEncoder(model_name=TINY_MODEL, checkpoint_path=str(tmp_path / "nope.pt")).model()

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    enc = OpenClipEncoder(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(
        WeightsUnavailableError, match="model_name='catret-tiny-vit' with pretrained=''"
    ):
        enc.model()


def test_unknown_architecture():
    with pytest.raises(ValueError, match="Unknown open_clip model_name"):
        OpenClipEncoder(model_name="no-such-net").model()


@pytest.mark.gpu
def test_cuda_embeddings_close_to_cpu(clip):
    gpu = OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", batch_size=4, device="cuda")
    a = clip.encode_texts(SHORT_TEXTS)
    b = gpu.encode_texts(SHORT_TEXTS)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999
    ia = clip.encode_images([_image(5)])
    ib = gpu.encode_images([_image(5)])
    assert float(ia[0] @ ib[0]) > 0.999


def test_resource_declares_the_spec_fields_with_the_spec_defaults():
    spec_fields = {f.name: f for f in dataclasses.fields(ClipSpec)}
    resource = OpenClipEncoder.model_fields
    mirrored = [name for name in spec_fields if name in resource]
    assert {f.name for f in clip_spec.resource_fields()} == set(mirrored)
    assert set(spec_fields) - set(mirrored) == {"onnx_threads"}  # the resource's `threads`
    for name in mirrored:
        field, declared = spec_fields[name], resource[name]
        assert declared.is_required() == (field.default is dataclasses.MISSING), name
        if not declared.is_required():
            assert declared.default == field.default, name
        assert declared.description == field.metadata["description"], name
    # and Dagster's config schema (launchpad, run config) shows them with those defaults
    schema = OpenClipEncoder.to_config_schema().config_type.fields
    assert schema["seed"].default_value == 0 and schema["model_name"].is_required
    assert set(schema) == set(resource)


def test_resource_spec_carries_the_int8_options_only_for_int8():
    options = {"onnx_cache_dir": "/c", "threads": 3, "int8_min_cosine": 0.5}
    fp32 = OpenClipEncoder(model_name=TINY_MODEL, precision="fp32", **options).spec()
    assert fp32 == ClipSpec(TINY_MODEL, precision="fp32")  # one cached model whatever those say
    int8 = OpenClipEncoder(model_name=TINY_MODEL, precision="int8-onnx", **options).spec()
    assert (int8.onnx_cache_dir, int8.onnx_threads, int8.int8_min_cosine) == ("/c", 3, 0.5)
    assert int8.model_id == "openclip:catret-tiny-vit:random-seed0:int8-onnx:onnx2"
    # auto may resolve to onnx (EfficientNet-Lite on a CPU), so it carries them too
    auto = OpenClipEncoder(model_name=TINY_MODEL, **options).spec()
    assert (auto.onnx_cache_dir, auto.onnx_threads, auto.int8_min_cosine) == ("/c", 3, 0.5)


def test_the_model_modules_import_without_dagster_or_pydantic():
    # The GPU benchmark host runs load_clip without Dagster (benchmarks/bench_image_embedding.py).
    code = (
        "import sys\n"
        "from catret_pipeline.encoders.openclip import ClipSpec, load_clip\n"
        "bad = [m for m in ('dagster', 'pydantic', 'torch', 'open_clip') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
