"""Trained fusion models: CLIP-I, CLIP-IA, CLIP-ITA (the paper) and our masked / tree variants.

Only projection heads train; the encoders' outputs come frozen from the embedding tables.
Modules: ``features`` (input matrices, torch-free), ``heads``, ``loss``, ``train``,
``inference`` (load heads, encode products and free-text category names), ``assets``.
"""

from catret_pipeline.fusion.features import MODEL_SPECS, SETTINGS, ModelSpec, model_spec

__all__ = ["MODEL_SPECS", "SETTINGS", "ModelSpec", "model_spec"]
