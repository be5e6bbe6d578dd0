"""``CatretConfig``: the one reader of the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from catret_pipeline.config import (
    ENV_DATA_DIR,
    ENV_EMBED_SHARDS,
    ENV_PROFILE,
    ENV_SERVE_INDEX,
    CatretConfig,
    ConfigError,
)

PACKAGE = Path(__file__).resolve().parent.parent / "catret_pipeline"


def test_derived_defaults_follow_the_data_dir(tmp_path):
    config = CatretConfig.from_env({ENV_DATA_DIR: str(tmp_path / "a")})
    assert config.raw_root == tmp_path / "a" / "sample" / "xmarket"
    assert config.image_mirror == str(tmp_path / "a" / "sample" / "images")
    assert config.text["cache_dir"] == str(tmp_path / "a" / "model_cache")
    assert config.clip["onnx_cache_dir"] == str(tmp_path / "a" / "onnx_cache")
    moved = config.with_data_dir(tmp_path / "b")
    assert moved.raw_root == tmp_path / "b" / "sample" / "xmarket"
    assert moved.text["cache_dir"] == str(tmp_path / "b" / "model_cache")
    assert moved.instance_home == tmp_path / "b" / "dagster_home"


def test_a_child_process_rebuilds_the_same_configuration(tmp_path):
    config = CatretConfig.from_env(
        {ENV_DATA_DIR: str(tmp_path), ENV_EMBED_SHARDS: "3", "CATRET_CLIP_THREADS": "2"}
    )
    again = CatretConfig.from_env(config.to_env())
    assert again == config
    assert (again.embed_shards, again.clip["threads"]) == (3, 2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_PROFILE: "nonsense"}, "CATRET_PROFILE='nonsense'"),
        ({ENV_SERVE_INDEX: "faiss"}, "CATRET_SERVE_INDEX='faiss'"),
        ({"CATRET_CLIP_DECODE_WORKERS": "0"}, "CATRET_CLIP_DECODE_WORKERS must be >= 1"),
        ({"CATRET_SAMPLE_PRODUCTS": "many"}, "CATRET_SAMPLE_PRODUCTS must be an integer"),
    ],
)
def test_every_bad_value_is_one_config_error(env, message):
    with pytest.raises(ConfigError, match=message):
        CatretConfig.from_env(env)


def _reads_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        is_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if is_os and node.value.id == "os" and node.attr in ("environ", "getenv", "environb"):
            lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and node.attr == "EnvVar":
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_configuration_reads_the_environment():
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "config.py" or path.parent != PACKAGE
        if (lines := _reads_environment(ast.parse(path.read_text())))
    }
    assert offenders == {}
