"""Test-wide defaults: the fast tiny encoders, at fp32.

The offline profile's encoders are real (all-mpnet-base-v2, EfficientNet-Lite0) and cost minutes
per pipeline build on 2 cores; every test that builds the definitions would pay that. Set here
before any test module builds resources, through the same environment variables a user has
(settings.clip_defaults / text_defaults), so subprocesses (the CLI tests) inherit them. fp32
because precision "auto" differs between CPU kinds (bf16 where native), and tests must give the
same embeddings everywhere. Tests about the real encoders construct them explicitly.
"""

from __future__ import annotations

import os

TEST_ENV = {
    "CATRET_CLIP_MODEL": "catret-tiny-vit",
    "CATRET_CLIP_PRECISION": "fp32",
    "CATRET_TEXT_MODEL": "bundled:all-MiniLM-L6-v2",
    "CATRET_TEXT_PRECISION": "fp32",
}
for _name, _value in TEST_ENV.items():
    os.environ.setdefault(_name, _value)
