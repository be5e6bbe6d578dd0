"""Fusion-head training speed on a built catalogue: where a step's time goes, what training
several heads in one stacked step would buy, and the whole ``fusion_models`` training.

Not a test: it needs a data dir whose embedding assets are built, e.g.

    uv run catret materialize --data-dir /tmp/fb --select '*fusion_models'
    uv run python benchmarks/bench_fusion_train.py --data-dir /tmp/fb --write-docs

Three parts, all on the data dir's real training pairs, with ``FusionTrainConfig()`` defaults:

1. Today's step (``objective.batch_loss`` + backward + fused AdamW, 1 torch thread), split into
   forward / backward / optimiser, per batch size.
2. The same K heads trained as one stacked step (``torch.func.stack_module_state`` + ``vmap``
   over ``functional_call``, one fused AdamW over the stacked weights): head-steps/s against
   K separate steps. This is the issue's "batched/grouped matmuls" lever, measured before
   building it into ``train.py``.
3. Every (model, setting) trained as ``fusion_models`` trains it (``prepare_training`` +
   ``run_jobs``) for each ``--plans`` entry (workers x torch threads), with each head's best
   validation R-precision, so plans can be compared at equal quality.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.fusion.config import FusionTrainConfig  # noqa: E402
from catret_pipeline.fusion.features import (  # noqa: E402
    MODEL_SPECS,
    CategoryVectors,
    ProductFeatureTables,
)
from catret_pipeline.fusion.heads import FusionHeads  # noqa: E402
from catret_pipeline.fusion.jobs import prepare_training  # noqa: E402
from catret_pipeline.fusion.loss import bidirectional_info_nce  # noqa: E402
from catret_pipeline.fusion.objective import SplitTensors, batch_loss  # noqa: E402
from catret_pipeline.fusion.runner import run_jobs  # noqa: E402
from catret_pipeline.fusion.train import make_heads, make_optimizer, steps_per_epoch  # noqa: E402
from catret_pipeline.markdown import markdown_table  # noqa: E402
from catret_pipeline.storage.resources import CatretStorage  # noqa: E402

SETTINGS = ("all", "general", "specific")


def load_jobs(data_dir: Path, config: FusionTrainConfig) -> list:
    assets = data_dir / "assets"

    def read(name: str) -> pl.DataFrame:
        return pl.read_parquet(assets / f"{name}.parquet")

    products = ProductFeatureTables.from_frames(
        read("image_embeddings"), read("title_embeddings"), read("attribute_embeddings")
    )
    categories = CategoryVectors.from_frame(read("category_embeddings"))
    pairs, tree = read("evaluation_pairs"), read("category_tree")
    # Artefacts go to a scratch dir: the benchmark must never reuse or overwrite real heads.
    storage = CatretStorage(data_dir=tempfile.mkdtemp(prefix="bench_fusion_"))
    specs = MODEL_SPECS.values() if isinstance(MODEL_SPECS, dict) else MODEL_SPECS
    jobs = []
    for setting in SETTINGS:
        for spec in specs:
            job = prepare_training(
                storage,
                spec,
                setting,
                pairs,
                products,
                categories,
                config,
                category_tree=tree,
                reuse_unchanged=False,
            )
            if not isinstance(job, dict):
                jobs.append(job)
    return jobs


def _timed_steps(step, n: int) -> float:
    for _ in range(5):  # warm-up: allocator, first-call dispatch
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t


def todays_step(job, n: int) -> dict:
    """Steps/s of today's loop body on ``job``'s data, and its forward/backward/optimiser split."""
    config, spec = job.config, job.spec
    train, _ = job.data()
    torch.manual_seed(config.seed)
    heads = make_heads(train, spec, config)
    opt = make_optimizer(heads, config)
    data = SplitTensors.of(train, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    split = {"forward": 0.0, "backward": 0.0, "optimiser": 0.0}

    def step():
        idx = torch.randperm(len(train), generator=gen)[: job.batch_size]
        t0 = time.perf_counter()
        loss = batch_loss(heads, data, idx, spec, config)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        split["forward"] += t1 - t0
        split["backward"] += t2 - t1
        split["optimiser"] += t3 - t2

    heads.train()
    seconds = _timed_steps(step, n)
    total = n + 5
    return {
        "steps_s": n / seconds,
        **{k: v / total * 1e3 for k, v in split.items()},
        "params": sum(p.numel() for p in heads.parameters()),
    }


def stacked_steps(job, k: int, n: int) -> float:
    """Head-steps/s of ``k`` plain heads of ``job``'s shape trained as one vmapped step."""
    from torch.func import functional_call, stack_module_state, vmap

    config = job.config
    train, _ = job.data()
    x = torch.from_numpy(train.products)
    c = torch.from_numpy(train.categories)
    dims = (x.shape[1], c.shape[1], config.proj_dim, config.hidden_dims, config.dropout)
    models = []
    for i in range(k):
        torch.manual_seed(config.seed + i)
        models.append(FusionHeads(*dims))
    params, buffers = stack_module_state(models)
    base = models[0]

    def one(p, b, xb, cb):
        pp, qq = functional_call(base, (p, b), (xb, cb))
        return bidirectional_info_nce(pp, qq, tau=config.tau, lam=config.lam)

    losses = vmap(one, in_dims=(0, 0, None, None))
    opt = torch.optim.AdamW(
        list(params.values()), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randperm(len(x), generator=gen)[: job.batch_size]
        loss = losses(params, buffers, x[idx], c[idx]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return k * n / _timed_steps(step, n)


def whole_training(jobs: list, workers: int, threads: int) -> tuple[float, dict, int]:
    """Wall seconds of training every job as ``fusion_models`` does, per-head best val R-prec."""
    import dataclasses

    planned = [
        dataclasses.replace(j, config=dataclasses.replace(j.config, torch_threads=threads))
        for j in jobs
    ]
    t = time.perf_counter()
    out = run_jobs(planned, workers=workers)
    wall = time.perf_counter() - t
    rprec, steps = {}, 0
    for i, (result, shared) in out.items():
        job = planned[i]
        rprec[f"{job.spec.name}/{job.setting}"] = result.history[result.best_epoch - 1]["val_rprec"]
        if shared is None:
            steps += result.epochs_run * steps_per_epoch(job.n_train, job.batch_size)
    return wall, rprec, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=200, help="timed steps per step measurement")
    ap.add_argument("--stack", type=int, default=4, help="heads per stacked step (part 2)")
    ap.add_argument(
        "--plans",
        default="2x1,1x2",
        help="whole-training plans, WORKERSxTHREADS, comma-separated ('' skips part 3)",
    )
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    config = FusionTrainConfig()
    jobs = load_jobs(args.data_dir, config)
    torch.set_num_threads(1)
    by_batch = {}
    for job in jobs:  # one representative per batch size: the widest plain head
        if job.spec.name == "clip-ita":
            by_batch[job.batch_size] = job
    step_rows = []
    for batch, job in sorted(by_batch.items()):
        today = todays_step(job, args.steps)
        stacked = stacked_steps(job, args.stack, args.steps)
        step_rows.append(
            [
                f"{job.spec.name}/{job.setting}",
                batch,
                f"{today['params'] / 1e6:.2f} M",
                f"{today['steps_s']:.1f}",
                f"{today['forward']:.2f} / {today['backward']:.2f} / {today['optimiser']:.2f}",
                f"{stacked:.1f}",
                f"{stacked / today['steps_s']:.2f}x",
            ]
        )
        print(step_rows[-1], flush=True)
    plan_rows, rprecs = [], {}
    for plan in [p for p in args.plans.split(",") if p]:
        workers, threads = (int(v) for v in plan.split("x"))
        wall, rprec, steps = whole_training(jobs, workers, threads)
        rprecs[plan] = rprec
        plan_rows.append([f"{workers} x {threads}", f"{wall:.1f}", steps, f"{steps / wall:.1f}"])
        print(plan_rows[-1], flush=True)
    plans = list(rprecs)
    rprec_rows = [
        [head, *(f"{rprecs[p][head]:.4f}" for p in plans)]
        for head in (rprecs[plans[0]] if plans else {})
    ]
    load_after = os.getloadavg()
    body = "\n".join(
        [
            "## Fusion training",
            "",
            "Written by `benchmarks/bench_fusion_train.py` (see its docstring).",
            "",
            f"- Machine: {machine()}",
            f"- Command (repository root): `.venv/bin/python benchmarks/bench_fusion_train.py "
            f"--data-dir {args.data_dir} --steps {args.steps} --stack {args.stack} "
            f"--plans {args.plans}{' --write-docs' if args.write_docs else ''}`",
            f"- Load average before {'/'.join(f'{v:.2f}' for v in load_before)}, after "
            f"{'/'.join(f'{v:.2f}' for v in load_after)} on {os.cpu_count()} cores (other "
            f"processes share them); wall time {time.perf_counter() - started:.0f} s.",
            f"- Data: {len(jobs)} (model, setting) jobs of the data dir's sample; "
            "`FusionTrainConfig()` defaults.",
            "",
            f"Steps, 1 torch thread, {args.steps} timed steps each; stacked = {args.stack} "
            "heads of the same shape in one vmapped step, rate in head-steps/s:",
            "",
            markdown_table(
                [
                    "head",
                    "batch",
                    "parameters",
                    "today steps/s",
                    "forward / backward / optimiser ms",
                    "stacked head-steps/s",
                    "stacked vs today",
                ],
                step_rows,
            ),
            "",
            "Whole training of every job (`run_jobs`, as `fusion_models`), per plan:",
            "",
            markdown_table(
                ["workers x threads", "wall s", "optimiser steps", "steps/s"], plan_rows
            ),
            "",
            "Best-epoch validation R-precision per head and plan:",
            "",
            markdown_table(["head", *plans], rprec_rows),
        ]
    )
    print(body)
    if args.write_docs:
        write_section("fusion-train", body)


if __name__ == "__main__":
    main()
