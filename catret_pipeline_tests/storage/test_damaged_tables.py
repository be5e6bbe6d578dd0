"""Damaged table files (issue #12 item 5): a 0-byte or truncated Parquet file is named with a
remedy, never a raw polars error; a damaged previous table is not reused but recomputed, with
a warning and a ``previous_unreadable`` entry in the asset's metadata."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from catret_pipeline.images.resources import ImageFetcher
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.tables import DamagedTable, read_tables
from catret_pipeline_tests.images.test_assets import run, write_products
from catret_pipeline_tests.images.test_fetch import LOOPBACK_HOSTS


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_read_names_the_damaged_file(tmp_path, how):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"a": list(range(1000))}).write_parquet(path)
    _damage(path, how)
    for lazy in (False, True):
        with pytest.raises(DamagedTable, match=r"t\.parquet is damaged.*re-materialise"):
            read_tables([path], lazy=lazy)


def test_an_input_that_is_damaged_fails_the_step_naming_the_file(tmp_path):
    @dg.asset
    def up() -> pl.DataFrame:
        return pl.DataFrame({"a": [1, 2, 3]})

    @dg.asset
    def down(up: pl.DataFrame) -> pl.DataFrame:
        return up

    resources = {"io_manager": ParquetIOManager(data_dir=str(tmp_path))}
    assert dg.materialize([up, down], resources=resources).success
    path = asset_file(tmp_path, ["up"])
    _damage(path, "empty")
    result = dg.materialize([up, down], resources=resources, selection=[down], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error, message = failure.step_failure_data.error, ""
    while error is not None:  # dagster wraps the IO manager's error as the cause
        message, error = message + error.message, error.cause
    assert str(path) in message and "damaged" in message


def test_a_damaged_previous_product_images_is_recomputed(tmp_path):
    data = tmp_path / "data"
    write_products(data, [("P1", None), ("P2", "")])  # nothing to fetch
    fetcher = ImageFetcher(mirror_dir=str(tmp_path), allow_hosts=LOOPBACK_HOSTS)
    first, meta, _ = run(data, fetcher)
    assert "previous_unreadable" not in meta
    _damage(asset_file(data, ["product_images"]), "empty")
    again, meta, _ = run(data, fetcher)
    assert again.equals(first)
    assert "product_images.parquet is damaged" in meta["previous_unreadable"]
