"""Seeded sample catalogue in the Amazon XMarket layout, for tests, demos and the default run."""

from catret_pipeline.sample.generator import (
    BROKEN_KINDS,
    BROKEN_LINES_NAME,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SAMPLE_SHAPES,
    SampleSummary,
    ensure_sample,
    generate_sample,
    normalise_params,
    read_manifest,
    tree_leaves,
)

__all__ = [
    "BROKEN_KINDS",
    "BROKEN_LINES_NAME",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SAMPLE_SHAPES",
    "SampleSummary",
    "ensure_sample",
    "generate_sample",
    "normalise_params",
    "read_manifest",
    "tree_leaves",
]
