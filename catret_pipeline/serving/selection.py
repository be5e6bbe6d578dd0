"""Which model serves each setting at serve time.

The choice itself (best validation R-precision, never a test metric) is
:mod:`catret_pipeline.delivery.choice`, shared with the ``serving_models`` asset. The server
takes the asset's row per setting when the build has one (the choice the build made and the
category pages were ranked with) and otherwise makes the same choice from ``fusion_models``.
``--model`` (or ``CATRET_SERVE_MODEL``, read by ``CatretConfig``) overrides both.
"""

from __future__ import annotations

import polars as pl

from catret_pipeline.delivery.choice import (  # noqa: F401 (re-exported for callers)
    FALLBACK_MODEL,
    ModelChoice,
    choices_from_frame,
    choose_model,
    parse_override,
    validation_candidates,
)


def choose_models(
    fusion_models: pl.DataFrame | None,
    settings: list[str],
    override_text: str | None = None,
    serving_models: pl.DataFrame | None = None,
) -> dict[str, ModelChoice]:
    override = parse_override(override_text)
    built = choices_from_frame(serving_models) if serving_models is not None else {}
    out = {}
    for s in settings:
        if s in built and not (override.get(s) or override.get("*")):
            out[s] = built[s]
        else:
            out[s] = choose_model(fusion_models, s, override)
    return out
