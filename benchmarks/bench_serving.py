"""``catret serve`` latency over HTTP against ``catret search`` (a cold process per query).

Run from the repository root on a materialised data dir, or on a synthetic one it writes::

    .venv/bin/python benchmarks/bench_serving.py --data-dir data            # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_serving.py --data-dir /srv/x --no-write
    .venv/bin/python benchmarks/bench_serving.py --synthetic 200000 --data-dir /tmp/s200k \
        --search-runs 0 --section serving-200k                              # ~15 min

``--synthetic N`` writes N products with the real text encoder's category vectors and
clustered product vectors (benchmarks/_synthetic_serving.py says what is real), then
materialises ``serving_models`` and ``serving_indexes``. Each ``--index`` (``exact``,
``hnsw``: ``CATRET_SERVE_INDEX`` of the server) is measured with its own server in the run.

What it measures, in one run: the real server (``catret serve`` as a subprocess, hot reload
off) on a free loopback port; each client thread keeps one HTTP/1.1 connection (as a site's
backend would) and sends ``GET /api/search?k=10`` for

* precomputed names: category names of the tree (query vector looked up, exact top-k over
  every product of the catalogue);
* new names: names that are not in the tree (encoded by the text encoder, then the head, then
  the same top-k);

with 1 and 8 concurrent clients: p50 / p99 latency of single requests and requests/s overall.
``catret search`` for the same precomputed names (``--search-runs`` cold processes) is the
baseline the issue compares with. Results go to stdout and the ``serving`` section of
docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

NEW_WORDS = ["vintage", "waterproof", "foldable", "kids", "travel", "smart", "eco", "mini"]
NEW_NOUNS = ["lantern", "backpack", "speaker stand", "yoga block", "tea set", "desk organiser"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--requests", type=int, default=400, help="Precomputed requests per run.")
    p.add_argument("--new-requests", type=int, default=120, help="New-name requests per run.")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--search-runs", type=int, default=3, help="Cold `catret search` runs.")
    p.add_argument("--index", nargs="+", default=["exact", "hnsw"], choices=["exact", "hnsw"])
    p.add_argument("--synthetic", type=int, default=0, help="Write N synthetic products first.")
    p.add_argument("--section", default="serving", help="docs/benchmarks.md section name.")
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str, port: int, index: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "serve", "--data-dir", data_dir]
    cmd += ["--port", str(port), "--reload-interval", "0"]
    env = os.environ | {"CATRET_SERVE_INDEX": index}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit("catret serve exited; run it by hand to see why")
    raise SystemExit("catret serve did not come up in 900 s")


def run_clients(port: int, names: list[str], n: int, clients: int) -> tuple[list[float], float]:
    """Latencies (s) of ``n`` requests spread over ``clients`` threads, and the wall time."""
    lat: list[float] = []
    lock = threading.Lock()
    per = [names[i::clients] for i in range(clients)]
    counts = [n // clients + (i < n % clients) for i in range(clients)]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for j in range(counts[i]):
            q = urllib.parse.quote(per[i][j % len(per[i])])
            t = time.perf_counter()
            conn.request("GET", f"/api/search?q={q}&k=10")
            r = conn.getresponse()
            body = r.read()
            mine.append(time.perf_counter() - t)
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - start


def cold_search(data_dir: str, name: str, model: str) -> float:
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "search", name, "--data-dir", data_dir]
    cmd += ["--model", model, "--setting", "all", "-k", "10"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def index_summary(data_dir: Path) -> list[str]:
    path = data_dir / "assets" / "serving_indexes.parquet"
    if not path.exists():
        return ["No `serving_indexes` table (a build older than the asset)."]
    return [
        f"`serving_indexes` {r['setting']}: {r['n_items']:,} items, {r['action']} in "
        f"{r['build_seconds']:.1f} s, ef {r['ef']}, recall@10 {r['recall_at_10']:.4f}, "
        f"{r['bytes'] / 2**20:.0f} MiB."
        for r in pl.read_parquet(path)
        .filter(pl.col("index_path").is_not_null())
        .iter_rows(named=True)
        if r["setting"] == "all"
    ]


def measure(data_dir: str, index: str, names: list[str], new: list[str], args) -> dict:
    """One server with ``CATRET_SERVE_INDEX=index``: its start-up, /health and latency rows."""
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(data_dir, port, index)
    startup = time.perf_counter() - t0
    rows = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())["settings"]["all"]
        label = f"{health['index']} ({health.get('index_source', health['index'])})"
        run_clients(port, names, 20, 1)  # warm up: thread pool, caches
        run_clients(port, new, 5, 1)
        for kind, qs, n in (
            ("precomputed", names, args.requests),
            ("new name", new, args.new_requests),
        ):
            for c in args.clients:
                lat, wall = run_clients(port, qs, n, c)
                ms = np.asarray(lat) * 1000
                rows.append(
                    [
                        kind,
                        label,
                        c,
                        len(lat),
                        f"{np.percentile(ms, 50):.1f}",
                        f"{np.percentile(ms, 99):.1f}",
                        f"{len(lat) / wall:.0f}",
                    ]
                )
                print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"rows": rows, "startup": startup, "health": health, "label": label}


def main(argv=None) -> None:
    args = parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve())
    built = []
    if args.synthetic:
        from _synthetic_serving import write_synthetic

        t = time.perf_counter()
        info = write_synthetic(Path(data_dir), args.synthetic)
        built.append(
            f"Synthetic catalogue (benchmarks/_synthetic_serving.py): {info['n_products']:,} "
            f"products, {info['n_nodes']:,} tree nodes, dim {info['dim']}; tables written and "
            f"serving assets materialised in {time.perf_counter() - t:.0f} s."
        )
    built += index_summary(Path(data_dir))
    print(*built, sep="\n", flush=True)
    tree = pl.read_parquet(Path(data_dir) / "assets" / "category_tree.parquet")
    names = sorted(set(tree["name"]))
    rng = random.Random(0)
    rng.shuffle(names)
    new = [f"{a} {b}" for a in NEW_WORDS for b in NEW_NOUNS if f"{a} {b}" not in set(names)]
    rng.shuffle(new)
    runs = [measure(data_dir, index, names, new, args) for index in args.index]
    health = runs[0]["health"]
    model, n_products = health["model"], health["products_indexed"]
    rows = [r for run in runs for r in run["rows"]]
    if args.search_runs:
        cold = [
            cold_search(data_dir, names[i % len(names)], model) for i in range(args.search_runs)
        ]
        cold_ms = np.asarray(cold) * 1000
        rows.append(
            [
                f"`catret search` (cold process, {model}, test split only)",
                "hnsw_indexes",
                1,
                len(cold),
                f"{np.percentile(cold_ms, 50):.0f}",
                f"{cold_ms.max():.0f} (max)",
                f"{len(cold) / sum(cold):.2f}",
            ]
        )
    table = markdown_table(
        ["query", "top-k (source)", "clients", "requests", "p50 ms", "p99 ms", "req/s"], rows
    )
    command = " ".join(["benchmarks/bench_serving.py", *(argv or sys.argv[1:])])
    startups = ", ".join(f"{r['label']} {r['startup']:.1f} s" for r in runs)
    body = "\n".join(
        [
            f"## Serving: `catret serve` over HTTP ({n_products:,} products)",
            "",
            f"`{command}`; {machine()}.",
            *built,
            f"Every one of the {n_products:,} products indexed; {len(names)} tree names; serving "
            f"model `{model}` (setting `all`), k=10. Server start to first answer: {startups} "
            "(imports, tables, product vectors, index, encoder warm-up). One keep-alive "
            "connection per client thread; client and server share the 2 cores.",
            "",
            table,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
