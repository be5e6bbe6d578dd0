"""Retrieval quality on real catalogues: every model x setting x seen/unseen, and our model's
margin over the best zero-shot baseline with its permutation p-value.

Runs the whole pipeline (the README's ``catret materialize``, default encoders) on each
catalogue into its own data dir, then writes one section per catalogue into docs/models.md.
Not a test: it needs ``../shared/data`` (a user's clone has none) and takes minutes.

    uv run python benchmarks/bench_quality.py                      # sample, fashion, toys
    uv run python benchmarks/bench_quality.py --catalogues fashion --work /tmp/q --write-docs

A rerun over the same ``--work`` reuses every unchanged embedding and head, as a refresh does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
MODELS_DOC = REPO / "docs" / "models.md"

#: name -> (raw root or None for the generated sample, image mirror or None, description)
CATALOGUES = {
    "sample": (None, None, "the generated 1,200-product sample (synthetic, with images)"),
    "fashion": (
        SHARED / "fashion-xmarket",
        SHARED / "fashion-xmarket" / "images",
        "fashion-xmarket: 7,635 real products with images, 3 levels",
    ),
    "toys": (
        SHARED / "amazon-toys-xmarket",
        None,
        "amazon-toys-xmarket: 9,310 real Amazon UK toys, text only, depth 2-5",
    ),
}
SETTINGS = ("all", "general", "specific")
SUBSETS = ("seen", "unseen")
MIN_QUERIES = 5


def build_env(raw: Path | None, mirror: Path | None, base: dict[str, str]) -> dict[str, str]:
    """Environment of one catalogue's build: the caller's CATRET_* settings dropped.

    The generated sample keeps the pipeline's default mirror (its own image folder); an empty
    CATRET_IMAGE_MIRROR would disable it and send every image to the network, which on an
    offline machine leaves the sample without images.
    """
    env = {k: v for k, v in base.items() if not k.startswith("CATRET_")}
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    if mirror is not None:
        env["CATRET_IMAGE_MIRROR"] = str(mirror)
    elif raw is not None:
        env["CATRET_IMAGE_MIRROR"] = ""
    return env


def build(name: str, work: Path) -> tuple[Path, float]:
    raw, mirror, _ = CATALOGUES[name]
    data = work / name
    env = build_env(raw, mirror, dict(os.environ))
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "materialize", "--data-dir", str(data)]
    if raw is not None:
        cmd += ["--raw-root", str(raw)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{name}: catret materialize failed (rc {proc.returncode})")
    return data, seconds


def _cell(row: dict | None) -> str:
    if row is None or row["n_queries"] == 0 or row["r_precision"] is None:
        return "-"
    return f"{100 * row['r_precision']:.1f} / {100 * row['p_at_10']:.1f}"


def section(name: str, data: Path, seconds: float) -> str:
    assets = data / "assets"
    metrics = pl.read_parquet(assets / "metrics.parquet")
    margins = pl.read_parquet(assets / "baseline_margins.parquet")
    text_ids = pl.read_parquet(assets / "title_embeddings.parquet")["model_id"].unique().to_list()
    image_ids = pl.read_parquet(assets / "image_embeddings.parquet")["model_id"].unique().to_list()
    by = {(r["model"], r["setting"], r["subset"]): r for r in metrics.iter_rows(named=True)}
    n = {
        (s, sub): max(
            (r["n_queries"] for (m, s2, sub2), r in by.items() if s2 == s and sub2 == sub),
            default=0,
        )
        for s in SETTINGS
        for sub in SUBSETS
    }
    header = ["model"] + [f"{s} {sub} (n={n[(s, sub)]})" for s in SETTINGS for sub in SUBSETS]
    models = sorted({m for m, _, _ in by})
    rows = [[m] + [_cell(by.get((m, s, sub))) for s in SETTINGS for sub in SUBSETS] for m in models]
    mrows = []
    for r in margins.sort("setting", "subset").iter_rows(named=True):
        enough = r["n_queries"] >= MIN_QUERIES
        verdict = ("wins" if r["margin"] > 0 else "loses") if enough else f"n < {MIN_QUERIES}"
        mrows.append(
            [
                r["setting"],
                r["subset"],
                r["n_queries"],
                f"{100 * r['value']:.1f}",
                f"{r['best_baseline']} {100 * r['baseline_value']:.1f}",
                f"{100 * r['margin']:+.1f}",
                f"{r['perm_pvalue']:.4f}",
                verdict,
            ]
        )
    return "\n".join(
        [
            f"### {CATALOGUES[name][2]}",
            "",
            f"Built by `benchmarks/bench_quality.py --catalogues {name}` in {seconds / 60:.1f} min "
            f"on {machine()}. Text encoder `{', '.join(map(str, text_ids))}`; image encoder "
            f"`{', '.join(map(str, image_ids)) or 'none (no images)'}`.",
            "",
            "R-precision / P@10 in %, test split; n = test queries of the subset.",
            "",
            markdown_table(header, rows),
            "",
            "catret-hybrid against the best zero-shot baseline of each (setting, subset), "
            "two-sided sign-flip permutation p over the same queries:",
            "",
            markdown_table(
                ["setting", "subset", "n", "ours", "best baseline", "margin", "p_perm", ""],
                mrows,
            ),
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalogues", nargs="+", default=list(CATALOGUES), choices=list(CATALOGUES))
    ap.add_argument("--work", default="/tmp/catret-quality", type=Path)
    ap.add_argument(
        "--write-docs", action="store_true", help="rewrite the sections in docs/models.md"
    )
    ap.add_argument("--no-build", action="store_true", help="only report on existing data dirs")
    args = ap.parse_args()
    for name in args.catalogues:
        raw = CATALOGUES[name][0]
        if raw is not None and not raw.exists():
            print(f"{name}: {raw} not found, skipped")
            continue
        if args.no_build:
            data, seconds = args.work / name, float("nan")
        else:
            data, seconds = build(name, args.work)
        body = section(name, data, seconds)
        print(body, "\n")
        if args.write_docs:
            write_section(f"quality-{name}", body, MODELS_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
