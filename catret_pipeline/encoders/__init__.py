"""Frozen pre-trained encoders (open_clip CLIP towers, sentence-transformers) as Dagster resources.

Importing this package is cheap: torch, open_clip and sentence_transformers load with the first model,
and Dagster only when the resources are asked for, so ``catret_pipeline.encoders.openclip`` also
runs where Dagster is not installed (the GPU benchmark host).
"""

__all__ = ["OpenClipEncoder", "TextEncoder"]


def __getattr__(name: str):
    if name in __all__:
        from catret_pipeline.encoders import resources

        return getattr(resources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
