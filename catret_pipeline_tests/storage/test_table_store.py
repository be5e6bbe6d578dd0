"""Table assets on a ``table_store`` URL: fsspec's real in-memory filesystem and file:// URLs."""

from pathlib import Path

import dagster as dg
import duckdb
import fsspec
import polars as pl
import pyarrow as pa
import pytest
from upath import UPath

from catret_pipeline import config as catret_config
from catret_pipeline.storage.assets import build_duckdb_catalog_asset
from catret_pipeline.storage.io_manager import ParquetIOManager, asset_file
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline.storage.tables import (
    is_remote,
    read_tables,
    remote_table_sources,
    table_file,
    table_root,
    write_table,
)

STORE = "memory://catret-test/tables"
PARTS = dg.StaticPartitionsDefinition(["a", "b|c"])


@pytest.fixture(autouse=True)
def memory_fs():
    # fsspec's memory filesystem is one store per process: start every test empty.
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def _vectors() -> pl.DataFrame:
    return pl.DataFrame(
        {"asin": ["x", "y", "z"], "embedding": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]}
    ).with_columns(pl.col("embedding").cast(pl.Array(pl.Float32, 2)))


@dg.asset
def vectors() -> pl.DataFrame:
    return _vectors()


@dg.asset
def vector_count(vectors: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"rows": [vectors.height], "dim": [vectors["embedding"].dtype.size]})


@dg.asset
def lazy_asins(vectors: pl.LazyFrame) -> pl.DataFrame:
    assert isinstance(vectors, pl.LazyFrame)
    return vectors.select("asin").sort("asin").collect()


@dg.asset(partitions_def=PARTS)
def parted(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.DataFrame({"part": [context.partition_key] * 2, "k": [1, 2]})


@dg.asset
def parted_total(parted: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"rows": [parted.height], "parts": [parted["part"].n_unique()]})


def _resources(data_dir: Path, table_store: str) -> dict:
    return {
        "io_manager": ParquetIOManager(data_dir=str(data_dir), table_store=table_store),
        "storage": CatretStorage(data_dir=str(data_dir), table_store=table_store),
    }


def _materialize(assets, resources, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets, resources=resources, instance=dg.DagsterInstance.ephemeral(), **kwargs
    )


def _materialize_all(data_dir: Path, table_store: str) -> None:
    resources = _resources(data_dir, table_store)
    assert _materialize([vectors, vector_count, lazy_asins], resources).success
    for key in PARTS.get_partition_keys():
        assert _materialize([parted], resources, partition_key=key).success
    assert _materialize([parted, parted_total], resources, selection=[parted_total]).success


def _read(store: str, *key: str) -> pl.DataFrame:
    return read_tables([table_file(table_root("unused", store), key)])


def test_table_root_and_file_naming(tmp_path):
    assert table_root(tmp_path) == tmp_path / "assets"
    assert table_root(tmp_path, f"file://{tmp_path}/t") == tmp_path / "t"
    remote = table_root(tmp_path, STORE)
    assert is_remote(remote) and isinstance(remote, UPath)
    assert str(table_file(remote, ["a", "b"])) == f"{STORE}/a/b.parquet"
    # partition files are named as in the local layout
    assert str(table_file(remote, ["p"], "x|y/z")) == f"{STORE}/p/x__y_z.parquet"
    assert asset_file(tmp_path, ["p"], "x|y/z") == tmp_path / "assets" / "p" / "x__y_z.parquet"
    with pytest.raises(ValueError, match="absolute"):
        table_root(tmp_path, "file:relative/dir")


def test_memory_store_round_trip_through_materialize(tmp_path, memory_fs):
    _materialize_all(tmp_path, STORE)

    assert _read(STORE, "vectors").equals(_vectors())
    assert _read(STORE, "vectors").schema["embedding"] == pl.Array(pl.Float32, 2)
    assert _read(STORE, "vector_count").to_dicts() == [{"rows": 3, "dim": 2}]
    assert _read(STORE, "lazy_asins")["asin"].to_list() == ["x", "y", "z"]
    assert _read(STORE, "parted_total").to_dicts() == [{"rows": 4, "parts": 2}]
    assert sorted(memory_fs.store) == [
        "/catret-test/tables/lazy_asins.parquet",
        "/catret-test/tables/parted/a.parquet",
        "/catret-test/tables/parted/b__c.parquet",
        "/catret-test/tables/parted_total.parquet",
        "/catret-test/tables/vector_count.parquet",
        "/catret-test/tables/vectors.parquet",
    ]
    assert not (tmp_path / "assets").exists(), "tables leaked onto the local data dir"


def test_remote_materialisation_metadata_names_the_url(tmp_path):
    result = _materialize([vectors], _resources(tmp_path, STORE))
    (mat,) = result.asset_materializations_for_node("vectors")
    assert mat.metadata["path"].value == f"{STORE}/vectors.parquet"
    assert mat.metadata["dagster/row_count"].value == 3


def test_missing_remote_asset_has_a_clear_error(tmp_path):
    result = _materialize(
        [vectors, vector_count],
        _resources(tmp_path, STORE),
        selection=[vector_count],
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert "Asset vectors has no materialisation at" in message
    assert f"{STORE}/vectors.parquet" in message and "catret materialize" in message


def test_read_previous_on_the_remote_store(tmp_path):
    storage = CatretStorage(data_dir=str(tmp_path), table_store=STORE)
    assert storage.read_previous("vectors") is None
    assert str(storage.asset_path("vectors")) == f"{STORE}/vectors.parquet"
    _materialize([vectors], _resources(tmp_path, STORE))
    assert storage.read_previous("vectors").equals(_vectors())
    lazy = storage.scan_asset("vectors")
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().equals(_vectors())
    assert storage.scan_asset("absent") is None
    # binary artefacts stay under the local data dir
    assert storage.path("indexes", "x.bin") == tmp_path.resolve() / "indexes" / "x.bin"


class _Exploding(pl.DataFrame):
    def to_arrow(self, *args, **kwargs):
        raise RuntimeError("killed while serialising")


@dg.asset(name="vectors")
def exploding_vectors() -> pl.DataFrame:
    return _Exploding({"asin": ["broken"]})


@dg.asset(name="vectors")
def not_a_frame():  # unannotated, so Dagster's type check lets the dict reach the IO manager
    return {"asin": ["broken"]}


@pytest.mark.parametrize(
    ("bad", "error"),
    [(exploding_vectors, "killed while serialising"), (not_a_frame, "returned dict")],
    ids=["to_arrow", "dict"],
)
def test_failed_write_keeps_previous_object(tmp_path, memory_fs, bad, error):
    resources = _resources(tmp_path, STORE)
    assert _materialize([vectors], resources).success
    key = "/catret-test/tables/vectors.parquet"
    before = memory_fs.store[key].getvalue()

    result = _materialize([bad], resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert error in str(failure.step_failure_data.error)
    assert memory_fs.store[key].getvalue() == before
    assert _read(STORE, "vectors").equals(_vectors())
    assert list(memory_fs.store) == [key]


def test_unwritable_arrow_table_uploads_nothing(memory_fs):
    path = table_file(table_root("unused", STORE), ["t"])
    write_table(pl.DataFrame({"a": [1]}), path)
    # Parquet has no month-day-nano interval type: the writer fails inside serialisation.
    unwritable = pa.table({"i": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})
    with pytest.raises(pa.ArrowException):
        write_table(unwritable, path)
    assert read_tables([path])["a"].to_list() == [1]
    with pytest.raises(TypeError, match="polars DataFrame"):
        write_table([1, 2], path)  # type: ignore[arg-type]


def test_file_url_store_uses_local_atomic_files(tmp_path):
    store = f"file://{tmp_path / 'tables'}"
    _materialize_all(tmp_path / "data", store)
    tables = tmp_path / "tables"
    assert pl.read_parquet(tables / "vectors.parquet").equals(_vectors())
    assert {p.name for p in (tables / "parted").iterdir()} == {"a.parquet", "b__c.parquet"}
    assert not [p for p in tables.rglob("*") if p.name.startswith(".")], "temp file left"
    assert not (tmp_path / "data" / "assets").exists()
    # a local store keeps lazy scans
    lazy = read_tables([tables / "vectors.parquet"], lazy=True)
    assert isinstance(lazy, pl.LazyFrame)


def _catalog(tmp_path: Path, store: str) -> tuple[pl.DataFrame, dict]:
    catalog = build_duckdb_catalog_asset([vectors.key, parted.key])
    _materialize_all(tmp_path, store)
    result = _materialize([catalog], _resources(tmp_path, store))
    (mat,) = result.asset_materializations_for_node("catret_duckdb")
    return result.output_for_node("catret_duckdb"), mat.metadata


def test_duckdb_catalogue_copies_remote_tables(tmp_path):
    listing, meta = _catalog(tmp_path, STORE)
    assert set(listing["kind"]) == {"table"}
    assert "copied" in meta["mode"].value
    parquet = dict(zip(listing["view"], listing["parquet"], strict=True))
    assert parquet["vectors"] == f"{STORE}/vectors.parquet"
    assert parquet["parted"] == f"{STORE}/parted/*.parquet"

    con = duckdb.connect(str(tmp_path / "catret.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from vectors").fetchone()[0] == 3
        assert con.execute("select count(*) from parted").fetchone()[0] == 4
        assert con.execute("select rows from parted_total").fetchone()[0] == 4
        kinds = dict(
            con.execute("select table_name, table_type from information_schema.tables").fetchall()
        )
        assert kinds["vectors"] == "BASE TABLE"
    finally:
        con.close()


def test_duckdb_catalogue_views_on_a_file_url(tmp_path):
    listing, meta = _catalog(tmp_path, f"file://{tmp_path / 'tables'}")
    assert set(listing["kind"]) == {"view"}
    assert "views" in meta["mode"].value
    # Views hold paths relative to the table root (a copied data dir reads its own tables).
    con = duckdb.connect(
        str(tmp_path / "catret.duckdb"),
        read_only=True,
        config={"file_search_path": str(tmp_path / "tables")},
    )
    try:
        assert con.execute("select count(*) from vectors").fetchone()[0] == 3
        kinds = dict(
            con.execute("select table_name, table_type from information_schema.tables").fetchall()
        )
        assert kinds["vectors"] == "VIEW"
    finally:
        con.close()


def test_remote_listing_matches_the_local_layout(memory_fs):
    root = table_root("unused", STORE)
    write_table(pl.DataFrame({"a": [1]}), table_file(root, ["solo"]))
    write_table(pl.DataFrame({"a": [1]}), table_file(root, ["p"], "1"))
    write_table(pl.DataFrame({"a": [2]}), table_file(root, ["p"], "2"))
    # two folders down (shard tables): not a table of its own, as in view_sources
    write_table(pl.DataFrame({"a": [3]}), table_file(root, ["group", "deep", "x"]))
    sources = remote_table_sources(root)
    assert {k: [str(p) for p in v] for k, v in sources.items()} == {
        "solo": [f"{STORE}/solo.parquet"],
        "p": [f"{STORE}/p/1.parquet", f"{STORE}/p/2.parquet"],
    }


def test_empty_table_store_keeps_the_local_layout(tmp_path):
    _materialize_all(tmp_path, "")
    assert pl.read_parquet(asset_file(tmp_path, ["vectors"])).equals(_vectors())
    assert asset_file(tmp_path, ["parted"], "b|c").exists()
    storage = CatretStorage(data_dir=str(tmp_path))
    assert storage.table_store == "" and storage.tables_root == tmp_path.resolve() / "assets"
    assert storage.asset_path("vectors") == tmp_path.resolve() / "assets" / "vectors.parquet"
    assert storage.read_previous("vectors").equals(_vectors())
    assert storage.scan_asset("vectors").collect().equals(_vectors())


def test_table_store_setting_reaches_both_resources(tmp_path, monkeypatch):
    from catret_pipeline.definitions import build_resources

    monkeypatch.delenv(catret_config.ENV_TABLE_STORE, raising=False)
    assert catret_config.CatretConfig.from_env().table_store == ""
    resources = build_resources(data_dir=str(tmp_path))
    assert resources["io_manager"].table_store == resources["storage"].table_store == ""

    monkeypatch.setenv(catret_config.ENV_TABLE_STORE, STORE)
    resources = build_resources(data_dir=str(tmp_path))
    assert resources["io_manager"].table_store == STORE
    assert resources["storage"].table_store == STORE
