"""The helpers every stage shares: embedding matrices, row normalisation, file digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from catret_pipeline.markdown import frame_markdown
from catret_pipeline.storage.hashing import (
    CHUNK_BYTES,
    sha256_file,
    sha256_file_or_none,
    update_from_file,
)
from catret_pipeline.vectors_math import as_matrix, embedding_matrix, l2_normalize


def test_embedding_matrix_empty_keeps_the_dtype_width():
    empty_array = pl.Series("embedding", [], dtype=pl.Array(pl.Float32, 3))
    assert embedding_matrix(empty_array).shape == (0, 3)
    empty_list = pl.Series("embedding", [], dtype=pl.List(pl.Float32))
    assert embedding_matrix(empty_list).shape == (0, 0)
    # An empty frame built without a schema has a Null column; it is still an empty matrix.
    assert embedding_matrix(pl.Series("embedding", [])).shape == (0, 0)
    assert embedding_matrix(empty_array).dtype == np.float32


def test_embedding_matrix_array_and_list_agree():
    rows = [[1.0, 2.0], [3.0, 4.0]]
    a = embedding_matrix(pl.Series("e", rows, dtype=pl.Array(pl.Float32, 2)))
    b = embedding_matrix(pl.Series("e", rows))  # List(Float64)
    assert a.dtype == b.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("series", "match"),
    [
        (pl.Series("e", [[1.0, 2.0], [3.0]]), "different lengths"),
        (pl.Series("e", [[1.0], None]), "null"),
        (pl.Series("e", [[1.0, 2.0], None], dtype=pl.Array(pl.Float32, 2)), "null"),
        (pl.Series("e", [1.0, 2.0]), "not a vector column"),
    ],
)
def test_embedding_matrix_refuses(series, match):
    with pytest.raises(ValueError, match=match):
        embedding_matrix(series)


def test_l2_normalize_unit_rows_and_zero_row_stays_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float64)
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    assert np.isfinite(out).all()


def test_l2_normalize_empty_and_one_dimensional():
    assert l2_normalize(np.zeros((0, 5), np.float32)).shape == (0, 5)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [[0.0, 1.0]])


def test_l2_normalize_non_finite_raises_unless_told_not_to_check():
    x = np.array([[np.nan, 1.0], [1.0, 0.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="queries has 1 row"):
        l2_normalize(x, "queries")
    out = l2_normalize(x, check_finite=False)
    np.testing.assert_allclose(out[1], [1.0, 0.0])
    with pytest.raises(ValueError, match="2-d"):
        as_matrix(np.zeros((2, 2, 2)))


def test_chunked_sha256_equals_hashlib_of_the_whole_file(tmp_path):
    # Not a multiple of the chunk size, so the last, short chunk is covered too.
    data = np.random.default_rng(0).bytes(2 * CHUNK_BYTES + 12345)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file_or_none(path) == hashlib.sha256(data).hexdigest()


def test_sha256_of_an_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_missing_file_raises_or_is_none(tmp_path):
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent")
    assert sha256_file_or_none(tmp_path / "absent") is None


def test_update_from_file_copies_and_hashes_a_concatenation(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * (CHUNK_BYTES + 1))
    b.write_bytes(b"yz")
    h = hashlib.sha256()
    out = tmp_path / "joined"
    with open(out, "wb") as sink:
        update_from_file(h, a, copy_to=sink)
        update_from_file(h, b, copy_to=sink)
    assert out.read_bytes() == a.read_bytes() + b"yz"
    assert h.hexdigest() == hashlib.sha256(out.read_bytes()).hexdigest()


def test_frame_markdown_formats_clips_and_escapes():
    df = pl.DataFrame({"model": ["a|b", "c"], "recall": [0.123456, None], "n": [1, 2]})
    assert frame_markdown(df, float_digits=4).splitlines() == [
        "| model | recall | n |",
        "|---|---|---|",
        "| a\\|b | 0.1235 | 1 |",
        "| c | None | 2 |",
    ]
    clipped = frame_markdown(df, rows=1, max_chars=3)
    assert clipped.splitlines()[2:] == ["| a\\|b | 0.… | 1 |"]
    assert frame_markdown(df.clear()) == "| model | recall | n |\n|---|---|---|"


def test_shared_helpers_import_no_stage_dagster_or_torch():
    # Every stage imports these, so they must not pull in a stage, Dagster or torch.
    code = (
        "import sys\n"
        "import catret_pipeline.markdown, catret_pipeline.storage.hashing\n"
        "import catret_pipeline.vectors_math\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('catret_pipeline.'))\n"
        "assert loaded == ['catret_pipeline.markdown', 'catret_pipeline.storage',\n"
        "    'catret_pipeline.storage.hashing', 'catret_pipeline.vectors_math'], loaded\n"
        "assert 'dagster' not in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
