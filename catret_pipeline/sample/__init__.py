"""Seeded sample catalogue in the Amazon XMarket layout, for tests, demos and the default run."""

from catret_pipeline.sample.broken import BROKEN_KINDS
from catret_pipeline.sample.generator import ensure_sample, generate_sample
from catret_pipeline.sample.leaves import tree_leaves
from catret_pipeline.sample.manifest import (
    BROKEN_LINES_NAME,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SAMPLE_SHAPES,
    SampleSummary,
    normalise_params,
    read_manifest,
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
