"""Each parameter declared once: the Dagster resources take their fields from the dataclasses
the pure code uses (names, types, defaults, descriptions), and build them back from values."""

from __future__ import annotations

import dataclasses

import pytest

from catret_pipeline.config_fields import DESCRIPTION, declared_fields
from catret_pipeline.encoders.clip_spec import ClipSpec, resource_fields
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.encoders.text import TextSpec
from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.fetch_types import FetchOptions
from catret_pipeline.images.resources import ImageFetcher


@pytest.mark.parametrize(
    ("resource", "spec", "fields"),
    [
        (TextEncoder, TextSpec, declared_fields(TextSpec)),
        (ImageFetcher, FetchOptions, declared_fields(FetchOptions)),
        (OpenClipEncoder, ClipSpec, resource_fields()),
    ],
)
def test_resource_fields_come_from_the_dataclass(resource, spec, fields):
    assert fields, spec
    for f in fields:
        declared = resource.model_fields[f.name]
        assert declared.description == f.metadata[DESCRIPTION], f.name
        if f.default is dataclasses.MISSING:
            assert declared.is_required(), f.name
        else:
            assert declared.default == f.default, f.name
    # Nothing of the dataclass is declared twice by hand in the resource's own body.
    own = set(resource.__annotations__)
    assert not own & {f.name for f in fields}


def test_values_round_trip_into_the_dataclasses():
    text = TextEncoder(precision="fp32", max_seq_length=64, batch_size=3)
    assert text.spec() == TextSpec(precision="fp32", max_seq_length=64)
    fetch = ImageFetcher(mirror_dir="/m", retries=0, allow_hosts=["127.0.0.1"], concurrency=2)
    options = fetch.options()
    assert (options.mirror_dir, options.retries, options.timeout_s) == ("/m", 0, 10.0)
    assert options.allow == AllowList.parse(["127.0.0.1"])
    every = {f.name for f in dataclasses.fields(FetchOptions)}
    assert every - {f.name for f in declared_fields(FetchOptions)} == {"allow"}
