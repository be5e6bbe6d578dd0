"""What a generated sample promises: its parameters, its manifest and its summary.

``sample_manifest.json`` holds the generator version, the normalised parameters and the
:class:`SampleSummary`; ``ensure_sample`` reuses a sample only when both of the first two
match, so bump :data:`GENERATOR_VERSION` whenever the output for given params changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the output for a given seed/params changes, so ``ensure_sample`` regenerates.
GENERATOR_VERSION = "1"
MANIFEST_NAME = "sample_manifest.json"
BROKEN_LINES_NAME = "broken_lines.json"
MIN_PRODUCTS = 50
#: ``shape`` values: the hand-written sample tree, or the paper-shaped procedural one.
SAMPLE_SHAPES = ("sample", "paper")
DEFAULT_SHAPE = "sample"


@dataclass(frozen=True)
class SampleSummary:
    """What a generated sample holds; ``broken_lines`` is the ground truth for ingestion tests.

    Identity: ``n_lines == n_products + n_rejected_lines`` where rejected lines are the broken
    lines with an ``expected_reason`` (bar ``corrupt_gzip``, which is not a line) plus one extra
    copy per ``cross_market_asins`` entry.
    """

    out_dir: Path
    #: distinct asins of valid lines (what ``raw_products`` should hold)
    n_products: int
    #: lines a reader gets out of all metadata files (the cut-off tail not included)
    n_lines: int
    n_images: int
    #: distinct category nodes / leaves / roots over the valid products' paths
    n_categories: int
    n_leaves: int
    n_roots: int
    #: one dict per metadata file: market, category, file (relative to xmarket/), n_lines, gzip_ok
    files: list[dict[str, Any]] = field(default_factory=list)
    #: one dict per broken line: market, file, line_no (1-based), kind, expected_reason, asin, detail
    broken_lines: list[dict[str, Any]] = field(default_factory=list)
    #: asins written to more than one market (same product, slightly different title)
    cross_market_asins: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    generator_version: str = GENERATOR_VERSION

    @property
    def xmarket_dir(self) -> Path:
        return self.out_dir / "xmarket"

    @property
    def images_dir(self) -> Path:
        return self.out_dir / "images"

    @property
    def n_rejected_lines(self) -> int:
        broken = sum(
            1
            for b in self.broken_lines
            if b["expected_reason"] is not None and b["kind"] != "corrupt_gzip"
        )
        return broken + len(self.cross_market_asins)

    def to_dict(self) -> dict[str, Any]:
        # out_dir stays out: the manifest is written inside a temp dir that is renamed later.
        data = dataclasses.asdict(self)
        data.pop("out_dir")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], out_dir: str | os.PathLike) -> SampleSummary:
        names = {f.name for f in dataclasses.fields(cls)} - {"out_dir"}
        return cls(out_dir=Path(out_dir), **{k: v for k, v in data.items() if k in names})


def normalise_params(
    *,
    n_products: int = 1200,
    seed: int = 0,
    markets: Sequence[str] | str = ("us", "uk"),
    image_size: int = 64,
    broken_lines: bool = True,
    shape: str = DEFAULT_SHAPE,
) -> dict[str, Any]:
    """Validate the generator knobs and return them in the JSON form the manifest stores.

    ``shape`` is stored only when it is not the default, so samples made before the knob
    existed keep their manifest (and stay valid for ``ensure_sample``).
    """

    def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise ValueError(
                f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}"
            )
        return int(value)

    if isinstance(markets, str):
        markets = (markets,)
    market_list = [str(m).strip().lower() for m in markets]
    if not market_list:
        raise ValueError("markets must name at least one market")
    bad = [m for m in market_list if not re.fullmatch(r"[a-z]{2}", m)]
    if bad:
        raise ValueError(f"markets must be two-letter codes like 'us', got {bad}")
    if len(set(market_list)) != len(market_list):
        raise ValueError(f"markets repeat: {market_list}")
    if not isinstance(broken_lines, bool):
        raise TypeError(f"broken_lines must be a bool, got {broken_lines!r}")
    if not isinstance(shape, str) or shape not in SAMPLE_SHAPES:
        raise ValueError(f"shape must be one of {list(SAMPLE_SHAPES)}, got {shape!r}")
    params = {
        "n_products": _int("n_products", n_products, MIN_PRODUCTS, 1_000_000),
        "seed": _int("seed", seed, 0),
        "markets": market_list,
        "image_size": _int("image_size", image_size, 8, 1024),
        "broken_lines": broken_lines,
    }
    if shape != DEFAULT_SHAPE:
        params["shape"] = shape
    return params


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the manifest files store it: indented, sorted keys, UTF-8, final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``sample_manifest.json`` of ``out_dir``, or None when missing or unreadable."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def matching_summary(out: Path, params: dict[str, Any]) -> SampleSummary | None:
    """The summary of the sample in ``out`` if it was made by this version with ``params``."""
    manifest = read_manifest(out)
    if (
        manifest is None
        or manifest.get("generator_version") != GENERATOR_VERSION
        or manifest.get("params") != params
        or not isinstance(manifest.get("summary"), dict)
    ):
        return None
    try:
        return SampleSummary.from_dict(manifest["summary"], out)
    except TypeError:
        return None
