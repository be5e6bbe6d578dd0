"""The commands other than ``materialize``: ``ui``, ``sample``, ``sql``, ``search``, ``serve``."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from catret_pipeline.cli.environment import (
    check_raw_root,
    configure,
    ensure_bundled_sample,
    prepare_data_dir,
)
from catret_pipeline.cli.instance import open_instance
from catret_pipeline.config import REPO_ROOT, CatretConfig


def cmd_ui(args: argparse.Namespace) -> int:
    config = configure(args, create=False)
    check_raw_root(config)
    prepare_data_dir(config)
    # Created here, under the lock: the webserver and the daemon would otherwise both create
    # a fresh instance at the same moment (the alembic race of open_instance).
    open_instance(config.instance_home)
    ensure_bundled_sample(config, args.sample_products)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    cmd = [
        dagster,
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    # The webserver and daemon inherit the configuration through the environment configure set.
    return subprocess.call(cmd, cwd=REPO_ROOT)


def cmd_sample(args: argparse.Namespace) -> int:
    from catret_pipeline.sample.generator import ensure_sample

    config = CatretConfig.from_env()
    shape = args.shape or config.sample_shape
    out = Path(args.out) if args.out else config.sample_root
    summary = ensure_sample(out, n_products=args.products, seed=args.seed, shape=shape)
    print(
        f"{summary.n_products} products, {summary.n_lines} lines, {summary.n_categories} "
        f"categories ({shape} shape) in {summary.out_dir}"
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from catret_pipeline.storage.duckdb_catalog import (
        CatalogQueryRefused,
        check_read_only_query,
        open_catalog,
    )
    from catret_pipeline.storage.tables import table_root

    config = configure(args, create=False)
    db = config.data_dir / "catret.duckdb"
    if not db.exists():
        print(f"no catalogue at {db}: run `catret materialize` first", file=sys.stderr)
        return 2
    # The catalogue answers from this data dir's tables (wherever it was built), and the query
    # surface is read-only in effect: see open_catalog and docs/operations.md ("catret sql").
    con = open_catalog(db, table_root(config.data_dir, config.table_store))
    try:
        check_read_only_query(con, args.query)
        con.sql(args.query).show(max_rows=args.max_rows, max_width=200)
    except CatalogQueryRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def _catalogue_search(args: argparse.Namespace, config: CatretConfig):
    """The whole catalogue through the serving store: the same code as ``catret serve``."""
    from catret_pipeline.serving.query import QueryError
    from catret_pipeline.serving.store import Store
    from catret_pipeline.serving.tables import StoreError

    try:
        store = Store(config.data_dir, interval=0, override=args.model, config=config)
        return store.search(args.query, args.k, args.setting)
    except (StoreError, QueryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_search(args: argparse.Namespace) -> int:
    from catret_pipeline.search import SearchError, print_results, search, write_contact_sheet
    from catret_pipeline.storage.artefacts import artefact_root

    config = configure(args, create=False)
    if args.catalogue:
        hits = _catalogue_search(args, config)
        if hits is None:
            return 2
    else:
        try:
            hits = search(
                data_dir=config.data_dir,
                query=args.query,
                model=args.model or "clip-ita",
                setting=args.setting,
                k=args.k,
                config=config,
            )
        except SearchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print_results(hits, args.query, hits.model, hits.setting)
    if args.sheet:
        images = artefact_root(config.data_dir, config.artefact_store)
        path = write_contact_sheet(hits, images, args.sheet, title=args.query)
        print(f"contact sheet: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from catret_pipeline.serving.server import serve

    config = configure(args, create=False)
    return serve(
        config,
        host=args.host,
        port=args.port,
        reload_interval=args.reload_interval,
        model=args.model,
        root_path=args.root_path,
    )
