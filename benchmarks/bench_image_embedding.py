"""Image embedding throughput (JPEG decode included) of the project's CLIP image path.

Run from the repository root::

    .venv/bin/python benchmarks/bench_image_embedding.py            # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/bench_image_embedding.py --images 256 --batch-sizes 8,32,64

What it measures, all in one process so that the ratios are comparable on a shared machine:

* the project's path, ``OpenClipEncoder.encode_images`` (catret_pipeline/encoders), with
  ``model_name="ViT-B-32"``, ``pretrained=""`` (seeded random init: speed depends only on the
  architecture) at fp32 and bf16 (weights cast to bfloat16) for each batch size; it decodes JPEGs
  with ``Image.draft`` and overlaps decoding of batch k+1 with the forward pass of batch k;
* a naive baseline: for each file ``Image.open``, ``convert("RGB")``, open_clip preprocess,
  ``model.encode_image`` on a batch of one, fp32, full-size decode;
* dense matmul throughput (n x n @ n x n) at fp32 and bf16, the practical roofline of the machine;
* the image tower's FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode`` and
  checked against the analytic ViT count.

FLOP convention: one multiply-add = 2 FLOPs everywhere. FlopCounterMode counts an (m x k) @ (k x n)
product as 2*m*n*k, and the matmul benchmark counts 2*n^3 per product, so "achieved model GFLOP/s"
(= FLOPs per image x img/s) and the matmul GFLOP/s are directly comparable. Only matmuls,
convolutions and attention are counted (layer norms, GELU and softmax are not), as usual.

The machine is shared, so every configuration runs on one chunk of images (``--chunk``, default
two of the largest batches) in turn, the order rotating from round to round, for ``--repeats``
passes over the images. Each rate is total work / total time over all its rounds, so every
configuration sees the same mix of quiet and busy moments; the per-round min-max shows the noise.
The load average is printed and written with the results. The table goes to stdout and to the
``image-embedding`` section of docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, md_table, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "ViT-B-32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128, help="JPEG files to encode (128).")
    p.add_argument("--size", type=int, default=500, help="Side of the square JPEGs in px (500).")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality (85).")
    p.add_argument("--batch-sizes", default="8,32", help="Comma-separated batch sizes (8,32).")
    p.add_argument("--repeats", type=int, default=2, help="Passes over the images (2).")
    p.add_argument(
        "--chunk", type=int, default=0, help="Images per round; 0 = 2 x largest batch size."
    )
    p.add_argument("--matmul-n", type=int, default=2048, help="Square matmul side (2048).")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default.")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto).")
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


# ---- inputs ---------------------------------------------------------------------------------


def write_jpegs(directory: Path, n: int, size: int, quality: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields plus sensor-like noise, so file sizes and decode
    cost resemble product photos rather than flat colour (too cheap) or white noise (too dear)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        noisy = base.astype(np.float32) + rng.normal(0.0, 6.0, size=base.shape)
        path = directory / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=quality)
        paths.append(path)
    return paths


# ---- measurements ---------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def matmul_flops(dtype, n: int, device: str, min_seconds: float = 0.5) -> float:
    """FLOPs done by dense n x n @ n x n products (2*n^3 each) in about ``min_seconds``."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            a @ b
        sync(device)
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds and reps >= 3:
                break
    return 2.0 * n**3 * reps


def count_image_flops(clip) -> tuple[float, dict[str, float]]:
    """FLOPs of one image through the image tower (FlopCounterMode, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    s = clip.image_size
    per_batch = {}
    by_op: dict[str, float] = {}
    for b in (1, 2):
        x = torch.zeros(b, 3, s, s, device=clip.device, dtype=next(clip.model.parameters()).dtype)
        # Under no_grad nn.MultiheadAttention takes its fused fast path, an op FlopCounterMode
        # does not know (it would miss the qkv/out projections and attention, a third of the
        # tower); an input that requires grad forces the decomposed path, same arithmetic.
        x.requires_grad_(True)
        counter = FlopCounterMode(display=False)
        with torch.enable_grad(), counter:
            clip.model.encode_image(x)
        per_batch[b] = counter.get_total_flops()
        if b == 1:
            for op, v in counter.get_flop_counts().get("Global", {}).items():
                by_op[str(op).removeprefix("aten.")] = float(v)
    if per_batch[2] != 2 * per_batch[1]:
        print(f"note: FLOPs not linear in batch: {per_batch}", file=sys.stderr)
    return float(per_batch[1]), by_op


def analytic_vit_flops(cfg: dict) -> float:
    """2 x multiply-adds of an open_clip ViT image tower (patch conv, blocks, projection)."""
    v = cfg["vision_cfg"]
    w, layers, p, s = v["width"], v["layers"], v["patch_size"], v["image_size"]
    mlp = int(w * v.get("mlp_ratio", 4.0))
    t = (s // p) ** 2 + 1  # patches + class token
    block = t * w * 3 * w + t * w * w + 2 * t * w * mlp + 2 * t * t * w
    macs = (t - 1) * 3 * p * p * w + layers * block + w * cfg["embed_dim"]
    return 2.0 * macs


def naive_encode(clip, paths: list[Path]) -> np.ndarray:
    """The loop one writes first: decode at full size, one image per forward pass, fp32."""
    import torch
    from PIL import Image

    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        x = clip.preprocess(img).unsqueeze(0).to(clip.device)
        with torch.inference_mode():
            f = clip.model.encode_image(x)
        out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()[0])
    return np.stack(out)


def decode_only(clip, paths: list[Path], draft: bool) -> None:
    from PIL import Image

    s = clip.image_size
    for path in paths:
        img = Image.open(path)
        if draft:
            img.draft("RGB", (s, s))
        clip.preprocess(img.convert("RGB"))


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


