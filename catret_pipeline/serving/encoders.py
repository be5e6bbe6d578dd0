"""Query encoders for names that are not in the tree, built once per process.

Built from the encoder modules directly (not the Dagster resources): a server needs the model
and its id, nothing of the pipeline's configuration system. The specs come from the same
settings (CATRET_PROFILE / CATRET_TEXT_* / CATRET_CLIP_*) as a build, so a server started in
the build's environment encodes into the space the tables were built in; the stores check the
model ids before using one.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from catret_pipeline import settings


def text_spec(data_dir: Path):
    from catret_pipeline.encoders.text import TextSpec

    fields = {f.name for f in dataclasses.fields(TextSpec)}
    # Bundled split-zip models are assembled under the data dir unless configured, as in builds.
    values = {"cache_dir": str(Path(data_dir) / "model_cache"), **settings.text_defaults()}
    return TextSpec(**{k: v for k, v in values.items() if k in fields})


def clip_spec():
    from catret_pipeline.encoders.openclip import ClipSpec

    fields = {f.name for f in dataclasses.fields(ClipSpec)}
    return ClipSpec(**{k: v for k, v in settings.clip_defaults().items() if k in fields})


def text_model(data_dir: Path):
    """The sentence-transformers model; ``load_text_model`` caches it per process by spec."""
    from catret_pipeline.encoders.text import load_text_model

    return load_text_model(text_spec(data_dir))


_BATCHERS: dict = {}
_BATCHERS_LOCK = threading.Lock()


def text_batcher(data_dir: Path):
    """One :class:`serving.batching.MicroBatcher` per text encoder spec and process: concurrent
    requests for new names share forward passes (and a hot reload keeps the same one)."""
    from catret_pipeline.serving.batching import MicroBatcher

    spec = text_spec(data_dir)
    with _BATCHERS_LOCK:
        if spec not in _BATCHERS:

            def encode_many(texts):
                return text_model(data_dir).encode(list(texts))

            _BATCHERS[spec] = MicroBatcher(encode_many)
        return _BATCHERS[spec]


def clip_model():
    from catret_pipeline.encoders.openclip import load_clip

    return load_clip(clip_spec())
