"""Query encoders for names that are not in the tree, built once per process.

Built from the encoder modules directly (a server needs the model and its id, nothing of
Dagster), with specs from the same resource fields a build uses: ``EncoderSpecs.from_config``
(``catret serve``, ``catret search``) or the run's resources (the delivery assets), so a
server started with the build's configuration encodes into the space the tables were built
in; the stores check the model ids before using one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from catret_pipeline.config import CatretConfig
    from catret_pipeline.encoders.openclip import ClipSpec
    from catret_pipeline.encoders.text import TextSpec


@dataclass(frozen=True)
class EncoderSpecs:
    text: TextSpec
    clip: ClipSpec

    @classmethod
    def from_config(cls, config: CatretConfig) -> EncoderSpecs:
        # Through the resources, so a spec is built exactly as in a build's steps.
        from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder

        return cls(
            text=TextEncoder(**config.text).spec(), clip=OpenClipEncoder(**config.clip).spec()
        )


def text_model(spec: TextSpec):
    """The sentence-transformers model; ``load_text_model`` caches it per process by spec."""
    from catret_pipeline.encoders.text import load_text_model

    return load_text_model(spec)


_BATCHERS: dict = {}
_BATCHERS_LOCK = threading.Lock()


def text_batcher(spec: TextSpec):
    """One :class:`serving.batching.MicroBatcher` per text encoder spec and process: concurrent
    requests for new names share forward passes (and a hot reload keeps the same one)."""
    from catret_pipeline.serving.batching import MicroBatcher

    with _BATCHERS_LOCK:
        if spec not in _BATCHERS:

            def encode_many(texts):
                return text_model(spec).encode(list(texts))

            _BATCHERS[spec] = MicroBatcher(encode_many)
        return _BATCHERS[spec]


def clip_model(spec: ClipSpec):
    from catret_pipeline.encoders.openclip import load_clip

    return load_clip(spec)
