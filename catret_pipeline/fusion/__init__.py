"""Trained fusion models: CLIP-I, CLIP-IA, CLIP-ITA (the paper) and our masked / tree variants.

Only projection heads train; the encoders' outputs come frozen from the embedding tables.
Modules: ``features`` (input matrices, torch-free), ``heads``, ``loss``, ``config`` (the
hyper-parameters), ``objective`` (batch loss, validation), ``train`` (the epoch/step loop),
``fingerprint``, ``artefacts`` (a head's files), ``retrain`` (when a head is reused), ``jobs``
(a (model, setting) to a training job or a finished row), ``runner`` (training the jobs),
``inference`` (load heads, encode products and free-text category names), ``report`` and
``assets``.
"""

from catret_pipeline.fusion.features import MODEL_SPECS, SETTINGS, ModelSpec, model_spec

__all__ = ["MODEL_SPECS", "SETTINGS", "ModelSpec", "model_spec"]
