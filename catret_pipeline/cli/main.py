"""The ``catret`` argument parser and entry point."""

from __future__ import annotations

import argparse
import sys

from catret_pipeline.cli.commands import cmd_sample, cmd_search, cmd_serve, cmd_sql, cmd_ui
from catret_pipeline.cli.materialize import cmd_materialize
from catret_pipeline.config import (
    DEFAULT_SAMPLE_PRODUCTS,
    ENV_DATA_DIR,
    ENV_RAW_ROOT,
    EXECUTORS,
    PROFILES,
    SAMPLE_SHAPES,
    ConfigError,
)

DESCRIPTION = """\
catret materialize runs the whole asset graph in-process against a persistent Dagster instance
(so the runs show up in catret ui); catret ui serves the Dagster UI; catret search queries the
materialised indexes; catret sql queries the DuckDB catalogue; catret serve serves the catalogue
over HTTP (docs/serving.md)."""


def _common(p: argparse.ArgumentParser, raw: bool = True) -> None:
    p.add_argument("--data-dir", help=f"data directory (env {ENV_DATA_DIR}; default ./data)")
    if raw:
        p.add_argument(
            "--raw-root",
            help=f"XMarket-layout root (env {ENV_RAW_ROOT}; default: the bundled sample)",
        )
        p.add_argument(
            "--profile",
            choices=sorted(PROFILES),
            help="encoder profile (env CATRET_PROFILE)",
        )
        p.add_argument("--sample-products", type=int, help="size of the generated sample catalogue")
        p.add_argument(
            "--sample-shape",
            choices=list(SAMPLE_SHAPES),
            help="category tree of the generated sample: the small hand-written one, or one shaped "
            "like the paper's (5,471 categories on 9 levels) (env CATRET_SAMPLE_SHAPE; "
            "default sample)",
        )
        p.add_argument(
            "--shards",
            type=int,
            help="hash shards per product-level embedding asset, and above 1 one hnsw_indexes step "
            "per vector model (env CATRET_EMBED_SHARDS; default 1)",
        )
        p.add_argument(
            "--executor",
            choices=list(EXECUTORS),
            help="how the build runs its steps (env CATRET_EXECUTOR; default: materialize runs "
            "in-process, the UI uses Dagster's multiprocess default)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catret", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("materialize", help="materialise the asset graph in-process")
    _common(p)
    p.add_argument("--select", help="dagster asset selection string, e.g. 'key:products+'")
    p.add_argument(
        "--force",
        action="store_true",
        help="start even if the instance shows another build or refresh in progress",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="retrain every fusion head even when its training data barely changed",
    )
    p.add_argument(
        "--rebuild-indexes",
        action="store_true",
        help="rebuild every HNSW index instead of updating it in place",
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("ui", help="serve the Dagster UI (dagster dev -w workspace.yaml)")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("sample", help="generate the sample catalogue")
    p.add_argument("--out", help="output directory (default: <data dir>/sample)")
    p.add_argument("--products", type=int, default=DEFAULT_SAMPLE_PRODUCTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shape",
        choices=list(SAMPLE_SHAPES),
        help="category tree: sample (default) or paper (env CATRET_SAMPLE_SHAPE)",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sql", help="run a query against the DuckDB catalogue (read-only)")
    _common(p, raw=False)
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=100)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("search", help="rank products for a category name")
    _common(p, raw=False)
    p.add_argument("query", help="category name, seen or unseen")
    p.add_argument(
        "--model",
        help="model to rank with (default clip-ita; with --catalogue the serving model)",
    )
    p.add_argument("--setting", default="specific", choices=["all", "general", "specific"])
    p.add_argument("-k", type=int, default=10)
    p.add_argument(
        "--catalogue",
        action="store_true",
        help="rank every product of the catalogue with the serving store (as catret serve) "
        "instead of the setting's test split in its evaluation index",
    )
    p.add_argument("--sheet", help="write a contact sheet PNG of the results")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("serve", help="HTTP API and web page over the materialised catalogue")
    _common(p, raw=False)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model",
        help="serving model, for every setting or as all=M,specific=M (env CATRET_SERVE_MODEL; "
        "default: the best validation R-precision per setting)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the data dir for a new build (0 = no hot reload)",
    )
    p.add_argument("--root-path", default="", help="URL prefix when mounted under a proxy path")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        # A configuration mistake is the user's to fix: one line, no traceback.
        print(f"catret: configuration error: {exc}", file=sys.stderr)
        return 2
