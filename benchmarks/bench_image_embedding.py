"""Image embedding throughput (JPEG decode included) of the project's CLIP image path.

Run from the repository root::

    .venv/bin/python benchmarks/bench_image_embedding.py            # ~2.5 min on 2 idle cores
    .venv/bin/python benchmarks/bench_image_embedding.py --images 256 --batch-sizes 8,32,64
    .venv/bin/python benchmarks/bench_image_embedding.py --model catret-effnet-lite0   # default tower

``--model`` picks another tower (the default build's EfficientNet-Lite0 runs with its packaged
real weights, its pooled trunk as the features, and writes its own docs section); what follows
describes the ViT-B-32 default.

What it measures, all in one process so that the ratios are comparable on a shared machine:

* the project's path, ``ClipModel.encode_images`` (catret_pipeline/encoders/openclip.py, what the
  ``clip`` resource calls), with
  ``model_name="ViT-B-32"``, ``pretrained=""`` (seeded random init: speed depends only on the
  architecture) at fp32 and bf16 (weights cast to bfloat16) for each batch size; it decodes JPEGs
  with ``Image.draft`` and overlaps decoding of batch k+1 with the forward pass of batch k;
* a naive baseline: for each file ``Image.open``, ``convert("RGB")``, open_clip preprocess,
  ``model.encode_image`` on a batch of one, fp32, full-size decode;
* dense matmul throughput (n x n @ n x n) at fp32 and bf16, the practical roofline of the machine;
* the image tower's FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode`` and
  checked against the analytic ViT count;
* with ``--onnx`` (the default when onnxruntime, onnx and onnxscript import; ``--no-onnx`` skips
  it): the same fp32 tower exported to ONNX (``torch.onnx.export``, dynamic batch axis, into a
  temp dir) and quantised with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
  uint8 activations quantised per batch at run time, only the MatMuls whose second input is a
  weight, per-tensor and per-channel), run by an ``onnxruntime.InferenceSession`` (intra-op
  threads = torch threads, sequential execution, all graph optimisations): the tower alone on
  ready tensors for fp32 ONNX and both int8 variants, and end to end from the JPEG files for the
  int8 variant kept (per-channel when it keeps mean cosine >= 0.999 against the fp32 torch
  embeddings of the same images, else per-tensor), with the project's decoding
  (``ClipModel.load_image``: ``Image.draft`` + open_clip preprocess) of batch k+1 overlapped
  with the forward pass of batch k, then L2 normalisation. int8 does not run at bf16, so its
  "% of bf16 matmul" is an equivalent ratio (model FLOPs x img/s / bf16 matmul FLOP/s) that may
  exceed 100%; its "% of same-precision matmul" is against ONNX Runtime's ``MatMulInteger``
  (uint8 x int8 -> int32, same n as the other matmuls), timed in the same rotation. Then
  ``ClipModel.encode_images`` at ``precision="onnx"`` (its own cached fp32 export, gate and
  session: the path ``auto`` takes for EfficientNet-Lite on a CPU). The cosines
  are measured with random-init weights; a trained checkpoint's activation ranges differ (CLIP
  ViTs have outlier channels), so they must be rechecked with real weights.

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
import functools
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.encoders.onnx_image import torch_image_features  # noqa: E402
from catret_pipeline.markdown import markdown_table  # noqa: E402

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
    p.add_argument(
        "--matmul-n", type=int, default=0, help="Square matmul side; 0 = 2048 on CPU, 8192 on GPU."
    )
    p.add_argument(
        "--decode-workers", type=int, default=1, help="JPEG decode threads per batch (1)."
    )
    p.add_argument(
        "--decode-processes",
        type=int,
        default=0,
        help="JPEG decode worker processes (0 = threads, see --decode-workers).",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default.")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto).")
    p.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ONNX Runtime fp32/int8 rows (default: on when onnxruntime imports).",
    )
    p.add_argument(
        "--onnx-spin",
        action="store_true",
        help="Let ONNX Runtime's intra-op threads spin between ops (off: on 2 shared cores a "
        "spinning thread takes the core the decode thread and other processes need).",
    )
    p.add_argument(
        "--model",
        default=MODEL_NAME,
        help=f"Image tower ({MODEL_NAME}; catret-effnet-lite0 is the default build's, with its real "
        "ImageNet weights). Another model gets its own docs section.",
    )
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


# ---- inputs ---------------------------------------------------------------------------------


def write_jpegs(directory: Path, n: int, size: int, quality: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields plus sensor-like noise, so file sizes and decode
    cost resemble product photos rather than flat colour (too cheap) or white noise (too dear)."""
    from catret_pipeline.encoders.onnx_image import iter_synthetic_images

    paths = []
    for i, image in enumerate(iter_synthetic_images(n, size, seed)):
        path = directory / f"img_{i:05d}.jpg"
        image.save(path, quality=quality)
        paths.append(path)
    return paths


# ---- measurements ---------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def matmul_flops(dtype, n: int, device: str, min_seconds: float = 0.5) -> tuple[float, float]:
    """(FLOPs, seconds) of dense n x n @ n x n products (2*n^3 FLOPs each), after a warm-up."""
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
    return 2.0 * n**3 * reps, elapsed


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
            torch_image_features(clip.model, x, clip.pooled_trunk)
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
            f = torch_image_features(clip.model, x, clip.pooled_trunk)
        out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()[0])
    return np.stack(out)


def forward_only(clip, n: int, batch_size: int) -> None:
    """The image tower on ready tensors (no decode): the ceiling of the end-to-end path."""
    import torch

    s = clip.image_size
    dtype = next(clip.model.parameters()).dtype
    x = torch.zeros(batch_size, 3, s, s, device=clip.device, dtype=dtype)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            torch_image_features(clip.model, x[: min(batch_size, n - start)], clip.pooled_trunk)
    sync(clip.device)


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


# ---- ONNX Runtime ---------------------------------------------------------------------------

#: Below this mean cosine to the fp32 torch embeddings an int8 variant is not used end to end.
COSINE_BOUND = 0.999


def onnx_missing() -> str | None:
    """Why the ONNX rows cannot run here (None when they can): the dynamo exporter needs
    onnxscript, the graph edit onnx, the measurements onnxruntime."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if not importlib.util.find_spec(m)]
    return f"not installed: {', '.join(missing)}" if missing else None


def export_onnx(clip, directory: Path) -> tuple[Path, dict[str, Path], int]:
    """(fp32 ONNX file, {"per-tensor": int8 file, "per-channel": int8 file}, number of weight
    MatMuls quantised) of the image tower."""
    import onnx

    from catret_pipeline.encoders.onnx_image import (
        export_image_tower,
        quantize_weight_matmuls,
        weight_matmuls,
    )

    # Gemm with constant weights already rewritten as MatMul (what the `clip` resource's
    # int8-onnx precision runs, with the same helpers).
    model = export_image_tower(clip.model, clip.image_size, clip.pooled_trunk)
    fp32_path = directory / "vit_fp32.onnx"
    onnx.save(model, fp32_path)
    nodes = weight_matmuls(model)
    int8 = {}
    for name, per_channel in (("per-tensor", False), ("per-channel", True)):
        int8[name] = directory / f"vit_int8_{name}.onnx"
        quantize_weight_matmuls(fp32_path, int8[name], nodes, per_channel=per_channel)
    return fp32_path, int8, len(nodes)


def onnx_session(path: Path, threads: int, spin: bool):
    from catret_pipeline.encoders.onnx_image import make_session

    return make_session(path, threads, spin)


def onnx_matmul_int8(n: int, threads: int, spin: bool, min_seconds: float = 0.5):
    """(FLOPs, seconds) of ONNX Runtime ``MatMulInteger`` (uint8 n x n @ int8 n x n -> int32,
    2*n^3 FLOPs each, the int8 GEMM the quantised model runs), after a warm-up: the int8
    counterpart of :func:`matmul_flops`. Returns a callable so that the session is built once."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-127, 128, size=(n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "matmul_int8",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        initializer=[b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory(prefix="catret-bench-mm-") as tmp:
        path = Path(tmp) / "matmul_int8.onnx"
        onnx.save(model, path)
        session = onnx_session(path, threads, spin)
    feed = {"a": rng.integers(0, 256, size=(n, n), dtype=np.uint8)}

    def run() -> tuple[float, float]:
        for _ in range(2):
            session.run(None, feed)
        reps, t0 = 0, time.perf_counter()
        while True:
            session.run(None, feed)
            reps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds and reps >= 3:
                break
        return 2.0 * n**3 * reps, elapsed

    return run


def onnx_forward(session, image_size: int, n: int, batch_size: int) -> None:
    """The ONNX tower on ready tensors, like :func:`forward_only`."""
    x = np.zeros((batch_size, 3, image_size, image_size), dtype=np.float32)
    for start in range(0, n, batch_size):
        session.run(None, {"pixels": x[: min(batch_size, n - start)]})


def onnx_encode(clip, session, paths: list[Path], batch_size: int) -> np.ndarray:
    """JPEG files to L2-normalised embeddings through ``session``: the project's decoding
    (``ClipModel.load_image``: draft + preprocess) of batch k+1 in a thread while the session runs
    batch k, as ``ClipModel.encode_images`` does (both release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def decode(lo: int) -> np.ndarray:
        return np.stack([clip.load_image(p).numpy() for p in paths[lo : lo + batch_size]])

    starts = list(range(0, len(paths), batch_size))
    out = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-prefetch") as prefetch:
        pending = prefetch.submit(decode, 0)
        for k in range(len(starts)):
            x = pending.result()
            if k + 1 < len(starts):
                pending = prefetch.submit(decode, starts[k + 1])
            f = session.run(None, {"pixels": x})[0]
            out.append(f / np.linalg.norm(f, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32, copy=False)


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import open_clip
    import torch

    from catret_pipeline.encoders.openclip import ClipSpec, load_clip, set_threads

    set_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    chunk = args.chunk or 2 * max(batch_sizes)
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    # The model object the `clip` resource wraps (OpenClipEncoder.encode_images is a thin call
    # into it), used directly so that the benchmark also runs where Dagster is not installed.
    models = {
        prec: load_clip(
            ClipSpec(model_name=args.model, pretrained="", precision=prec, device=args.device)
        )
        for prec in ("fp32", "bf16")
    }
    encoders = {
        (prec, bs): functools.partial(
            models[prec].encode_images,
            batch_size=bs,
            decode_workers=args.decode_workers,
            decode_processes=args.decode_processes,
        )
        for prec in ("fp32", "bf16")
        for bs in batch_sizes
    }
    fp32 = models["fp32"]
    device = fp32.device
    if args.matmul_n == 0:
        # 2048^2 saturates two CPU cores; a GPU needs far bigger products to reach its peak.
        args.matmul_n = 8192 if device.startswith("cuda") else 2048

    flops, by_op = count_image_flops(fp32)
    vit = args.model == MODEL_NAME
    analytic = analytic_vit_flops(open_clip.get_model_config(MODEL_NAME)) if vit else float("nan")
    print(
        f"{args.model} image tower: {flops / 1e9:.3f} GFLOP/image (FlopCounterMode, 2 per MAC); "
        f"analytic 2*MAC {analytic / 1e9:.3f}; by op (GFLOP): "
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in sorted(by_op.items()))
    )

    configs: dict = {
        "naive": lambda ps: naive_encode(fp32, ps),
        "decode, full": lambda ps: decode_only(fp32, ps, draft=False),
        "decode, draft": lambda ps: decode_only(fp32, ps, draft=True),
        "forward bf16": lambda ps: forward_only(models["bf16"], len(ps), max(batch_sizes)),
    }
    for (prec, bs), enc in encoders.items():
        configs[f"{prec} b{bs}"] = lambda ps, enc=enc: enc(ps)

    # ONNX Runtime runs on the CPU only here; next to a GPU run its rows would compare nothing.
    onnx_note = onnx_missing()
    if device.startswith("cuda"):
        onnx_note = "CPU only, skipped on a GPU run"
    run_onnx = args.onnx if args.onnx is not None else onnx_note is None
    if args.onnx and onnx_note:
        sys.exit(f"--onnx: {onnx_note}")
    if not run_onnx:
        onnx_note = onnx_note or "skipped (--no-onnx)"
    onnx_cos: dict[str, tuple[float, float]] = {}  # on the warm-up images, vs fp32 torch
    onnx_int8 = ""  # the int8 variant run end to end
    onnx_secs, n_quantised = 0.0, 0

    with tempfile.TemporaryDirectory(prefix="catret-bench-img-") as tmp:
        paths = write_jpegs(Path(tmp), args.images, args.size, args.quality)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        print(f"{len(paths)} JPEGs {args.size}x{args.size} q{args.quality}, mean {mean_kb:.0f} KB")

        # Warm-up: first forward passes allocate and pick kernels.
        warm = paths[: max(batch_sizes)]
        naive_encode(fp32, warm[:2])
        for enc in encoders.values():
            enc(warm)

        if run_onnx:
            t0 = time.perf_counter()
            try:
                onnx_dir = Path(tmp) / "onnx"
                onnx_dir.mkdir()
                fp32_onnx, int8_onnx, n_quantised = export_onnx(fp32, onnx_dir)
                threads = torch.get_num_threads()
                sessions = {
                    name: onnx_session(path, threads, args.onnx_spin)
                    for name, path in [("fp32", fp32_onnx), *int8_onnx.items()]
                }
            except Exception as exc:  # the torch rows still stand; the report says why
                onnx_note = f"export or quantisation failed: {type(exc).__name__}: {exc}"[:400]
                print(f"ONNX: {onnx_note}", file=sys.stderr)
                run_onnx = False
            onnx_secs = time.perf_counter() - t0
        if run_onnx:
            ref_warm = fp32.encode_images(warm, batch_size=max(batch_sizes))
            for name, sess in sessions.items():
                onnx_cos[name] = cosine_stats(
                    onnx_encode(fp32, sess, warm, max(batch_sizes)), ref_warm
                )
            # Per-channel first: trained weights' output channels span very different ranges,
            # which one scale per matrix handles worst.
            passing = [v for v in ("per-channel", "per-tensor") if onnx_cos[v][0] >= COSINE_BOUND]
            onnx_int8 = (
                passing[0] if passing else max(("per-channel", "per-tensor"), key=onnx_cos.get)
            )
            print(
                f"ONNX export + quantisation {onnx_secs:.0f} s; cosine to fp32 torch on "
                f"{len(warm)} images (mean/min): "
                + ", ".join(f"{k} {m:.5f}/{lo:.5f}" for k, (m, lo) in onnx_cos.items())
                + f"; end to end with int8 {onnx_int8}"
            )
            s_img, bmax = fp32.image_size, max(batch_sizes)
            for name, sess in sessions.items():
                configs[f"onnx forward {name}"] = lambda ps, sess=sess: onnx_forward(
                    sess, s_img, len(ps), bmax
                )
            for bs in batch_sizes:
                configs[f"onnx int8 b{bs}"] = lambda ps, bs=bs: onnx_encode(
                    fp32, sessions[onnx_int8], ps, bs
                )
            # precision="onnx" as the pipeline runs it (auto's choice for EfficientNet-Lite on
            # a CPU): ClipModel with its own cached export, gate and session.
            models["onnx"] = load_clip(
                ClipSpec(
                    model_name=args.model,
                    pretrained="",
                    precision="onnx",
                    device="cpu",
                    onnx_cache_dir=str(onnx_dir / "cache"),
                )
            )
            for bs in batch_sizes:
                configs[f"onnx b{bs}"] = functools.partial(
                    models["onnx"].encode_images,
                    batch_size=bs,
                    decode_workers=args.decode_workers,
                    decode_processes=args.decode_processes,
                )
            for name in configs:
                if name.startswith("onnx"):
                    configs[name](warm)

            mm_int8 = onnx_matmul_int8(args.matmul_n, threads, args.onnx_spin)
            configs["matmul int8"] = lambda _: mm_int8()
        configs["matmul fp32"] = lambda _: matmul_flops(torch.float32, args.matmul_n, device)
        configs["matmul bf16"] = lambda _: matmul_flops(torch.bfloat16, args.matmul_n, device)
        names = list(configs)

        chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        work = dict.fromkeys(names, 0.0)  # images, or FLOPs for the matmuls
        secs = dict.fromkeys(names, 0.0)
        per_round: dict[str, list[float]] = {n: [] for n in names}
        outputs: dict[str, list] = {n: [None] * len(chunks) for n in names}
        rounds = [(p, c) for p in range(args.repeats) for c in range(len(chunks))]
        for r, (_, c) in enumerate(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                seconds, result = timed(lambda fn=configs[name], ps=chunks[c]: fn(ps))
                if name.startswith("matmul"):
                    done, seconds = result
                    unit = "GFLOP/s"
                else:
                    done, unit = len(chunks[c]), "img/s"
                    outputs[name][c] = result
                work[name] += done
                secs[name] += seconds
                per_round[name].append(done / seconds / (1e9 if unit == "GFLOP/s" else 1))
            print(
                f"round {r + 1}/{len(rounds)}: "
                + ", ".join(f"{n} {per_round[n][-1]:.1f}" for n in names),
                flush=True,
            )
    load_after = os.getloadavg()

    rate = {n: work[n] / secs[n] for n in names}
    roof = {"fp32": rate["matmul fp32"] / 1e9, "bf16": rate["matmul bf16"] / 1e9}
    if "matmul int8" in rate:
        roof["int8"] = rate["matmul int8"] / 1e9

    def spread(name: str) -> str:
        return f"{min(per_round[name]):.1f}-{max(per_round[name]):.1f}"

    def row(label: str, name: str, prec: str, bs: int, same: str | None = "") -> list:
        """``same``: the roofline of the row's precision (default ``prec``; None: none measured)."""
        gf = rate[name] * flops / 1e9
        same = prec if same == "" else same
        return [
            label,
            prec,
            bs,
            f"{rate[name]:.1f}",
            spread(name),
            f"{rate[name] / rate['naive']:.2f}x",
            f"{gf:.0f}",
            f"{100 * gf / roof[same]:.0f}%" if same else "-",
            f"{100 * gf / roof['bf16']:.0f}%",
        ]

    rows = [row("naive loop (full decode, 1 image per forward)", "naive", "fp32", 1)]
    rows += [row("ClipModel.encode_images", f"{p} b{b}", p, b) for p, b in encoders]
    rows.append(
        row("image tower alone (no decode, ceiling)", "forward bf16", "bf16", max(batch_sizes))
    )
    if run_onnx:
        bmax = max(batch_sizes)
        rows.append(row("ONNX Runtime, tower alone (no decode)", "onnx forward fp32", "fp32", bmax))
        rows += [
            row(
                "ONNX Runtime, tower alone (no decode)",
                f"onnx forward {v}",
                f"int8 dynamic, {v}",
                bmax,
                same="int8",
            )
            for v in ("per-tensor", "per-channel")
        ]
        rows += [
            row(
                "ONNX Runtime, JPEG files end to end (draft decode overlapped)",
                f"onnx int8 b{b}",
                f"int8 dynamic, {onnx_int8}",
                b,
                same="int8",
            )
            for b in batch_sizes
        ]
        rows += [
            row(
                "ClipModel.encode_images, precision=onnx (auto's choice for EfficientNet-Lite)",
                f"onnx b{b}",
                "fp32 (ONNX Runtime)",
                b,
                same="fp32",
            )
            for b in batch_sizes
        ]
    headers = [
        "path",
        "precision",
        "batch",
        "img/s",
        "per-round min-max",
        "vs naive",
        "model GFLOP/s",
        "% of same-precision matmul",
        "% of bf16 matmul",
    ]
    table = markdown_table(headers, rows)

    emb = {n: np.concatenate(outputs[n]) for n in names if outputs[n][0] is not None}
    ref32 = emb[f"fp32 b{max(batch_sizes)}"]
    cos_bf16 = cosine_stats(emb[f"bf16 b{max(batch_sizes)}"], ref32)
    cos_naive = cosine_stats(emb["naive"], ref32)
    onnx_model = f"onnx b{max(batch_sizes)}"
    cos_onnx = cosine_stats(emb[onnx_model], ref32) if onnx_model in emb else None
    encode_names = [f"{p} b{b}" for p, b in encoders]
    best_name = max(encode_names, key=rate.get)
    best32 = max((n for n in encode_names if n.startswith("fp32")), key=rate.get)
    best16 = max((n for n in encode_names if n.startswith("bf16")), key=rate.get)
    frac32 = rate[best32] * flops / 1e9 / roof["fp32"]
    frac16 = rate[best16] * flops / 1e9 / roof["bf16"]
    decode_full, decode_draft = rate["decode, full"], rate["decode, draft"]

    def onnx_facts() -> str:
        import onnxruntime as ort

        return (
            f"- ONNX Runtime {ort.__version__} (CPUExecutionProvider, {torch.get_num_threads()} "
            "intra-op threads, sequential, all graph optimisations, intra-op spinning "
            f"{'on' if args.onnx_spin else 'off'}): fp32 tower exported by `torch.onnx.export` "
            "(dynamo, dynamic batch), Gemm with constant weights rewritten as MatMul, then "
            f"`quantize_dynamic` (int8 weights, uint8 activations per batch) of the {n_quantised} "
            f"weight MatMuls; export + quantisation {onnx_secs:.0f} s, outside the rates. Cosine "
            f"to fp32 torch on the {min(len(paths), max(batch_sizes))} warm-up images "
            "(mean/min): "
            + ", ".join(f"{k} {m:.5f}/{lo:.5f}" for k, (m, lo) in onnx_cos.items())
            + f"; end to end uses int8 {onnx_int8} (per-channel unless only per-tensor keeps "
            f"mean >= {COSINE_BOUND})."
        )

    cmd_args = [a if not Path(a).is_absolute() else os.path.relpath(a, REPO) for a in sys.argv]
    command = ".venv/bin/python " + shlex.join(cmd_args)
    facts = "\n".join(
        [
            f"- Machine: {machine()}",
            f"- Command (repository root): `{command}`",
            f"- Load average (1/5/15 min) before {_fmt_load(load_before)}, after "
            f"{_fmt_load(load_after)} on {os.cpu_count()} cores (other processes share them); "
            f"wall time {time.perf_counter() - t_start:.0f} s.",
            f"- Input: {args.images} JPEGs, {args.size}x{args.size} px, quality {args.quality} "
            f"(mean {mean_kb:.0f} KB), written to a temp dir, "
            + (
                f"{args.decode_processes} decode process(es)"
                if args.decode_processes
                else f"{args.decode_workers} decode thread(s)"
            )
            + f"; `{args.model}`, "
            + ('pretrained="" (seeded random init)' if vit else "its packaged real weights")
            + f", device {device}; {len(rounds)} rounds of "
            f"{chunk} images ({args.repeats} pass{'es' if args.repeats != 1 else ''} over them), "
            "every configuration in every round, order rotating; rates are total work / total "
            "time.",
            f"- FLOPs per image (image tower, 1 multiply-add = 2 FLOPs): {flops / 1e9:.3f} GFLOP by "
            + (
                f"`FlopCounterMode` (analytic ViT count {analytic / 1e9:.3f}; open_clip's profile "
                "lists 8.82, the same 2-per-MAC convention; norms, GELU, softmax not counted). "
                if vit
                else "`FlopCounterMode` (convolutions and matmuls; activations not counted). "
            )
            + "Matmul "
            f"roofline: {args.matmul_n}x{args.matmul_n} @ {args.matmul_n}x{args.matmul_n}, 2n^3 "
            f"FLOPs per product: fp32 {roof['fp32']:.0f} GFLOP/s "
            f"({spread('matmul fp32')} per round), bf16 {roof['bf16']:.0f} GFLOP/s "
            f"({spread('matmul bf16')}), ratio {roof['bf16'] / roof['fp32']:.2f}x"
            + (
                f"; int8 (ONNX Runtime `MatMulInteger`, uint8 x int8 -> int32, same n) "
                f"{roof['int8']:.0f} GFLOP/s ({spread('matmul int8')})."
                if "int8" in roof
                else "."
            ),
            f"- Decode + preprocess only, one thread: {decode_full:.0f} img/s full-size, "
            f"{decode_draft:.0f} img/s with `Image.draft` (what encode_images does).",
            f"- Embeddings: bf16 vs fp32 cosine mean {cos_bf16[0]:.5f}, min {cos_bf16[1]:.5f}; "
            f"naive (full decode) vs encode_images fp32 (draft decode) mean {cos_naive[0]:.5f}, "
            f"min {cos_naive[1]:.5f}"
            + (
                f"; precision=onnx (ClipModel) vs fp32 torch mean {cos_onnx[0]:.5f}, min "
                f"{cos_onnx[1]:.5f}."
                if cos_onnx
                else "."
            ),
        ]
        + ([onnx_facts()] if run_onnx else [])
    )
    reading = (
        f"Reading: the fastest configuration, {best_name} ({rate[best_name]:.1f} img/s), embeds "
        f"{rate[best_name] / rate['naive']:.1f}x as many images per second as the naive loop "
        f"({rate['naive']:.1f} img/s). At fp32, batching, draft decoding and decode/forward overlap "
        f"give {rate[best32] / rate['naive']:.2f}x ({best32}); bf16 weights add "
        f"{rate[best16] / rate[best32]:.2f}x on top ({best16}), against "
        f"{roof['bf16'] / roof['fp32']:.2f}x between the bf16 and fp32 matmul rooflines. The "
        f"model runs at {100 * frac32:.0f}% of the fp32 matmul throughput at fp32 and "
        f"{100 * frac16:.0f}% of the bf16 one at bf16 (JPEG decode included): the gap is the "
        "uncounted element-wise work (layer norms, GELU, softmax), the smaller matrices of a "
        f"50-token ViT, and decoding, which at {decode_draft:.0f} img/s on one core (draft mode) "
        f"takes about {100 * rate[best_name] / decode_draft:.0f}% of a core at the best rate, on "
        "the same cores as the forward pass. The image tower alone on ready tensors (bf16, batch "
        f"{max(batch_sizes)}, no decode) runs at "
        f"{100 * rate['forward bf16'] * flops / 1e9 / roof['bf16']:.0f}% of the bf16 roofline: "
        "the ceiling of the end-to-end path, which loses the difference to decoding and to the "
        "decode thread disturbing the forward pass's threads on the same cores. "
        "bf16 barely moves the embeddings (cosine to fp32 "
        f"{cos_bf16[0]:.4f} mean, {cos_bf16[1]:.4f} worst) with random-init weights; re-check with "
        "real weights before relying on that. The machine is shared (see the load average and the "
        "per-round ranges): absolute rates move with other processes, the ratios within this run "
        "are the result."
    )
    if run_onnx:
        e2e = [f"onnx int8 b{b}" for b in batch_sizes]
        best_onnx = max(e2e, key=rate.get)
        eq = rate[best_onnx] * flops / 1e9 / roof["bf16"]
        cos_e2e = cosine_stats(emb[f"onnx int8 b{max(batch_sizes)}"], ref32)

        def eq_pct(name: str) -> str:
            return f"{100 * rate[name] * flops / 1e9 / roof['bf16']:.0f}%"

        reading += (
            f"\n\nONNX Runtime int8 (issue #7's lever): the {onnx_int8} int8 model embeds the "
            f"JPEG files at {rate[best_onnx]:.1f} img/s ({best_onnx.removeprefix('onnx int8 ')}), "
            f"{rate[best_onnx] / rate[best16]:.2f}x the best torch bf16 path ({best16}, "
            f"{rate[best16]:.1f} img/s), which is {100 * eq:.0f}% of the bf16 matmul roofline "
            "in equivalent terms (model FLOPs x img/s / bf16 matmul FLOP/s): "
            + (
                "above the >= 85% target end to end"
                if eq >= 0.85
                else "below the >= 85% target end to end"
            )
            + ", but only as an equivalent: int8 products are not bf16 ones. Against ONNX "
            f"Runtime's own int8 GEMM ({roof['int8']:.0f} GFLOP/s, "
            f"{roof['int8'] / roof['bf16']:.2f}x the bf16 one) the same run is at "
            f"{100 * rate[best_onnx] * flops / 1e9 / roof['int8']:.0f}%: the int8 path leaves "
            "more on the table than bf16 does, since what int8 does not speed up (quantising "
            "activations per batch; layer norms, GELU, softmax and the attention products, all "
            "fp32) is a larger share of the time, and decoding now takes about "
            f"{100 * rate[best_onnx] / decode_draft:.0f}% of a core. The int8 tower alone on "
            "ready tensors runs at "
            f"{eq_pct('onnx forward per-tensor')} (per-tensor) and "
            f"{eq_pct('onnx forward per-channel')} (per-channel) equivalent, fp32 ONNX at "
            f"{100 * rate['onnx forward fp32'] * flops / 1e9 / roof['fp32']:.0f}% of the fp32 "
            "roofline"
            + (
                " (above 100%: ONNX Runtime's fp32 GEMM beats the torch matmul used as the fp32 "
                "roofline, which therefore understates the fp32 peak)"
                if rate["onnx forward fp32"] * flops / 1e9 > roof["fp32"]
                else ""
            )
            + f". Its embeddings keep cosine {cos_e2e[0]:.5f} mean, {cos_e2e[1]:.5f} worst "
            "to the fp32 torch ones "
            + ("(bound >= 0.999 kept)" if cos_e2e[0] >= COSINE_BOUND else "(bound >= 0.999 MISSED)")
            + ", but with random-init weights: a trained checkpoint's activation ranges differ "
            "(CLIP ViTs have outlier channels, and dynamic quantisation uses one activation scale "
            "per tensor), so the cosine must be measured again with the real weights before int8 "
            "is used."
        )
    elif onnx_note:
        reading += f"\n\nONNX Runtime rows: {onnx_note}."
    if not vit:
        # The reading above is written for the ViT (its FLOP count, token count, random init).
        reading = (
            f"Reading: see the text after this section. Fastest here: {best_name} "
            f"({rate[best_name]:.1f} img/s, {rate[best_name] / rate['naive']:.1f}x the naive loop)."
        )
    body = (
        f"## Image embedding{' (GPU)' if device.startswith('cuda') else ''}: "
        f"{args.model} image tower with JPEG decode\n\n"
        "Written by `benchmarks/bench_image_embedding.py` (see its docstring).\n\n"
        f"{facts}\n\n{table}\n\n{reading}\n"
    )
    print()
    print(body)
    if not args.no_write:
        # A GPU run gets its own section so that it never overwrites the CPU result.
        section = "image-embedding" + ("" if vit else f"-{args.model}")
        write_section(section + ("-gpu" if device.startswith("cuda") else ""), body)
        print(f"written to {os.path.relpath(REPO / 'docs' / 'benchmarks.md')}")


def _fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
