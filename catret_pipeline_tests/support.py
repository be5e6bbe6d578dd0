"""Constants the test modules share (not fixtures: those live in the conftests)."""

from __future__ import annotations

from pathlib import Path

#: The repository root, for tests that run the CLI or read files beside the package.
REPO = Path(__file__).resolve().parent.parent

#: The fast tiny encoders, at fp32. The offline profile's encoders are real (all-mpnet-base-v2,
#: EfficientNet-Lite0) and cost minutes per pipeline build on 2 cores; every test that builds
#: the definitions would pay that. fp32 because precision "auto" differs between CPU kinds (bf16
#: where native), and tests must give the same embeddings everywhere. Tests about the real
#: encoders construct them explicitly.
TEST_ENV = {
    "CATRET_CLIP_MODEL": "catret-tiny-vit",
    "CATRET_CLIP_PRECISION": "fp32",
    "CATRET_TEXT_MODEL": "bundled:all-MiniLM-L6-v2",
    "CATRET_TEXT_PRECISION": "fp32",
}


def query_encoders() -> dict:
    """The ``clip`` / ``text_encoder`` resources of the test environment (the tiny encoders),
    for ``dg.materialize`` of assets that encode category names (the delivery assets)."""
    from catret_pipeline.config import CatretConfig
    from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder

    config = CatretConfig.from_env()
    return {"clip": OpenClipEncoder(**config.clip), "text_encoder": TextEncoder(**config.text)}


def query_text_model(data_dir):
    """The text encoder a server on ``data_dir`` would use (the test environment's)."""
    from catret_pipeline.config import CatretConfig
    from catret_pipeline.serving import encoders

    config = CatretConfig.from_env().with_data_dir(data_dir)
    return encoders.text_model(encoders.EncoderSpecs.from_config(config).text)
