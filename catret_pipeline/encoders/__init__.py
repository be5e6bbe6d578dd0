"""Frozen pre-trained encoders (open_clip CLIP towers, sentence-transformers) as Dagster resources.

Importing this package is cheap: torch, open_clip and sentence_transformers load with the first model.
"""

from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder

__all__ = ["OpenClipEncoder", "TextEncoder"]
