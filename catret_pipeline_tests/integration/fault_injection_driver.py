"""Driver of test_fault_injection.py: SIGKILL a build at every writing step of the graph in turn.

Run as ``python -m catret_pipeline_tests.integration.fault_injection_driver DATA_DIR RAW_ROOT MODE`` with MODE
``reference`` (one uninterrupted build) or ``chain`` (kill, resume, kill the next step, ...); it
prints a JSON summary and keeps its rename logs in ``DATA_DIR.renames/`` beside the data dir.

Every file the pipeline writes goes through ``storage.atomic`` (temp file, fsync, ``os.replace``),
so a rename into the data dir is the moment a step makes its work visible. In a child process
``os.replace`` is wrapped: each rename is logged with the Dagster step that made it (found on the
stack), and the process SIGKILLs itself right after the first rename of a step not killed yet,
i.e. with part of that step's output on disk and the run's events lost. The next child runs every
step not yet completed since its kill, and so on, until a run ends by itself: every writing step
has then been killed once and resumed. The parent imports once and forks, so each run costs its
work rather than the imports.

A step seen before the one killed has finished (the in-process executor runs one step at a time).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import dagster as dg

from catret_pipeline.definitions import build_definitions

#: Small but complete: every model trains, every index is built, every report is written.
#: More runs than the graph has steps means a step is killed again and again.
MAX_RUNS = 60

#: What the steps import lazily (inside their functions): imported here, in the parent, so a
#: forked child does not pay seconds of imports (torch, sentence-transformers, ...) in every run.
LAZY_IMPORTS = (
    "torch",
    "torchvision.transforms",
    "open_clip",
    "sentence_transformers",
    "huggingface_hub",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "scipy.stats",
    "bm25s.stopwords",
)

RUN_CONFIG = {
    "ops": {
        "fusion_models": {"config": {"epochs": 2, "min_steps": 0, "workers": 1}},
    }
}


def _current_step() -> str | None:
    # Image downloads rename from a thread pool: their step is the one the main thread is in.
    main = sys._current_frames().get(threading.main_thread().ident)
    for frame in (sys._getframe(2), main):
        step = _step_on_stack(frame)
        if step is not None:
            return step
    return None


def _step_on_stack(frame) -> str | None:
    while frame is not None:
        ctx = frame.f_locals.get("step_context")
        step = getattr(ctx, "step", None)
        if step is not None and hasattr(step, "key"):
            return step.key
        frame = frame.f_back
    return None


def _run(data_dir: Path, raw_root: str, done: set[str], killed: set[str] | None, log: Path):
    """One build in this (child) process of every step not in ``done``; with ``killed``, SIGKILL
    after the first rename of the first step not in it."""
    from catret_pipeline.storage.temp_files import remove_stale_temp_files

    real_replace = os.replace
    root = str(data_dir.resolve())

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        dst = os.path.abspath(os.fspath(dst))
        if not dst.startswith(root + os.sep):
            return
        step = _current_step() or "?"
        with open(log, "a") as fh:  # a write(2) survives the SIGKILL below
            fh.write(json.dumps({"step": step, "path": os.path.relpath(dst, root)}) + "\n")
        if killed is not None and step not in killed:
            os.kill(os.getpid(), signal.SIGKILL)

    # What `catret materialize` does under its build lock before a run: the killed runs'
    # temporaries go.
    remove_stale_temp_files(data_dir)
    os.replace = replace
    defs = build_definitions(str(data_dir), raw_root)
    job = defs.resolve_job_def("catret_build")
    graph = defs.resolve_asset_graph()
    ops = {ad.node_def.name: ad.keys for ad in graph.assets_defs}
    todo = [op for op in ops if op not in done]
    if done:
        job = job.get_subset(asset_selection={key for op in todo for key in ops[op]})
    run_config = {"ops": {k: v for k, v in RUN_CONFIG["ops"].items() if k in todo}}
    result = job.execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        sys.stderr.write(f"run failed at {failed}\n")
        os._exit(2)
    os._exit(0)


def _fork(*args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _run(*args)
        except BaseException as exc:  # the child must never return into the parent's loop
            sys.stderr.write(f"child error: {exc!r}\n")
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _steps(log: Path) -> list[str]:
    seen: list[str] = []
    if log.exists():
        for line in log.read_text().splitlines():
            step = json.loads(line)["step"]
            if step not in seen:
                seen.append(step)
    return seen


def main() -> None:
    data_dir, raw_root, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir.parent / f"{data_dir.name}.renames"
    logs.mkdir(exist_ok=True)
    if mode == "reference":
        code = _fork(data_dir, raw_root, set(), None, logs / "reference.jsonl")
        print(json.dumps({"code": code, "steps": _steps(logs / "reference.jsonl")}))
        return
    done: set[str] = set()
    kills: list[dict] = []
    for i in range(MAX_RUNS):
        log = logs / f"run{i:02d}.jsonl"
        code = _fork(data_dir, raw_root, done, {k["target"] for k in kills}, log)
        seen = _steps(log)
        if code != -signal.SIGKILL:
            print(json.dumps({"kills": kills, "final_code": code, "final_steps": seen}))
            return
        kills.append({"target": seen[-1], "seen": seen})
        killed = {k["target"] for k in kills}
        # Finished in this run after their own kill in an earlier one: not run again.
        done |= {s for s in seen[:-1] if s in killed}
    print(json.dumps({"kills": kills, "error": f"still killing after {MAX_RUNS} runs"}))


if __name__ == "__main__":
    main()
