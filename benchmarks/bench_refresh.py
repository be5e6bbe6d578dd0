"""Full build vs catalogue refresh with 1 % of the products changed (issue: scheduled refresh).

Run from the repository root::

    .venv/bin/python benchmarks/bench_refresh.py                      # 10,000 products, ~20 min
    .venv/bin/python benchmarks/bench_refresh.py --products 2000 --no-write

What it does, in one process, on a generated catalogue in XMarket layout (the sample generator,
offline profile: tiny random-init CLIP tower and the bundled MiniLM):

1. generates ``--products`` products with images and builds everything from an empty data dir
   (the ``catret_build`` job, as ``catret materialize`` runs it): the *full build*;
2. changes ``--change`` (1 %) of the products in the raw files: a third get a new title, a third
   are removed, a third are new products (new asins, new images);
3. runs the same job again over the same data dir: the *refresh*;
4. prints wall time of both and per step, the ratio, and what the refresh reused (rows encoded per
   embedding asset, fusion heads reused or retrained, HNSW indexes updated or rebuilt).

The refresh runs with the default configuration (fusion heads retrain only past
``retrain_fraction`` = 5 % of changed training data; HNSW indexes are patched in place), which is
what the schedule runs. The table goes to the ``refresh`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, step_seconds, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EMBEDDINGS = (
    "image_embeddings",
    "title_embeddings",
    "title_clip_embeddings",
    "attribute_embeddings",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=10_000, help="Generated products (10000).")
    p.add_argument("--change", type=float, default=0.01, help="Fraction changed (0.01).")
    p.add_argument("--keep", default="", help="Keep the data under this dir (default: temp).")
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


def change_catalogue(raw: Path, mirror: Path, fraction: float, seed: int = 7) -> dict[str, int]:
    """Edit titles of, remove and add one third each of ``fraction`` x the valid products."""
    import random

    from catret_pipeline.sample.edits import add_mirror_image, read_raw, write_raw

    files = read_raw(raw)
    records = [(rel, r) for rel, recs in files.items() for r in recs if isinstance(r, dict)]
    asins = sorted(
        {r["asin"] for _, r in records if isinstance(r.get("asin"), str) and r.get("title")}
    )
    n = max(3, round(fraction * len(asins)))
    rng = random.Random(seed)
    picked = rng.sample(asins, 2 * (n // 3) + 1)
    edited, removed = set(picked[: n // 3]), set(picked[n // 3 : 2 * (n // 3)])
    template_asin = picked[-1]
    n_added = n - len(edited) - len(removed)
    template = next(r for _, r in records if r.get("asin") == template_asin)
    for rel, recs in files.items():
        files[rel] = [r for r in recs if not (isinstance(r, dict) and r.get("asin") in removed)]
        for r in files[rel]:
            if isinstance(r, dict) and r.get("asin") in edited:
                r["title"] = f"{r['title']} (2026 edition)"
    first = next(iter(files))
    for i in range(n_added):
        rec = {**template, "asin": f"BZREFRESH{i:05d}", "title": f"{template['title']} Mk {i}"}
        rec["imgUrl"] = add_mirror_image(mirror, f"REFRESHimg{i:05d}", seed=1000 + i, size=64)
        files[first].append(rec)
    write_raw(raw, files)
    return {"edited": len(edited), "removed": len(removed), "added": n_added, "total": n}


def run_build(data: Path, raw: Path) -> tuple[float, dict[str, float], object]:
    import dagster as dg

    from catret_pipeline.definitions import build_definitions

    defs = build_definitions(data_dir=str(data), raw_root=str(raw))
    job = defs.resolve_job_def("catret_build")
    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, raise_on_error=True)
    seconds = time.perf_counter() - started
    steps, _ = step_seconds(instance, result.run_id)
    return seconds, steps, result


def _meta(result, asset: str) -> dict:
    for mat in result.asset_materializations_for_node(asset):
        return {k: v.value for k, v in mat.metadata.items()}
    return {}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import polars as pl

    from catret_pipeline.sample.generator import generate_sample

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="catret-bench-refresh-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        sample = generate_sample(root / "sample", n_products=args.products, broken_lines=False)
        gen_s = time.perf_counter() - t0
        raw, mirror = sample.out_dir / "xmarket", sample.out_dir / "images"
        data = root / "data"
        os.environ["CATRET_IMAGE_MIRROR"] = str(mirror)
        os.environ["CATRET_PROFILE"] = "offline"
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
        (root / "dagster_home").mkdir(exist_ok=True)
        print(
            f"generated {sample.n_products} products in {gen_s:.0f} s; full build ...", flush=True
        )
        full_s, full_steps, _ = run_build(data, raw)
        print(f"full build {full_s:.0f} s; changing the catalogue ...", flush=True)
        change = change_catalogue(raw, mirror, args.change)
        print(f"changed {change}; refresh ...", flush=True)
        refresh_s, refresh_steps, refresh = run_build(data, raw)
        print(f"refresh {refresh_s:.0f} s", flush=True)
        fusion = pl.read_parquet(data / "assets" / "fusion_models.parquet")
        indexes = pl.read_parquet(data / "assets" / "hnsw_indexes.parquet")
        n_products = pl.read_parquet(data / "assets" / "products.parquet").height
    load_after = os.getloadavg()

    top = sorted(full_steps, key=full_steps.get, reverse=True)
    rows = [
        [
            step,
            f"{full_steps[step]:.1f}",
            f"{refresh_steps.get(step, float('nan')):.1f}",
            f"{full_steps[step] / refresh_steps[step]:.1f}x" if refresh_steps.get(step) else "-",
        ]
        for step in top
    ]
    rows.append(
        ["**whole job (wall)**", f"{full_s:.1f}", f"{refresh_s:.1f}", f"{full_s / refresh_s:.1f}x"]
    )
    table = markdown_table(["step", "full build s", "refresh s", "full / refresh"], rows)
    encoded = {name: _meta(refresh, name) for name in EMBEDDINGS}
    enc_line = "; ".join(
        f"{name}: {m.get('encoded', '?')} encoded, {m.get('reused', '?')} reused, "
        f"{m.get('dropped', '?')} dropped"
        for name, m in encoded.items()
    )
    fus = fusion.group_by("status").len().sort("status")
    fus_line = ", ".join(f"{s} {n}" for s, n in fus.iter_rows())
    idx = indexes.group_by("action").len().sort("action")
    idx_line = ", ".join(f"{a} {n}" for a, n in idx.iter_rows())
    cmd_args = [a if not Path(a).is_absolute() else os.path.relpath(a, REPO) for a in sys.argv]
    facts = "\n".join(
        [
            f"- Machine: {machine()}",
            f"- Command (repository root): `.venv/bin/python {shlex.join(cmd_args)}`",
            f"- Load average before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
            f"{'/'.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} cores.",
            f"- Catalogue: {args.products} generated products (sample generator, offline profile); "
            f"after the change {n_products} products. Changed {change['total']} "
            f"({100 * change['total'] / args.products:.1f} %): {change['edited']} titles edited, "
            f"{change['removed']} removed, {change['added']} added with new images.",
            f"- Refresh reuse: {enc_line}.",
            f"- Fusion heads after the refresh: {fus_line} (default retrain_fraction 5 %); "
            f"HNSW indexes: {idx_line}.",
        ]
    )
    reading = (
        f"Reading: with {100 * args.change:.0f} % of the catalogue changed, the scheduled refresh "
        f"took {refresh_s:.0f} s against {full_s:.0f} s for the full build, "
        f"{full_s / refresh_s:.1f}x faster. What is left in the refresh is work proportional to "
        "the catalogue rather than to the change: reading and hashing every raw line, the "
        "product and split tables, joining embeddings to find what changed, re-projecting the "
        "test collections through the (reused) heads, ranking every test query and the metrics."
    )
    body = (
        "## Catalogue refresh vs full build\n\n"
        "Written by `benchmarks/bench_refresh.py` (see its docstring).\n\n"
        f"{facts}\n\n{table}\n\n{reading}\n"
    )
    print()
    print(body)
    if not args.no_write:
        write_section("refresh", body)
        print(f"written to {os.path.relpath(REPO / 'docs' / 'benchmarks.md')}")


if __name__ == "__main__":
    main()
