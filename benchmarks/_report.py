"""Shared helpers for benchmark scripts: machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is rewritten by the script named in it; ratios are measured within one run.\n"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), GPU: {gpu}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def write_section(name: str, body: str, doc: Path | None = None) -> None:
    """Replace (or append) the section between ``<!-- name -->`` markers of ``doc``
    (default docs/benchmarks.md)."""
    DOC_ = doc or DOC
    text = DOC_.read_text() if DOC_.exists() else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    DOC_.write_text(text)


def step_seconds(instance, run_id: str) -> tuple[dict[str, float], dict[str, int]]:
    """Wall seconds (STEP_START to STEP_SUCCESS) and the process id that started each step of
    a run, from its event log (a step started twice, after a lost worker, counts its last
    attempt)."""
    begun: dict[str, float] = {}
    steps: dict[str, float] = {}
    pids: dict[str, int] = {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            begun[ev.step_key] = entry.timestamp
            pids[ev.step_key] = ev.pid
        elif ev.event_type_value == "STEP_SUCCESS" and ev.step_key in begun:
            steps[ev.step_key] = entry.timestamp - begun[ev.step_key]
    return steps, pids
