"""Text embedding throughput: shortest sufficient context against the default padded context.

Run from the repository root::

    .venv/bin/python benchmarks/bench_text_embedding.py      # ~2-3 min on 2 idle cores
    .venv/bin/python benchmarks/bench_text_embedding.py --texts 64 --no-write

Two kinds of generated, distinct English texts, shaped like the pipeline's inputs: category names
(1-4 words, "Women's Running Shoes") and product titles (8-20 words, brand + attributes + noun +
specs). For each kind, all in one process and in rotating order (``--repeats`` passes, chunks of
``--chunk`` texts; a rate is total texts / total time):

* CLIP text tower (open_clip ``ViT-B-32``, ``pretrained=""``: seeded random init, speed depends
  only on the architecture), fp32 and bf16 weights:
  the project's path ``OpenClipEncoder.encode_texts`` (batches grouped by token length, each run
  at the longest length in the batch: positions and causal mask sliced), against the same model
  at open_clip's context 77 (``ClipModel.encode_texts(..., slice_context=False)``, i.e.
  ``model.encode_text`` on the padded tokens), which is what open_clip does by itself;
* sentence encoder (``TextEncoder``, bundled all-MiniLM-L6-v2): ``max_seq_length`` = the
  shortest that fits the texts (rounded up to 8) against the default 128 - both through
  ``TextEncoder.encode`` - and a fixed-length baseline: the Hugging Face tokenizer with
  ``padding="max_length"`` (128) + mean pooling, the loop one writes by hand.

sentence-transformers pads each batch to its longest member, so ``max_seq_length`` only caps
truncation: the two ``TextEncoder`` rows should be equal, and the gain of dynamic padding shows
against the fixed-length baseline. The script checks that every fast path returns the same
embeddings as its baseline (cosine).

The table goes to stdout and to the ``text-embedding`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

from catret_pipeline.markdown import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "ViT-B-32"

AUDIENCE = ["Women's", "Men's", "Girls'", "Boys'", "Baby", "Unisex", "Kids'"]
ADJ = [
    "Running", "Casual", "Formal", "Outdoor", "Wireless", "Stainless", "Organic", "Vintage",
    "Waterproof", "Portable", "Ergonomic", "Handmade", "Classic", "Slim", "Compact", "Heavy-Duty",
]  # fmt: skip
NOUN = [
    "Shoes", "Boots", "Sandals", "Jackets", "Dresses", "Watches", "Headphones", "Backpacks",
    "Cookware", "Knives", "Lamps", "Chargers", "Cables", "Mugs", "Scarves", "Sunglasses",
    "Wallets", "Belts", "Speakers", "Keyboards", "Blenders", "Towels", "Pillows", "Toys",
]  # fmt: skip
TOP = ["Clothing", "Electronics", "Home & Kitchen", "Sports & Outdoors", "Accessories", "Beauty"]
BRAND = ["Acme", "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Vandelay"]
COLOUR = ["Black", "White", "Navy Blue", "Red", "Olive Green", "Grey", "Beige", "Pink"]
SPEC = [
    "Size 9", "Pack of 2", "1.5 L", "USB-C", "100% Cotton", "Medium", "16 GB", "10 ft",
    "with Gift Box", "Adjustable Strap", "Machine Washable", "BPA Free",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=256, help="Texts per kind (256).")
    p.add_argument("--chunk", type=int, default=64, help="Texts per round (64).")
    p.add_argument("--repeats", type=int, default=1, help="Passes over the texts (1).")
    p.add_argument("--batch-size", type=int, default=32, help="CLIP batch size (32).")
    p.add_argument("--st-batch-size", type=int, default=64, help="TextEncoder batch (64).")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="Do not update docs/benchmarks.md.")
    return p.parse_args(argv)


def category_names(n: int, rng) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < n:
        form = rng.integers(0, 4)
        noun = rng.choice(NOUN)
        if form == 0:
            name = str(noun)
        elif form == 1:
            name = f"{rng.choice(ADJ)} {noun}"
        elif form == 2:
            name = f"{rng.choice(AUDIENCE)} {rng.choice(ADJ)} {noun}"
        else:
            name = f"{rng.choice(TOP)} {rng.choice(ADJ)} {noun}"
        out.setdefault(name, None)
        if len(out) < n and rng.random() < 0.3:
            out.setdefault(f"{name} {rng.choice(NOUN)}", None)
    return list(out)[:n]


def titles(n: int, rng) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < n:
        words = [str(rng.choice(BRAND)), str(rng.choice(AUDIENCE))]
        words += [str(a) for a in rng.choice(ADJ, size=rng.integers(1, 4), replace=False)]
        words += [str(rng.choice(COLOUR)), str(rng.choice(NOUN))]
        words += [str(s) for s in rng.choice(SPEC, size=rng.integers(1, 4), replace=False)]
        words.append(f"Model {rng.integers(100, 9999)}")
        out.setdefault(" ".join(words), None)
    return list(out)


def st_fixed_length(st_model, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """The hand-written loop: pad every text to ``max_length``, mean-pool, normalise."""
    import torch

    tok, transformer = st_model.tokenizer, st_model[0].auto_model
    out = []
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            enc = tok(
                texts[lo : lo + batch_size],
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = transformer(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def _fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    kinds = {"category names": category_names(args.texts, rng), "titles": titles(args.texts, rng)}

    clip = {
        prec: OpenClipEncoder(
            model_name=MODEL_NAME,
            pretrained="",
            precision=prec,
            batch_size=args.batch_size,
            threads=args.threads,
        )
        for prec in ("fp32", "bf16")
    }
    for enc in clip.values():
        enc.model()
    tok = clip["fp32"].model()
    st_long = TextEncoder(max_seq_length=128, batch_size=args.st_batch_size, threads=args.threads)
    st_model = st_long.model().model
    stats, st_short = {}, {}
    for kind, texts in kinds.items():
        clip_len = tok.token_lengths(tok.tokenizer(texts)).numpy()
        st_len = np.array([len(ids) for ids in st_model.tokenizer(texts)["input_ids"]])
        short = int(8 * np.ceil(st_len.max() / 8))
        stats[kind] = (clip_len, st_len, short)
        st_short[kind] = TextEncoder(
            max_seq_length=short, batch_size=args.st_batch_size, threads=args.threads
        )
        st_short[kind].model()
        print(
            f"{kind}: {len(texts)} texts, CLIP tokens mean {clip_len.mean():.1f} max "
            f"{clip_len.max()}; MiniLM tokens mean {st_len.mean():.1f} max {st_len.max()}",
            flush=True,
        )

    def configs(kind: str) -> dict:
        return {
            "CLIP fp32, context 77": lambda t: (
                clip["fp32"]
                .model()
                .encode_texts(t, batch_size=args.batch_size, slice_context=False)
            ),
            "CLIP fp32, sliced": lambda t: clip["fp32"].encode_texts(t),
            "CLIP bf16, context 77": lambda t: (
                clip["bf16"]
                .model()
                .encode_texts(t, batch_size=args.batch_size, slice_context=False)
            ),
            "CLIP bf16, sliced": lambda t: clip["bf16"].encode_texts(t),
            "MiniLM, padded to 128 (hand loop)": lambda t: st_fixed_length(
                st_model, t, 128, args.st_batch_size
            ),
            "MiniLM, TextEncoder max_seq_length 128": lambda t: st_long.encode(t),
            "MiniLM, TextEncoder max_seq_length short": lambda t: st_short[kind].encode(t),
        }

    names = list(configs("titles"))
    # warm-up: first calls allocate and pick kernels
    for kind, texts in kinds.items():
        for fn in configs(kind).values():
            fn(texts[:8])

    secs = {(k, n): 0.0 for k in kinds for n in names}
    done = {(k, n): 0 for k in kinds for n in names}
    outputs: dict = {(k, n): [] for k in kinds for n in names}
    rounds = [
        (kind, lo)
        for _ in range(args.repeats)
        for kind in kinds
        for lo in range(0, args.texts, args.chunk)
    ]
    for r, (kind, lo) in enumerate(rounds):
        chunk = kinds[kind][lo : lo + args.chunk]
        fns = configs(kind)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            emb = fns[name](chunk)
            secs[(kind, name)] += time.perf_counter() - t0
            done[(kind, name)] += len(chunk)
            if len(outputs[(kind, name)]) * args.chunk < args.texts:
                outputs[(kind, name)].append(emb)
        print(f"round {r + 1}/{len(rounds)} ({kind}) done", flush=True)
    load_after = os.getloadavg()

    rate = {key: done[key] / secs[key] for key in secs}
    baseline = {
        "CLIP fp32, context 77": "CLIP fp32, context 77",
        "CLIP fp32, sliced": "CLIP fp32, context 77",
        "CLIP bf16, context 77": "CLIP fp32, context 77",
        "CLIP bf16, sliced": "CLIP fp32, context 77",
        "MiniLM, padded to 128 (hand loop)": "MiniLM, padded to 128 (hand loop)",
        "MiniLM, TextEncoder max_seq_length 128": "MiniLM, padded to 128 (hand loop)",
        "MiniLM, TextEncoder max_seq_length short": "MiniLM, padded to 128 (hand loop)",
    }
    same_prec = {
        "CLIP fp32, sliced": "CLIP fp32, context 77",
        "CLIP bf16, sliced": "CLIP bf16, context 77",
        "MiniLM, TextEncoder max_seq_length short": "MiniLM, TextEncoder max_seq_length 128",
    }

    def cos(kind: str, a: str, b: str) -> float:
        x = np.concatenate(outputs[(kind, a)])
        y = np.concatenate(outputs[(kind, b)])
        return float(np.min(np.sum(x * y, axis=1)))

    rows = []
    for kind in kinds:
        for name in names:
            base = baseline[name]
            pair = same_prec.get(name)
            rows.append(
                [
                    kind,
                    name,
                    f"{rate[(kind, name)]:,.1f}",
                    f"{rate[(kind, name)] / rate[(kind, base)]:.1f}x",
                    f"{rate[(kind, name)] / rate[(kind, pair)]:.1f}x" if pair else "",
                    f"{cos(kind, name, pair):.6f}" if pair else "",
                ]
            )
    table = markdown_table(
        [
            "texts",
            "path",
            "texts/s",
            "vs fp32 context 77 / padded 128",
            "vs same model at full length",
            "min cosine to full length",
        ],
        rows,
    )
    print(table)

    cmd_args = [a if not Path(a).is_absolute() else os.path.relpath(a, REPO) for a in sys.argv]
    command = ".venv/bin/python " + shlex.join(cmd_args)
    token_facts = "; ".join(
        f"{kind}: CLIP tokens mean {c.mean():.1f} / max {c.max()} (incl. start/end), MiniLM "
        f"mean {s.mean():.1f} / max {s.max()} -> short max_seq_length {short}"
        for kind, (c, s, short) in stats.items()
    )
    examples = "; ".join(f'"{kinds[k][0]}"' for k in kinds)
    facts = "\n".join(
        [
            f"- Machine: {machine()}",
            f"- Command (repository root): `{command}`",
            f"- Load average (1/5/15 min) before {_fmt_load(load_before)}, after "
            f"{_fmt_load(load_after)} on {os.cpu_count()} cores (other processes share them); "
            f"wall time {time.perf_counter() - t_start:.0f} s.",
            f"- Input: {args.texts} distinct generated texts per kind (e.g. {examples}); "
            f"{token_facts}. {len(rounds)} rounds of {args.chunk} texts, every configuration in "
            f"every round, order rotating. CLIP batch {args.batch_size}, MiniLM batch "
            f'{args.st_batch_size}; open_clip `{MODEL_NAME}` pretrained="" (random init), '
            "bundled all-MiniLM-L6-v2 (real weights).",
        ]
    )

    def ratio(kind: str, a: str, b: str) -> float:
        return rate[(kind, a)] / rate[(kind, b)]

    n, t = "category names", "titles"
    reading = (
        "Reading: slicing CLIP's context to the batch's longest text speeds the text tower up "
        f"{ratio(n, 'CLIP fp32, sliced', 'CLIP fp32, context 77'):.1f}x for category names and "
        f"{ratio(t, 'CLIP fp32, sliced', 'CLIP fp32, context 77'):.1f}x for titles at fp32; with "
        "bf16 weights on top, "
        f"{ratio(n, 'CLIP bf16, sliced', 'CLIP fp32, context 77'):.1f}x and "
        f"{ratio(t, 'CLIP bf16, sliced', 'CLIP fp32, context 77'):.1f}x over fp32 at context 77, "
        "with identical fp32 embeddings (the tower is causal and pools at the end token, so "
        "padding past it never matters). For MiniLM, sentence-transformers already pads each "
        "batch to its longest text, so lowering max_seq_length changes nothing for texts that "
        f"fit ({ratio(n, 'MiniLM, TextEncoder max_seq_length short', 'MiniLM, TextEncoder max_seq_length 128'):.1f}x"
        f" names, {ratio(t, 'MiniLM, TextEncoder max_seq_length short', 'MiniLM, TextEncoder max_seq_length 128'):.1f}x"
        " titles); the gain is against padding to a fixed 128, "
        f"{ratio(n, 'MiniLM, TextEncoder max_seq_length 128', 'MiniLM, padded to 128 (hand loop)'):.1f}x"
        " for names and "
        f"{ratio(t, 'MiniLM, TextEncoder max_seq_length 128', 'MiniLM, padded to 128 (hand loop)'):.1f}x"
        " for titles (length-sorted batches included). Keep max_seq_length at 128: lowering it "
        "would only truncate long titles. Text is cheap next to images either way: per product "
        "the title costs a fraction of the image forward pass. Threads: on this shared 2-core "
        "machine short texts ran about 3x faster with one torch thread than with two (a 64-text "
        "batch of 5-token names is too little work per op to amortise the OpenMP barrier when "
        "another process holds the other core); `--threads` records the choice in the command."
    )
    body = (
        "## Text embedding: CLIP text tower and MiniLM, shortest context vs full\n\n"
        "Written by `benchmarks/bench_text_embedding.py` (see its docstring).\n\n"
        f"{facts}\n\n{table}\n\n{reading}\n"
    )
    print()
    print(body)
    if not args.no_write:
        write_section("text-embedding", body)
        print(f"written to {os.path.relpath(REPO / 'docs' / 'benchmarks.md')}")


if __name__ == "__main__":
    main()
