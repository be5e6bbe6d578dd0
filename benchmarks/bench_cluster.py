"""The sample build on a local Dask cluster with every artefact on S3, against the in-process
local build, in the same run (issue: beyond one machine).

Run from the repository root::

    .venv/bin/python benchmarks/bench_cluster.py                    # README sample, 1,200 products
    .venv/bin/python benchmarks/bench_cluster.py --products 200 --no-write

What it does, with the README's ``catret materialize`` (default encoders, offline profile):

1. generates the sample catalogue once (``--products``) in a temp dir;
2. builds it in-process into a local data dir (the baseline);
3. starts an S3-compatible server (moto) on 127.0.0.1 and builds the same catalogue with
   ``CATRET_EXECUTOR=dask`` on a per-run ``LocalCluster`` of ``--workers`` processes, with
   ``CATRET_TABLE_STORE`` / ``CATRET_ARTEFACT_STORE`` on ``s3://``;
4. prints per-step wall times of both (from each run's Dagster event log), which worker process
   ran each step, the bytes on the store per prefix (what went over the network at least once),
   and whether ``metrics`` is equal.

Timings are wall seconds on a shared 2-core machine: the ratio is what to read, and the load
average before and after says how quiet the machine was. The table goes to the ``cluster``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, step_seconds, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=1200, help="Generated products (1200).")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (2).")
    p.add_argument("--keep", default="", help="Keep the data under this dir (default: temp).")
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


def materialize(data: Path, raw: Path, mirror: Path, extra: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    env |= {
        "CATRET_DATA_DIR": str(data),
        "CATRET_RAW_ROOT": str(raw),
        "CATRET_IMAGE_MIRROR": str(mirror),
        **extra,
    }
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "materialize", "--data-dir", str(data)]
    log = data.parent / f"{data.name}.log"
    start = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"build into {data} failed (rc {rc}); see {log}")
    return seconds


def step_times(data: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Wall seconds and process id per step of the last run in the data dir's instance."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = data / "dagster_home"
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return step_seconds(instance, instance.get_runs(limit=1)[0].run_id)


def store_bytes(fs, bucket: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, info in fs.find(bucket, detail=True).items():
        parts = key.split("/")
        prefix = "tables" if parts[1] == "assets" else parts[2]
        out[prefix] = out.get(prefix, 0) + int(info["size"])
    return out


def main(argv: list[str] | None = None) -> None:
    import polars as pl

    from catret_pipeline.sample.generator import generate_sample
    from catret_pipeline_tests.object_store import s3_server

    args = parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        sample = generate_sample(root / "sample", n_products=args.products).out_dir
        raw, mirror = sample / "xmarket", sample / "images"
        local_s = materialize(root / "local", raw, mirror, {})
        local_steps, local_pids = step_times(root / "local")
        with s3_server() as s3:
            bucket = s3.bucket("catret-bench")
            extra = {
                **s3.env,
                "CATRET_EXECUTOR": "dask",
                "CATRET_MAX_CONCURRENT": str(args.workers),
                "CATRET_TABLE_STORE": f"{bucket}/assets",
                "CATRET_ARTEFACT_STORE": f"{bucket}/data",
            }
            cluster_s = materialize(root / "cluster", raw, mirror, extra)
            cluster_steps, cluster_pids = step_times(root / "cluster")
            fs = s3.filesystem()
            sizes = store_bytes(fs, "catret-bench")
            with fs.open("catret-bench/assets/metrics.parquet", "rb") as fh:
                remote_metrics = pl.read_parquet(io.BytesIO(fh.read()))
        local_metrics = pl.read_parquet(root / "local" / "assets" / "metrics.parquet")
    load_after = os.getloadavg()

    same = remote_metrics.equals(local_metrics)
    workers = sorted(set(cluster_pids.values()))
    rows = [
        [
            step,
            f"{local_steps.get(step, float('nan')):.1f}",
            f"{cluster_steps[step]:.1f}",
            f"w{workers.index(cluster_pids[step]) + 1}" if step in cluster_pids else "-",
        ]
        for step in sorted(cluster_steps, key=cluster_steps.get, reverse=True)[:20]
    ]
    rows.append(["**whole build (wall)**", f"{local_s:.1f}", f"{cluster_s:.1f}", ""])
    table = markdown_table(["step", "in-process, local s", "Dask + S3 s", "worker"], rows)
    size_rows = [[k, f"{v / 1e6:.2f}"] for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])]
    command = "benchmarks/bench_cluster.py " + shlex.join(argv or sys.argv[1:])
    body = "\n".join(
        [
            "## Local Dask cluster with every artefact on S3",
            "",
            "Written by `benchmarks/bench_cluster.py` (see its docstring).",
            "",
            f"- Machine: {machine()}",
            f"- Command (repository root): `.venv/bin/python {command.strip()}`",
            "- Load average before {:.2f}/{:.2f}/{:.2f}, after {:.2f}/{:.2f}/{:.2f} on 2 cores.".format(
                *load_before, *load_after
            ),
            f"- Catalogue: {args.products:,} generated products, default (offline) encoders; the "
            f"cluster run: {args.workers} Dask worker processes (per-run `LocalCluster`), tables "
            "and artefacts on a moto S3 server on 127.0.0.1.",
            f"- Steps ran in {len(workers)} worker processes "
            f"({', '.join(f'w{i + 1}: {sum(p == w for p in cluster_pids.values())}' for i, w in enumerate(workers))}); "
            f"the in-process build in {len(set(local_pids.values()))}.",
            f"- `metrics` equal to the local build's: {same}.",
            "",
            "Slowest steps of the cluster run (wall seconds per step):",
            "",
            table,
            "",
            f"Whole build: {cluster_s / local_s:.2f}x the in-process wall time.",
            "",
            "Bytes on the store after the build (each object crossed the network at least once; "
            "staged reads download index binaries again):",
            "",
            markdown_table(["prefix", "MB"], size_rows),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("cluster", body)


if __name__ == "__main__":
    main()
