"""The quality benchmark's build environment (benchmarks/bench_quality.py)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_quality", module)
    spec.loader.exec_module(module)
    return module


def test_sample_keeps_default_image_mirror(bench):
    # Regression: an empty CATRET_IMAGE_MIRROR disabled the sample's own image folder, so the
    # benchmarked sample was built without any image embeddings.
    env = bench.build_env(None, None, {"CATRET_IMAGE_MIRROR": "/elsewhere", "PATH": "/bin"})
    assert "CATRET_IMAGE_MIRROR" not in env
    assert env["PATH"] == "/bin"


def test_real_catalogue_mirror_and_text_only(bench, tmp_path):
    mirror = tmp_path / "images"
    assert bench.build_env(tmp_path, mirror, {})["CATRET_IMAGE_MIRROR"] == str(mirror)
    assert bench.build_env(tmp_path, None, {"CATRET_DATA_DIR": "x"}) == {
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "CATRET_IMAGE_MIRROR": "",
    }
