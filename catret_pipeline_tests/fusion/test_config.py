"""The hyper-parameters are declared once (FusionTrainConfig) and the asset config follows."""

import dataclasses

import dagster as dg
import pydantic
import pytest

from catret_pipeline.fusion.assets import FusionModelsConfig
from catret_pipeline.fusion.config import DEFAULT_BATCH_SIZES, FusionTrainConfig, flat_fields

#: Asset-config fields that are not hyper-parameters of the heads.
ASSET_ONLY = {
    "models",
    "settings",
    "drop_empty_products",
    "workers",
    "reuse_unchanged",
    "retrain_fraction",
    "force_retrain",
}


def test_config_round_trip():
    cfg = FusionTrainConfig(min_steps=0, hidden_dims=(32, 16), batch_sizes={"general": 4})
    back = FusionTrainConfig.from_dict(cfg.to_dict())
    assert back == cfg
    assert back.batch_size_for("general") == 4 and back.batch_size_for("all") == 128
    assert FusionTrainConfig().batch_size_for("general") == 8
    # to_dict is what artefacts record and fingerprints hash: plain JSON types, field order.
    d = FusionTrainConfig().to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(FusionTrainConfig)]
    assert d["hidden_dims"] == [512, 512] and d["batch_sizes"] == DEFAULT_BATCH_SIZES


def test_values_are_validated_and_replace_still_works():
    cfg = FusionTrainConfig(hidden_dims=[8, 4])
    assert cfg.hidden_dims == (8, 4)
    assert dataclasses.replace(cfg, seed=3).seed == 3
    with pytest.raises(pydantic.ValidationError):
        FusionTrainConfig(min_steps=-1)
    with pytest.raises(pydantic.ValidationError):
        FusionTrainConfig(epochz=3)


def test_asset_config_has_every_hyper_parameter_with_its_default_and_description():
    fields = FusionModelsConfig.model_fields
    train_fields = FusionTrainConfig.__pydantic_fields__
    flat = {n for n in train_fields if n not in ("batch_sizes", "default_batch_size")}
    flat |= {f"batch_size_{s}" for s in DEFAULT_BATCH_SIZES}
    assert set(fields) == flat | ASSET_ONLY
    assert set(flat_fields()) == flat
    for name in flat - {f"batch_size_{s}" for s in DEFAULT_BATCH_SIZES}:
        assert fields[name].description == train_fields[name].description, name
    assert FusionModelsConfig().train_config() == FusionTrainConfig()
    assert FusionModelsConfig().hidden_dims == [512, 512]  # a list, as Dagster configs take


def test_flat_values_become_the_train_config():
    cfg = FusionModelsConfig(
        epochs=2, hidden_dims=[16], batch_size_general=4, max_train_seconds=5, workers=1
    )
    assert cfg.train_config() == FusionTrainConfig(
        epochs=2,
        hidden_dims=(16,),
        batch_sizes={**DEFAULT_BATCH_SIZES, "general": 4},
        max_train_seconds=5.0,
    )
    with pytest.raises(pydantic.ValidationError):
        FusionModelsConfig(min_steps=-1)


def test_launchpad_run_config_with_flat_keys_is_accepted():
    seen = []

    @dg.asset
    def fusion_models(config: FusionModelsConfig) -> None:
        seen.append(config.train_config())

    run_config = {
        "ops": {
            "fusion_models": {
                "config": {"epochs": 3, "min_steps": 0, "hidden_dims": [8], "batch_size_all": 64}
            }
        }
    }
    assert dg.materialize([fusion_models], run_config=run_config).success
    assert seen == [
        FusionTrainConfig(
            epochs=3, min_steps=0, hidden_dims=(8,), batch_sizes={**DEFAULT_BATCH_SIZES, "all": 64}
        )
    ]
