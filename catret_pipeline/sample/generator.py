"""Seeded sample catalogue in the exact Amazon XMarket layout, with an image mirror.

``generate_sample`` writes::

    out_dir/xmarket/{market}/{Category}/metadata_{market}_{Category}.json.gz
    out_dir/images/<file name of each product's largest imgUrl size>
    out_dir/broken_lines.json        the deliberately broken lines (and why)
    out_dir/sample_manifest.json     params + generator version + summary (written last)

``shape`` picks the category tree: ``"sample"`` (default) the hand-written ``sample_tree.TREE``
(142 categories, depth <= 6); ``"paper"`` a procedural tree shaped like the paper's XMarket US
set (5,471 categories on 9 levels, ~6 attributes per product; see ``paper_tree``).

Same seed and params give byte-identical files (gzip mtime 0, no file name in the header,
every random draw from one seeded stream, no iteration over hash-ordered sets).
``ensure_sample`` generates into a temporary sibling and renames it into place, so readers see
either no sample or a complete one.

The parts: ``manifest`` (params, summary, manifest file), ``sample_tree`` / ``paper_tree`` and
``leaves`` (the category trees), ``vocabulary`` (word lists), ``products`` (records),
``allocation`` (leaves, paths, markets, related links), ``broken`` (broken lines, cut gzip),
``lines`` / ``layout`` (the metadata files, in memory), ``images`` (the mirror's pictures);
this module writes them to disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catret_pipeline.sample.images import render_image
from catret_pipeline.sample.layout import build
from catret_pipeline.sample.manifest import (
    BROKEN_LINES_NAME,
    DEFAULT_SHAPE,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SampleSummary,
    json_bytes,
    matching_summary,
    normalise_params,
    read_manifest,
)


def _prepare_out_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a directory")
        manifest = out / MANIFEST_NAME
        if any(out.iterdir()) and not manifest.exists():
            raise FileExistsError(
                f"{out} is not empty and holds no {MANIFEST_NAME}: refusing to overwrite it"
            )
        # Manifest first: an interrupted regeneration must not look like a finished sample.
        manifest.unlink(missing_ok=True)
        for name in ("xmarket", "images"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / BROKEN_LINES_NAME).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_sample(
    out_dir: str | os.PathLike,
    *,
    n_products: int = 1200,
    seed: int = 0,
    markets: Sequence[str] | str = ("us", "uk"),
    image_size: int = 64,
    broken_lines: bool = True,
    shape: str = DEFAULT_SHAPE,
) -> SampleSummary:
    """Write a seeded XMarket-layout catalogue and its image mirror under ``out_dir``.

    ``out_dir`` must be empty, missing, or a previous sample (it is then replaced in place;
    use ``ensure_sample`` for an atomic swap). ``n_products`` counts valid distinct products;
    broken lines and cross-market repeats come on top.
    """
    params = normalise_params(
        n_products=n_products,
        seed=seed,
        markets=markets,
        image_size=image_size,
        broken_lines=broken_lines,
        shape=shape,
    )
    out = Path(out_dir)
    _prepare_out_dir(out)
    files, imaged, facts = build(params)

    root = out / "xmarket"
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    size = params["image_size"]
    for job in imaged:
        # One generator per product: an image does not depend on how many were drawn before.
        rng = np.random.default_rng([params["seed"], job.index])
        data = render_image(job.root_style, job.leaf_style, rng, size, job.image_format)
        (images / job.image_name).write_bytes(data)

    summary = SampleSummary(out_dir=out, params=params, **facts)
    (out / BROKEN_LINES_NAME).write_bytes(json_bytes(summary.broken_lines))
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "summary": summary.to_dict(),
    }
    (out / MANIFEST_NAME).write_bytes(json_bytes(manifest))
    return summary


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise generators of one sample across processes (Dagster runs may race)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: best effort without a lock
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_sample(out_dir: str | os.PathLike, **params: Any) -> SampleSummary:
    """Return the sample in ``out_dir``, generating it only if missing or made with other params.

    Generation goes to a temporary sibling directory that is renamed into place when complete,
    so a killed run leaves either the previous sample or none, never half of one. Accepts the
    keyword arguments of ``generate_sample``.
    """
    out = Path(out_dir)
    wanted = normalise_params(**params)
    found = matching_summary(out, wanted)
    if found is not None:
        return found
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent / f".{out.name}.lock"):
        found = matching_summary(out, wanted)
        if found is not None:
            return found
        # Under the lock, leftovers of killed runs are nobody's work in progress.
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if out.exists() and (
            not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None)
        ):
            raise FileExistsError(
                f"{out} exists and is not a catret sample (no {MANIFEST_NAME}): refusing to replace it"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            summary = generate_sample(tmp, **wanted)
            if out.exists():
                old = tmp.with_name(tmp.name + "-old")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(summary, out_dir=out)
