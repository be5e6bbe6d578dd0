"""Seeded sample catalogue in the exact Amazon XMarket layout, with an image mirror.

``generate_sample`` writes::

    out_dir/xmarket/{market}/{Category}/metadata_{market}_{Category}.json.gz
    out_dir/images/<file name of each product's largest imgUrl size>
    out_dir/broken_lines.json        the deliberately broken lines (and why)
    out_dir/sample_manifest.json     params + generator version + summary (written last)

``shape`` picks the category tree: ``"sample"`` (default) the hand-written ``vocabulary.TREE``
(142 categories, depth <= 6); ``"paper"`` a procedural tree shaped like the paper's XMarket US
set (5,471 categories on 9 levels, ~6 attributes per product; see ``paper_tree``).

Same seed and params give byte-identical files (gzip mtime 0, no file name in the header,
every random draw from one seeded stream, no iteration over hash-ordered sets).
``ensure_sample`` generates into a temporary sibling and renames it into place, so readers see
either no sample or a complete one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import math
import os
import random
import re
import shutil
import string
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catret_pipeline.sample import vocabulary as V
from catret_pipeline.sample.images import COLOURS, SHAPES, LeafStyle, RootStyle, render_image

#: Bump when the output for a given seed/params changes, so ``ensure_sample`` regenerates.
GENERATOR_VERSION = "1"
MANIFEST_NAME = "sample_manifest.json"
BROKEN_LINES_NAME = "broken_lines.json"
MIN_PRODUCTS = 50
#: ``shape`` values: the hand-written sample tree, or the paper-shaped procedural one.
SAMPLE_SHAPES = ("sample", "paper")
DEFAULT_SHAPE = "sample"

#: Broken-line kind -> the quarantine reason the ingestion should give it (None: the line is
#: a valid product that only a tolerant parser reads).
BROKEN_KINDS: dict[str, str | None] = {
    "truncated_json": "invalid_json",
    "python_literal": None,
    "missing_title": "missing_title",
    "missing_categories": "missing_categories",
    "wrong_type_categories": "wrong_type:categories",
    "wrong_type_title": "wrong_type:title",
    "invalid_utf8": "invalid_utf8",
    "duplicate_asin": "duplicate_asin",
    "missing_asin": "missing_asin",
    "corrupt_gzip": "corrupt_gzip",
}

#: The root whose single small file carries the cut-off gzip stream.
CORRUPT_ROOT = "Office Products"
_OFFICE_SHARE = 0.03
_CROSS_MARKET_SHARE = 0.05
_INTERNAL_NODE_SHARE = 0.06
_NO_IMAGE_SHARE = 0.03
_PNG_SHARE = 0.12
_ODD_IMAGE_SHARE = 0.05
_LOST_TAIL_LINES = 3

_ASIN_CHARS = string.ascii_uppercase + string.digits
_IMAGE_ID_CHARS = string.ascii_letters + string.digits
_IMAGE_BASE = "https://m.media-amazon.com/images/I/"
_SX_WIDTHS = (300, 342, 385, 425, 466, 522, 569, 679)
_SY_HEIGHTS = (355, 450, 500, 550, 679)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# --------------------------------------------------------------------------- public types


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


@dataclass(frozen=True)
class Leaf:
    """One leaf of ``vocabulary.TREE``: its root-to-leaf path and the nouns its titles use."""

    index: int
    path: tuple[str, ...]
    nouns: tuple[str, ...]
    #: which leaf's image style it uses (None: its own index); paper leaves use their base's
    style_index: int | None = None

    @property
    def root(self) -> str:
        return self.path[0]

    @property
    def style_key(self) -> int:
        return self.index if self.style_index is None else self.style_index


def tree_leaves(tree: V.CategorySpec | None = None) -> list[Leaf]:
    """Leaves of the sample tree in a fixed depth-first order."""
    out: list[Leaf] = []

    def walk(node: V.CategorySpec, prefix: tuple[str, ...]) -> None:
        for name, child in node.items():
            path = (*prefix, name)
            if isinstance(child, dict):
                walk(child, path)
            else:
                out.append(Leaf(len(out), path, tuple(child)))

    walk(V.TREE if tree is None else tree, ())
    return out


def paper_leaves(seed: int) -> list[Leaf]:
    """Leaves of the paper-shaped tree for ``seed`` (``paper_tree.build_paper_tree``)."""
    from catret_pipeline.sample.paper_tree import build_paper_tree

    return [
        Leaf(i, leaf.path, leaf.nouns, leaf.base_index)
        for i, leaf in enumerate(build_paper_tree(seed))
    ]


# --------------------------------------------------------------------------- params


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


# --------------------------------------------------------------------------- building


@dataclass
class _Product:
    index: int
    asin: str
    leaf: Leaf
    path: tuple[str, ...]
    market: str
    record: dict[str, Any]
    image_name: str | None
    image_format: str
    style_leaf: Leaf


@dataclass
class _Line:
    data: bytes
    asin: str | None
    record: dict[str, Any] | None = None
    #: a valid product line (first copies and repeats alike)
    valid: bool = True
    #: left alone when picking lines to break or duplicate
    protected: bool = False
    entry: dict[str, Any] | None = None


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


class _Builder:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.seed: int = params["seed"]
        self.markets: list[str] = params["markets"]
        self.rng = random.Random(f"catret-sample/{self.seed}")
        #: paper shape: its own tree, and fewer attribute strings (the paper's 5.87)
        self.paper = params.get("shape", DEFAULT_SHAPE) == "paper"
        self.leaves = paper_leaves(self.seed) if self.paper else tree_leaves()
        self.by_root: dict[str, list[Leaf]] = {}
        for leaf in self.leaves:
            self.by_root.setdefault(leaf.root, []).append(leaf)
        self.root_styles = {
            name: RootStyle(vocab.background, vocab.texture) for name, vocab in V.ROOTS.items()
        }
        combos = [(s, c) for s in SHAPES for c in COLOURS]
        self.rng.shuffle(combos)
        # 100 (shape, colour) pairs for 80 leaves: every leaf of the tree looks different
        # (paper leaves look like the vocabulary leaf they grew from).
        self.leaf_styles = {
            leaf.index: LeafStyle(*combos[leaf.style_key % len(combos)]) for leaf in self.leaves
        }
        self._asins: set[str] = set()
        self._image_ids: set[str] = set()
        self._n_products = 0
        #: products behind broken lines: imaged too, so every readable imgUrl has a mirror file
        self.broken_products: list[_Product] = []

    # ---- identifiers

    def new_asin(self) -> str:
        while True:
            asin = "B0" + "".join(self.rng.choices(_ASIN_CHARS, k=8))
            if asin not in self._asins:
                self._asins.add(asin)
                return asin

    def new_image_id(self) -> str:
        while True:
            body = "".join(self.rng.choices(_IMAGE_ID_CHARS, k=9))
            if self.rng.random() < 0.3:
                cut = self.rng.randint(1, 8)
                body = body[:cut] + "-" + body[cut + 1 :]
            image_id = self.rng.choice(("41", "51", "61", "71", "81", "91")) + body
            if image_id not in self._image_ids:
                self._image_ids.add(image_id)
                return image_id

    # ---- record parts

    def _img_url(self) -> tuple[str, str | None, str]:
        """Return (imgUrl string, file name of its largest size or None, image format)."""
        rng = self.rng
        if rng.random() < _NO_IMAGE_SHARE:
            return "[]", None, "JPEG"
        image_format = "PNG" if rng.random() < _PNG_SHARE else "JPEG"
        ext = "png" if image_format == "PNG" else "jpg"
        image_id = self.new_image_id()
        aspect = rng.uniform(0.55, 1.35)  # height / width
        k = rng.choice((2, 3, 3))
        if rng.random() < 0.15:
            sizes = [(f"_AC_SY{h}_", [h, round(h / aspect)]) for h in rng.sample(_SY_HEIGHTS, k)]
        else:
            sizes = [(f"_AC_SX{w}_", [round(w * aspect), w]) for w in rng.sample(_SX_WIDTHS, k)]
        sizes.sort(key=lambda s: s[1][0] * s[1][1], reverse=rng.random() < 0.5)
        urls = {f"{_IMAGE_BASE}{image_id}.{token}.{ext}": hw for token, hw in sizes}
        largest = max(sizes, key=lambda s: s[1][0] * s[1][1])[0]
        return json.dumps(urls), f"{image_id}.{largest}.{ext}", image_format

    def _title(
        self, leaf: Leaf, vocab: V.RootVocabulary, brand: str, colour: str, material: str
    ) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.85:
            noun = rng.choice(leaf.nouns)
        elif r < 0.95:
            noun = rng.choice(rng.choice(self.by_root[leaf.root]).nouns)
        else:
            noun = rng.choice(V.GENERIC_NOUNS)
        adj = rng.choice(vocab.adjectives)
        generic = rng.choice(V.GENERIC_ADJECTIVES)
        use = rng.choice(vocab.uses)
        pattern = rng.randrange(5)
        if pattern == 0:
            return f"{brand} {adj} {noun}, {colour}"
        if pattern == 1:
            return f"{brand} {generic} {adj} {noun} for {use}"
        if pattern == 2:
            return f"{noun} by {brand} - {generic} {material} Design ({colour})"
        if pattern == 3:
            return f"{brand} {noun}, {adj}, {material}, Color: {colour}"
        return f"{brand} {generic} {noun} - {adj} {noun.split()[-1]} for {use}, {colour}"

    def _rating_dist(self, avg: float) -> dict[str, int]:
        weights = [math.exp(-((s - avg) ** 2) / 1.2) for s in range(5, 0, -1)]
        total = sum(weights)
        pct = [round(100 * w / total) for w in weights]
        pct[0] += 100 - sum(pct)
        return {str(s): p for s, p in zip(range(5, 0, -1), pct, strict=True)}

    def make_product(self, leaf: Leaf, path: tuple[str, ...], market: str) -> _Product:
        rng = self.rng
        vocab = V.ROOTS[leaf.root]
        domain, currency = V.MARKET_DOMAINS.get(market, (f"amazon.{market}", "$"))
        brand = rng.choice(vocab.brands)
        colour = rng.choice(vocab.colours)
        material = rng.choice(vocab.materials)
        use = rng.choice(vocab.uses)
        noun_for_text = rng.choice(leaf.nouns)
        asin = self.new_asin()
        title = self._title(leaf, vocab, brand, colour, material)
        ctx = {
            "noun": noun_for_text.lower(),
            "material": material.lower(),
            "colour": colour.lower(),
            "brand": brand,
            "use": use,
            "use_lower": use.lower(),
            "use_upper": use.upper(),
            "number": rng.randint(2, 12),
        }
        lo_f, hi_f = (1, 3) if self.paper else (2, 5)
        features = [
            f.format(**ctx)
            for f in rng.sample(vocab.features, rng.randint(lo_f, min(hi_f, len(vocab.features))))
        ]
        if rng.random() < 0.05:
            features = []
        description = " ".join(
            d.format(**ctx) for d in rng.sample(vocab.descriptions, rng.randint(1, 2))
        )
        if rng.random() < 0.08:
            description = ""
        colour_key = "Colour" if market != "us" else "Color"
        details = {
            "Manufacturer": brand,
            "Item model number": f"{brand[:3].upper()}-{rng.randint(10, 999)}{rng.choice('ABCDEFHJKLMNPRSTX')}",
            colour_key: colour,
            "Material": material,
        }
        for key, values in rng.sample(
            vocab.extra_details, rng.randint(0, min(2, len(vocab.extra_details)))
        ):
            details[key] = rng.choice(values)
        details["Item Weight"] = f"{rng.randint(20, 4000)} g"
        year, month, day = rng.randint(2014, 2021), rng.randrange(12), rng.randint(1, 28)
        details["Date First Available"] = (
            f"{_MONTHS[month]} {day}, {year}"
            if market == "us"
            else f"{day} {_MONTHS[month][:3]}. {year}"
        )
        if self.paper:
            # 2-6 of the 7-9 details: with 1-3 features about 6 attribute strings a product.
            keep = set(rng.sample(range(len(details)), rng.randint(2, 6)))
            details = {k: v for i, (k, v) in enumerate(details.items()) if i in keep}
        elif rng.random() < 0.3:
            details.pop(rng.choice(["Material", colour_key, "Item model number"]))
        avg = round(rng.uniform(2.8, 5.0), 1)
        lo, hi = vocab.price_range
        price = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        img_url, image_name, image_format = self._img_url()
        overview = {"Brand": brand, colour_key: colour}
        if rng.random() < 0.6:
            overview["Material"] = material
        record = {
            "asin": asin,
            "title": title,
            "averageRating": avg,
            "ratingCount": int(math.exp(rng.uniform(0, 9))),
            "amazon_badge": rng.choice(V.BADGES),
            "ratingDist": self._rating_dist(avg),
            "ratingByFeature": {
                f: round(rng.uniform(3.4, 5.0), 1)
                for f in rng.sample(V.RATING_FEATURES, rng.randint(0, 3))
            },
            "price": "" if rng.random() < 0.05 else f"{currency}{price:.2f}",
            "imgUrl": img_url,
            "related": {},
            "productDetails": details,
            "sellerPage": f"https://www.{domain}/s?me=A{''.join(rng.choices(_ASIN_CHARS, k=12))}",
            "categories": list(path),
            "description": description,
            "overviewFeatures": overview,
            "features": features,
            "reviewFilters": rng.sample(V.REVIEW_FILTER_WORDS, rng.randint(0, 4)),
        }
        style_leaf = leaf
        if rng.random() < _ODD_IMAGE_SHARE:
            style_leaf = rng.choice(self.by_root[leaf.root])
        product = _Product(
            self._n_products, asin, leaf, path, market, record, image_name, image_format, style_leaf
        )
        self._n_products += 1
        return product

    def market_copy(self, product: _Product, market: str) -> dict[str, Any]:
        """The same product as another market lists it: localised title, price and seller."""
        record = json.loads(json.dumps(product.record))
        title = record["title"]
        for us, uk in V.UK_SPELLINGS.items():
            title = re.sub(rf"\b{us}\b", uk, title)
        if title == record["title"]:
            suffix = " (UK Plug)" if product.leaf.root == "Electronics" else " - UK Edition"
            title += suffix if market == "uk" else f" [{market.upper()}]"
        record["title"] = title
        domain, currency = V.MARKET_DOMAINS.get(market, (f"amazon.{market}", "$"))
        if record["price"]:
            amount = float(re.sub(r"[^0-9.]", "", record["price"])) * self.rng.uniform(0.75, 0.95)
            record["price"] = f"{currency}{amount:.2f}"
        record["sellerPage"] = re.sub(r"www\.[^/]+/", f"www.{domain}/", record["sellerPage"])
        for section in ("productDetails", "overviewFeatures"):
            if market != "us" and "Color" in record[section]:
                record[section] = {
                    ("Colour" if k == "Color" else k): v for k, v in record[section].items()
                }
        return record

    # ---- allocation

    def allocate_leaves(self, leaves: list[Leaf], n: int) -> list[Leaf]:
        """``n`` leaf draws, Zipf-like (some leaves big, most small), each leaf once if n allows."""
        order = list(leaves)
        self.rng.shuffle(order)
        weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(order))]
        base = order if n >= 2 * len(order) else []
        drawn = base + self.rng.choices(order, weights=weights, k=n - len(base))
        self.rng.shuffle(drawn)
        return drawn

    def assign_paths(self, drawn: list[Leaf]) -> list[tuple[str, ...]]:
        """Mostly the leaf path; a few products stop at an internal node (depth >= 2)."""
        counts: dict[int, int] = {}
        for leaf in drawn:
            counts[leaf.index] = counts.get(leaf.index, 0) + 1
        paths = []
        for leaf in drawn:
            depth = len(leaf.path)
            if depth >= 3 and counts[leaf.index] >= 3 and self.rng.random() < _INTERNAL_NODE_SHARE:
                counts[leaf.index] -= 1
                paths.append(leaf.path[: self.rng.randint(2, depth - 1)])
            else:
                paths.append(leaf.path)
        return paths

    def assign_markets(self, drawn: list[Leaf]) -> list[str]:
        """Home market per product; every market gets at least one product of every root."""
        rest = len(self.markets) - 1
        weights = [0.6] + [0.4 / rest] * rest if rest else [1.0]
        seen: dict[str, int] = {}
        out = []
        for leaf in drawn:
            k = seen.get(leaf.root, 0)
            seen[leaf.root] = k + 1
            if k < len(self.markets):
                out.append(self.markets[k])
            else:
                out.append(self.rng.choices(self.markets, weights=weights)[0])
        return out


class _Without(Sequence[str]):
    """``items`` without its element at ``skip``, as a view: ``random.sample`` draws the same
    as from the filtered list, without copying a 10,000-asin root list once per product."""

    def __init__(self, items: list[str], skip: int) -> None:
        self.items, self.skip = items, skip

    def __len__(self) -> int:
        return len(self.items) - 1

    def __getitem__(self, i):  # type: ignore[override]
        # i >= 0 only (random.sample); i == len(self) reaches past the list: IndexError.
        return self.items[i + (i >= self.skip)]


def _link_related(builder: _Builder, products: list[_Product]) -> None:
    by_leaf: dict[int, list[str]] = {}
    by_root: dict[str, list[str]] = {}
    # Each asin's position in its leaf and root lists (asins are unique among products).
    at: dict[str, tuple[int, int]] = {}
    for p in products:
        leaf_list = by_leaf.setdefault(p.leaf.index, [])
        root_list = by_root.setdefault(p.leaf.root, [])
        at[p.asin] = (len(leaf_list), len(root_list))
        leaf_list.append(p.asin)
        root_list.append(p.asin)
    rng = builder.rng
    for p in products:
        if rng.random() < 0.2:
            continue
        in_leaf, in_root = at[p.asin]
        same_leaf = _Without(by_leaf[p.leaf.index], in_leaf)
        same_root = _Without(by_root[p.leaf.root], in_root)
        p.record["related"] = {
            "alsoBought": rng.sample(same_root, min(len(same_root), rng.randint(0, 3))),
            "alsoViewed": rng.sample(same_leaf, min(len(same_leaf), rng.randint(0, 4))),
            "boughtTogether": rng.sample(same_leaf, min(len(same_leaf), rng.randint(0, 2))),
        }


def _rel_file(market: str, file_name: str) -> str:
    return f"{market}/{file_name}/metadata_{market}_{file_name}.json.gz"


def _break_line(
    builder: _Builder,
    kind: str,
    market: str,
    file_name: str,
    lines: list[_Line],
) -> None:
    """Insert (or, for ``python_literal``, rewrite) one broken line in ``lines``."""
    rng = builder.rng
    rel = _rel_file(market, file_name)
    entry: dict[str, Any] = {
        "market": market,
        "file": rel,
        "line_no": None,
        "kind": kind,
        "expected_reason": BROKEN_KINDS[kind],
        "asin": None,
        "detail": "",
    }
    eligible = [i for i, line in enumerate(lines) if line.valid and not line.protected]
    if kind == "python_literal":
        i = rng.choice(eligible)
        line = lines[i]
        assert line.record is not None
        line.data = repr(line.record).encode("utf-8")
        line.protected = True
        line.entry = entry
        entry.update(asin=line.asin, detail="single-quoted Python dict; valid via ast.literal_eval")
        return
    if kind == "duplicate_asin":
        i = rng.choice(eligible)
        original = lines[i]
        original.protected = True
        assert original.record is not None
        record = json.loads(json.dumps(original.record))
        record["title"] = record["title"] + " (Renewed)"
        entry.update(asin=original.asin, detail="same asin as an earlier line of this file")
        lines.insert(
            rng.randint(i + 1, len(lines)),
            _Line(_dumps(record), original.asin, record, valid=False, protected=True, entry=entry),
        )
        return
    root = next(r for r, v in V.ROOTS.items() if v.file_name == file_name)
    leaf = rng.choice(builder.by_root[root])
    product = builder.make_product(leaf, leaf.path, market)
    builder.broken_products.append(product)
    record = product.record
    asin: str | None = record["asin"]
    if kind == "truncated_json":
        text = json.dumps(record, ensure_ascii=False)
        data = text[: int(len(text) * rng.uniform(0.3, 0.8))].encode("utf-8")
        detail = "JSON object cut off mid-line"
    elif kind == "invalid_utf8":
        record["title"] = "Café " + record["title"]
        data = _dumps(record).replace("é".encode(), "é".encode("latin-1"))
        detail = "latin-1 encoded é in an otherwise valid JSON line"
    else:
        if kind == "missing_title":
            del record["title"]
            detail = "no title field"
        elif kind == "missing_categories":
            del record["categories"]
            detail = "no categories field"
        elif kind == "wrong_type_categories":
            record["categories"] = " > ".join(leaf.path)
            detail = "categories is a string, not a list"
        elif kind == "wrong_type_title":
            record["title"] = rng.randint(10_000, 99_999)
            detail = "title is a number"
        elif kind == "missing_asin":
            del record["asin"]
            asin = None
            detail = "no asin field"
        else:
            raise ValueError(f"unknown broken-line kind {kind!r}")
        data = _dumps(record)
    entry.update(asin=asin, detail=detail)
    lines.insert(
        rng.randint(0, len(lines)),
        _Line(data, asin, None, valid=False, protected=True, entry=entry),
    )


def _cut_gzip(good: bytes, lost: bytes) -> bytes:
    """A gzip stream holding ``good`` intact, then cut a few bytes into the next deflate block.

    A full flush after ``good`` makes every good line decodable; the stream then ends inside
    the following block's header, so readers get ``good`` and then an "ended before the
    end-of-stream marker" error, with no partial line in between.
    """
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = comp.compress(good) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(lost) + comp.flush()
    for keep in (5, 0):
        blob = head + tail[:keep]
        dec = zlib.decompressobj(31)
        if dec.decompress(blob) == good and not dec.eof:
            return blob
    raise AssertionError("could not build a cleanly cut gzip stream")  # pragma: no cover


def _gzip(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the bytes depend only on the content.
    return gzip.compress(data, compresslevel=6, mtime=0)


def _category_counts(paths: list[tuple[str, ...]]) -> tuple[int, int, int]:
    nodes: dict[tuple[str, ...], None] = {}
    for path in paths:
        for d in range(1, len(path) + 1):
            nodes[path[:d]] = None
    parents = {node[:-1] for node in nodes if len(node) > 1}
    leaves = sum(1 for node in nodes if node not in parents)
    roots = sum(1 for node in nodes if len(node) == 1)
    return len(nodes), leaves, roots


@dataclass(frozen=True)
class _ImageJob:
    index: int
    image_name: str
    image_format: str
    root_style: RootStyle
    leaf_style: LeafStyle


def _build(params: dict[str, Any]) -> tuple[dict[str, bytes], list[_ImageJob], dict[str, Any]]:
    """Everything but the disk writes: (relative file -> gzip bytes, products to image, facts)."""
    b = _Builder(params)
    markets = b.markets
    n_total = params["n_products"]
    n_office = max(3, round(n_total * _OFFICE_SHARE))
    main_leaves = [leaf for leaf in b.leaves if leaf.root != CORRUPT_ROOT]

    drawn = b.allocate_leaves(main_leaves, n_total - n_office)
    paths = b.assign_paths(drawn)
    homes = b.assign_markets(drawn)
    products = [
        b.make_product(leaf, path, m) for leaf, path, m in zip(drawn, paths, homes, strict=True)
    ]
    office_market = "uk" if "uk" in markets else markets[-1]
    office_drawn = b.allocate_leaves(b.by_root[CORRUPT_ROOT], n_office)
    office = [b.make_product(leaf, leaf.path, office_market) for leaf in office_drawn]
    _link_related(b, products + office)

    files: dict[tuple[str, str], list[_Line]] = {}
    for m in markets:
        for root, vocab in V.ROOTS.items():
            if root != CORRUPT_ROOT:
                files[(m, vocab.file_name)] = []
    for p in products:
        files[(p.market, V.ROOTS[p.leaf.root].file_name)].append(
            _Line(_dumps(p.record), p.asin, p.record)
        )

    cross: list[str] = []
    if len(markets) > 1:
        firsts = [p for p in products if p.market == markets[0]]
        n_cross = max(2, round(len(products) * _CROSS_MARKET_SHARE))
        for p in b.rng.sample(firsts, min(n_cross, len(firsts))):
            target = markets[1] if len(markets) == 2 else b.rng.choice(markets[1:])
            record = b.market_copy(p, target)
            lines = files[(target, V.ROOTS[p.leaf.root].file_name)]
            lines.insert(
                b.rng.randint(0, len(lines)), _Line(_dumps(record), p.asin, record, protected=True)
            )
            cross.append(p.asin)
        protected = set(cross)
        for lines in files.values():
            for line in lines:
                if line.asin in protected:
                    line.protected = True

    files = {key: lines for key, lines in files.items() if lines}
    broken: list[dict[str, Any]] = []
    if params["broken_lines"]:
        keys = sorted(files)
        kinds = [k for k in BROKEN_KINDS if k != "corrupt_gzip"]
        for k, kind in enumerate(kinds):
            market, file_name = keys[(k * 5) % len(keys)]
            _break_line(b, kind, market, file_name, files[(market, file_name)])

    out: dict[str, bytes] = {}
    file_rows: list[dict[str, Any]] = []
    seen: dict[str, None] = {}
    valid_paths: list[tuple[str, ...]] = []
    by_asin = {p.asin: p for p in products + office}
    for market, file_name in sorted(files):
        lines = files[(market, file_name)]
        for no, line in enumerate(lines, start=1):
            if line.entry is not None:
                line.entry["line_no"] = no
                broken.append(line.entry)
            if line.valid and line.asin not in seen:
                seen[line.asin] = None
                valid_paths.append(by_asin[line.asin].path)
        rel = _rel_file(market, file_name)
        out[rel] = _gzip(b"".join(line.data + b"\n" for line in lines))
        file_rows.append(
            {
                "market": market,
                "category": file_name,
                "file": rel,
                "n_lines": len(lines),
                "gzip_ok": True,
            }
        )

    office_file = V.ROOTS[CORRUPT_ROOT].file_name
    rel = _rel_file(office_market, office_file)
    good = b"".join(_dumps(p.record) + b"\n" for p in office)
    for p in office:
        seen[p.asin] = None
        valid_paths.append(p.path)
    if params["broken_lines"]:
        lost_products = [
            b.make_product(leaf, leaf.path, office_market)
            for leaf in b.rng.choices(b.by_root[CORRUPT_ROOT], k=_LOST_TAIL_LINES)
        ]
        lost = b"".join(_dumps(p.record) + b"\n" for p in lost_products)
        out[rel] = _cut_gzip(good, lost)
        broken.append(
            {
                "market": office_market,
                "file": rel,
                "line_no": len(office) + 1,
                "kind": "corrupt_gzip",
                "expected_reason": BROKEN_KINDS["corrupt_gzip"],
                "asin": None,
                "detail": f"gzip stream cut off after {len(office)} complete lines "
                f"({_LOST_TAIL_LINES} lines lost)",
            }
        )
    else:
        out[rel] = _gzip(good)
    file_rows.append(
        {
            "market": office_market,
            "category": office_file,
            "file": rel,
            "n_lines": len(office),
            "gzip_ok": not params["broken_lines"],
        }
    )
    file_rows.sort(key=lambda r: r["file"])
    broken.sort(key=lambda e: (e["file"], e["line_no"]))

    n_categories, n_leaves, n_roots = _category_counts(valid_paths)
    imaged = [
        _ImageJob(
            p.index,
            p.image_name,
            p.image_format,
            b.root_styles[p.leaf.root],
            b.leaf_styles[p.style_leaf.index],
        )
        for p in products + office + b.broken_products
        if p.image_name is not None
    ]
    facts = {
        "n_products": len(seen),
        "n_lines": sum(r["n_lines"] for r in file_rows),
        "n_images": len(imaged),
        "n_categories": n_categories,
        "n_leaves": n_leaves,
        "n_roots": n_roots,
        "files": file_rows,
        "broken_lines": broken,
        "cross_market_asins": sorted(cross),
    }
    if facts["n_products"] != n_total:  # pragma: no cover - guards the bookkeeping above
        raise AssertionError(f"built {facts['n_products']} products, wanted {n_total}")
    return out, imaged, facts


# --------------------------------------------------------------------------- writing


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


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


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
    files, imaged, facts = _build(params)

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
    (out / BROKEN_LINES_NAME).write_bytes(_json_bytes(summary.broken_lines))
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "summary": summary.to_dict(),
    }
    (out / MANIFEST_NAME).write_bytes(_json_bytes(manifest))
    return summary


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``sample_manifest.json`` of ``out_dir``, or None when missing or unreadable."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _matching_summary(out: Path, params: dict[str, Any]) -> SampleSummary | None:
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
    found = _matching_summary(out, wanted)
    if found is not None:
        return found
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent / f".{out.name}.lock"):
        found = _matching_summary(out, wanted)
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
