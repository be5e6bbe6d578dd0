"""Throughput of the real sentence encoders (MPNet, MiniLM) on a catalogue's own texts, against
sentence-transformers' plain ``encode`` in the same run (issue #15 item 3).

Not a test: it reads the ``products`` table of a built data dir (titles and attribute strings,
distinct), e.g. the README build::

    .venv/bin/python benchmarks/bench_text_encoders.py --data-dir data
    .venv/bin/python benchmarks/bench_text_encoders.py --data-dir data --models mpnet --texts 256

Configurations, each on the same texts, in rounds of ``--chunk`` texts whose order rotates (the
machine is shared, so every configuration sees the same quiet and busy moments):

- ``plain``: ``SentenceTransformer.encode(texts, batch_size)`` at fp32, the baseline (it sorts
  by length inside the call and pads each batch to its longest text);
- ``TextEncoder fp32`` / ``bf16``: the project's path (``encoders.text.SentenceModel.encode``:
  distinct strings once, length-sorted across the chunk; bf16 = weights cast). bf16 only where
  the CPU has native bf16 (elsewhere it is ~90x slower than fp32);
- ``ONNX Runtime fp32`` / ``int8``: the transformer exported by ``torch.onnx.export`` with
  dynamic batch and length, mean pooling and L2 normalisation in numpy, the same length-sorted
  batches; int8 = ``quantize_dynamic`` of the weight MatMuls (per channel; 7-bit weights without
  VNNI, as the image tower's int8 path does).

Each rate is texts / total seconds over all rounds; cosine is to the plain fp32 embedding of the
same text (mean and minimum). Torch and ONNX Runtime use ``--threads`` intra-op threads. The table
goes to stdout and to the ``text-encoders`` section of docs/benchmarks.md (``--no-write`` skips).
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
from _report import machine, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

MODELS = {"mpnet": "bundled:all-mpnet-base-v2", "minilm": "bundled:all-MiniLM-L6-v2"}
KINDS = ("titles", "attributes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data", help="A built data dir (products table).")
    p.add_argument("--models", default="mpnet,minilm", help="Comma-separated: mpnet, minilm.")
    p.add_argument("--texts", type=int, default=512, help="Distinct texts per kind (512).")
    p.add_argument("--chunk", type=int, default=128, help="Texts per round (128).")
    p.add_argument("--batch-size", type=int, default=64, help="Encoder batch size (64).")
    p.add_argument("--threads", type=int, default=2, help="Intra-op threads (2).")
    p.add_argument("--no-onnx", action="store_true", help="Skip the ONNX Runtime rows.")
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


def catalogue_texts(data_dir: Path, n: int) -> dict[str, list[str]]:
    """Up to ``n`` distinct titles and attribute strings, in a fixed shuffled order."""
    import polars as pl

    products = pl.read_parquet(data_dir / "assets" / "products.parquet")
    titles = [t for t in products["title"].drop_nulls().unique(maintain_order=True) if t.strip()]
    attrs = list(
        dict.fromkeys(
            a for row in products["attributes"].to_list() if row for a in row if a and a.strip()
        )
    )
    rng = np.random.default_rng(0)
    out = {}
    for kind, texts in (("titles", titles), ("attributes", attrs)):
        order = rng.permutation(len(texts))[:n]
        out[kind] = [texts[i] for i in order]
    return out


class OnnxText:
    """The sentence model's transformer under ONNX Runtime; mean pooling as sentence-transformers'
    Pooling module (mean over non-padding tokens), then L2 normalisation."""

    def __init__(self, st_model, path: Path, threads: int, batch_size: int) -> None:
        from catret_pipeline.encoders.onnx_image import make_session

        self.tokenizer = st_model.tokenizer
        self.max_len = st_model.max_seq_length
        self.batch_size = batch_size
        self.session = make_session(path, threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            tok = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_len,
                return_tensors="np",
            )
            mask = tok["attention_mask"].astype(np.int64)
            (hidden,) = self.session.run(
                None, {"input_ids": tok["input_ids"].astype(np.int64), "attention_mask": mask}
            )
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def export_transformer(st_model, target: Path) -> None:
    """fp32 ONNX of the transformer: (input_ids, attention_mask) -> last_hidden_state."""
    import onnx
    import torch

    from catret_pipeline.encoders.onnx_image import gemm_weights_to_matmul

    class Body(torch.nn.Module):
        def __init__(self, auto_model):
            super().__init__()
            self.auto_model = auto_model

        def forward(self, input_ids, attention_mask):
            return self.auto_model(input_ids=input_ids, attention_mask=attention_mask)[0]

    ids = torch.ones(2, 8, dtype=torch.long)
    torch.onnx.export(
        Body(st_model[0].auto_model.float().eval()),
        (ids, torch.ones_like(ids)),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(target))
    gemm_weights_to_matmul(proto)
    onnx.save(proto, str(target))


def configurations(name: str, args, tmp: Path) -> dict:
    """label -> encode(texts) for one model."""
    import torch
    from sentence_transformers import SentenceTransformer

    from catret_pipeline.encoders.onnx_image import (
        quantize_weight_matmuls,
        use_reduce_range,
        weight_matmuls,
    )
    from catret_pipeline.encoders.precision import cpu_flags, has_native_bf16
    from catret_pipeline.encoders.text import TextSpec, load_text_model

    bs = args.batch_size
    cache = str(Path(args.data_dir) / "model_cache")
    fp32 = load_text_model(
        TextSpec(model_name_or_path=MODELS[name], precision="fp32", cache_dir=cache)
    )
    plain = SentenceTransformer(
        TextSpec(model_name_or_path=MODELS[name], cache_dir=cache).resolved_source(), device="cpu"
    )
    plain.max_seq_length = fp32.spec.max_seq_length
    plain.eval()
    configs = {
        "plain sentence-transformers encode, fp32": lambda t: plain.encode(
            t, batch_size=bs, normalize_embeddings=True, show_progress_bar=False
        ),
        "TextEncoder fp32": lambda t: fp32.encode(t, batch_size=bs),
    }
    if has_native_bf16(cpu_flags()):
        bf16 = load_text_model(
            TextSpec(model_name_or_path=MODELS[name], precision="bf16", cache_dir=cache)
        )
        configs["TextEncoder bf16 (default here)"] = lambda t: bf16.encode(t, batch_size=bs)
    if not args.no_onnx:
        import onnx

        f32_path, i8_path = tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx"
        with torch.no_grad():
            export_transformer(plain, f32_path)
        nodes = weight_matmuls(onnx.load(str(f32_path)))
        quantize_weight_matmuls(f32_path, i8_path, nodes, reduce_range=use_reduce_range())
        o32 = OnnxText(plain, f32_path, args.threads, bs)
        o8 = OnnxText(plain, i8_path, args.threads, bs)
        configs["ONNX Runtime fp32"] = o32.encode
        configs[f"ONNX Runtime int8 dynamic ({len(nodes)} MatMuls)"] = o8.encode
    return configs


def measure(configs: dict, texts: list[str], chunk: int) -> dict[str, dict]:
    labels = list(configs)
    for label in labels:  # warm-up: first-call allocations, ONNX session planning
        configs[label](texts[:16])
    seconds = dict.fromkeys(labels, 0.0)
    vectors: dict[str, list] = {label: [] for label in labels}
    for r, start in enumerate(range(0, len(texts), chunk)):
        part = texts[start : start + chunk]
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            vec = np.asarray(configs[label](part), dtype=np.float32)
            seconds[label] += time.perf_counter() - t0
            vectors[label].append(vec)
    base = np.concatenate(vectors[labels[0]])
    out = {}
    for label in labels:
        vec = np.concatenate(vectors[label])
        vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        cos = (vec * base).sum(1)
        out[label] = {
            "rate": len(texts) / seconds[label],
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    texts = catalogue_texts(Path(args.data_dir), args.texts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            configs = configurations(name, args, Path(tmp))
            for kind in KINDS:
                res = measure(configs, texts[kind], args.chunk)
                base = next(iter(res.values()))["rate"]
                for label, r in res.items():
                    rows.append(
                        [
                            name,
                            f"{kind} ({len(texts[kind])})",
                            label,
                            f"{r['rate']:.1f}",
                            f"{r['rate'] / base:.2f}x",
                            f"{r['cos_mean']:.5f} / {r['cos_min']:.5f}",
                        ]
                    )
                    print(" | ".join(rows[-1]), flush=True)
    load_after = os.getloadavg()
    lengths = {k: np.mean([len(t) for t in v]) for k, v in texts.items()}
    body = "\n".join(
        [
            "## Text encoders: MPNet and MiniLM against plain sentence-transformers",
            "",
            "Written by `benchmarks/bench_text_encoders.py` (see its docstring).",
            "",
            f"- Machine: {machine()}",
            "- Command (repository root): `.venv/bin/python benchmarks/bench_text_encoders.py "
            + shlex.join(argv if argv is not None else sys.argv[1:])
            + "`",
            "- Load average before {:.2f}/{:.2f}/{:.2f}, after {:.2f}/{:.2f}/{:.2f} on 2 cores; "
            "wall time {:.0f} s.".format(*load_before, *load_after, time.perf_counter() - started),
            f"- Texts: the data dir's distinct titles (mean {lengths['titles']:.0f} characters) and "
            f"attribute strings (mean {lengths['attributes']:.0f}); batch {args.batch_size}, "
            f"{args.threads} intra-op threads, rounds of {args.chunk} texts in rotating order.",
            "",
            markdown_table(
                ["model", "texts", "path", "texts/s", "vs plain", "cosine to plain (mean / min)"],
                rows,
            ),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("text-encoders", body)


if __name__ == "__main__":
    main()
