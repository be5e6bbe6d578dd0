"""The whole build at the paper's scale (issue #15 item 1): per-step wall time, peak memory and
disk, and how each step's cost grows with the catalogue; then a 1 % refresh at the largest size.

Run from the repository root::

    .venv/bin/python benchmarks/bench_paper_scale.py                         # 1,200 / 10,000 / 39,000
    .venv/bin/python benchmarks/bench_paper_scale.py --products 1200,39000 --keep /tmp/paper

For each ``--products`` size, on a fresh data dir: generates a paper-shaped catalogue
(``shape="paper"``: 5,471 categories on 9 levels at 39k, ~5.9 attributes per product, 64 px
images; docs/sample.md), runs the README's ``catret materialize`` on it (default encoders:
MPNet and the EfficientNet-Lite0 tower; one step at a time), and records

- wall seconds per step (the run's Dagster event log),
- peak resident memory of the build's process tree while each step ran (sampled every 0.5 s),
- bytes on disk per table asset and per artefact folder.

Growth exponents per step are ``log(t2 / t1) / log(n2 / n1)`` between consecutive sizes (1 =
linear). At the largest size it then changes ``--change`` (1 %) of the products as
``bench_refresh.py`` does and times the refresh. Results are written to a JSON file after each
build (``--keep``/results.json), so a run cut short keeps what it measured (``--resume`` goes on
from it); the Markdown goes to the ``paper-scale`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, step_seconds, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--products", default="1200,10000,39000", help="Sizes, comma-separated.")
    p.add_argument("--change", type=float, default=0.01, help="Refresh: fraction changed (0.01).")
    p.add_argument(
        "--no-refresh", action="store_true", help="Skip the refresh at the largest size."
    )
    p.add_argument("--keep", default="", help="Keep the data under this dir (default: temp).")
    p.add_argument(
        "--resume",
        action="store_true",
        help="With --keep: sizes already in its results.json are not built again.",
    )
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CATRET_X=VALUE",
        help="Environment for the builds and the refresh (the caller's CATRET_ variables are "
        "not passed on), e.g. CATRET_CLIP_PRECISION=fp32 to refresh a data dir built with it.",
    )
    return p.parse_args(argv)


class TreeMemory:
    """Resident memory of a process and its children, sampled in a thread: (time, bytes)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.samples = pid, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.samples.append((time.time(), total))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak(self, start: float, end: float) -> int:
        inside = [b for t, b in self.samples if start <= t <= end]
        return max(inside, default=0)


def materialize(
    data: Path, raw: Path, mirror: Path, extra: dict[str, str] | None = None
) -> tuple[float, TreeMemory]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATRET_", "DAGSTER_HOME"))}
    env |= {"CATRET_RAW_ROOT": str(raw), "CATRET_IMAGE_MIRROR": str(mirror), **(extra or {})}
    cmd = [sys.executable, "-m", "catret_pipeline.cli", "materialize", "--data-dir", str(data)]
    log = data.parent / f"{data.name}.log"
    start = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
        memory = TreeMemory(proc.pid)
        rc = proc.wait()
        memory.stop()
    if rc != 0:
        raise SystemExit(f"build into {data} failed (rc {rc}); see {log}")
    return time.perf_counter() - start, memory


def step_windows(data: Path) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Seconds and (start, end) timestamps per step of the data dir's last run."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(data / "dagster_home"))) as inst:
        run_id = inst.get_runs(limit=1)[0].run_id
        seconds, _ = step_seconds(inst, run_id)
        ends: dict[str, float] = {}
        for entry in inst.all_logs(run_id):
            ev = entry.dagster_event
            if ev is not None and ev.step_key and ev.event_type_value == "STEP_SUCCESS":
                ends[ev.step_key] = entry.timestamp
    return seconds, {k: (ends[k] - seconds[k], ends[k]) for k in seconds}


def disk_usage(data: Path) -> dict[str, int]:
    """Bytes per table asset (``assets/<name>``) and per artefact folder."""
    out: dict[str, int] = {}
    for path in data.rglob("*"):
        if not path.is_file() or "dagster_home" in path.parts or "sample" in path.parts:
            continue
        rel = path.relative_to(data).parts
        key = f"assets/{Path(rel[1]).stem}" if rel[0] == "assets" and len(rel) > 1 else rel[0]
        out[key] = out.get(key, 0) + path.stat().st_size
    return out


def one_build(root: Path, n: int, extra: dict[str, str]) -> dict:
    from catret_pipeline.sample.generator import generate_sample

    work = root / f"n{n}"
    t0 = time.perf_counter()
    sample = generate_sample(work / "sample", n_products=n, shape="paper").out_dir
    generate_s = time.perf_counter() - t0
    wall, memory = materialize(work / "data", sample / "xmarket", sample / "images", extra)
    seconds, windows = step_windows(work / "data")
    return {
        "products": n,
        "generate_s": round(generate_s, 1),
        "wall_s": round(wall, 1),
        "steps": {k: round(v, 2) for k, v in seconds.items()},
        "peak_rss": {k: memory.peak(*w) for k, w in windows.items()},
        "peak_rss_build": max((b for _, b in memory.samples), default=0),
        "disk": disk_usage(work / "data"),
        "sample": str(sample),
        "data": str(work / "data"),
    }


def refresh(result: dict, fraction: float, extra: dict[str, str]) -> dict:
    from bench_refresh import change_catalogue

    sample, data = Path(result["sample"]), Path(result["data"])
    changed = change_catalogue(sample / "xmarket", sample / "images", fraction)
    wall, memory = materialize(data, sample / "xmarket", sample / "images", extra)
    seconds, _ = step_windows(data)
    return {
        "changed": changed,
        "wall_s": round(wall, 1),
        "steps": seconds,
        "peak": max((b for _, b in memory.samples), default=0),
    }


def exponent(t1: float, t2: float, n1: int, n2: int) -> float | None:
    if t1 <= 0.05 or t2 <= 0.05:  # too short to say anything
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def changed_text(changed) -> str:
    if not isinstance(changed, dict):
        return str(changed)
    parts = ", ".join(f"{v} {k}" for k, v in changed.items() if k != "total")
    return f"{changed.get('total', '?')} products ({parts})"


def render(results: list[dict], refreshed: dict | None, load: tuple, command: str) -> str:
    sizes = [r["products"] for r in results]
    big = results[-1]
    steps = sorted(big["steps"], key=big["steps"].get, reverse=True)
    pairs = list(zip(results[:-1], results[1:], strict=True))
    head = ["step", *[f"{n:,} s" for n in sizes], f"peak MB at {sizes[-1]:,}"]
    head += [f"exponent {a['products']:,}->{b['products']:,}" for a, b in pairs]

    def exponents(value) -> list[str]:
        es = [exponent(value(a), value(b), a["products"], b["products"]) for a, b in pairs]
        return ["-" if e is None else f"{e:.2f}" for e in es]

    rows = []
    for step in steps[:25]:
        row = [step, *[f"{r['steps'].get(step, float('nan')):.1f}" for r in results]]
        row.append(f"{big['peak_rss'].get(step, 0) / 1e6:.0f}")
        rows.append(row + exponents(lambda r, step=step: r["steps"].get(step, 0)))
    whole = ["**whole build (wall)**", *[f"{r['wall_s']:.0f}" for r in results]]
    whole.append(f"{big['peak_rss_build'] / 1e6:.0f}")
    rows.append(whole + exponents(lambda r: r["wall_s"]))
    disk = sorted(big["disk"].items(), key=lambda kv: -kv[1])[:15]
    lines = [
        "## Paper-scale build",
        "",
        "Written by `benchmarks/bench_paper_scale.py` (see its docstring).",
        "",
        f"- Machine: {machine()}",
        f"- Command (repository root): `.venv/bin/python {command}`",
        "- Load average before {:.2f}/{:.2f}/{:.2f}, after {:.2f}/{:.2f}/{:.2f} on 2 cores.".format(
            *load
        ),
        "- Catalogues: "
        + ", ".join(f"{n:,} products" for n in sizes)
        + " (sample generator, `shape=paper`, 64 px images); README command, default encoders.",
        *[f"- {r['products']:,} products: {r['note']}" for r in results if r.get("note")],
        "",
        markdown_table(head, rows),
        "",
        f"Disk at {sizes[-1]:,} products (largest 15):",
        "",
        markdown_table(["asset / folder", "MB"], [[k, f"{v / 1e6:.1f}"] for k, v in disk]),
    ]
    if refreshed:
        lines += [
            "",
            f"Refresh at {sizes[-1]:,} products with {changed_text(refreshed['changed'])} changed: "
            f"{refreshed['wall_s']:.0f} s, {refreshed['wall_s'] / big['wall_s'] * 100:.1f} % of "
            "the full build. Its 12 longest steps:",
            "",
            markdown_table(
                ["step", "refresh s", "full build s"],
                [
                    [k, f"{v:.1f}", f"{big['steps'].get(k, float('nan')):.1f}"]
                    for k, v in sorted(refreshed["steps"].items(), key=lambda kv: -kv[1])[:12]
                ],
            ),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    sizes = [int(x) for x in args.products.split(",") if x.strip()]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        done = root / "results.json"
        earlier = json.loads(done.read_text()) if args.resume and done.exists() else []
        results: list[dict] = []
        refreshed = None
        for n in sizes:
            kept = [r for r in earlier if r["products"] == n]
            results.append(kept[0] if kept else one_build(root, n, extra))
            done.write_text(json.dumps(results, indent=1))
            print(f"{n:,} products: {results[-1]['wall_s']} s", flush=True)
        if not args.no_refresh:
            refreshed = refresh(results[-1], args.change, extra)
            (root / "refresh.json").write_text(json.dumps(refreshed, indent=1, default=str))
    command = "benchmarks/bench_paper_scale.py " + " ".join(argv or sys.argv[1:])
    body = render(results, refreshed, (*load_before, *os.getloadavg()), command.strip())
    print(body)
    if not args.no_write:
        write_section("paper-scale", body)


if __name__ == "__main__":
    main()
