"""A whole sample in memory: the XMarket metadata files, the images to render, the summary facts.

:func:`build` makes every draw of a sample, in a fixed order (products, office products, related
links, cross-market copies, broken lines, the cut-off tail), and returns the gzip bytes of each
``{market}/{Category}/metadata_{market}_{Category}.json.gz`` file; ``generator`` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catret_pipeline.sample import vocabulary as V
from catret_pipeline.sample.allocation import (
    allocate_leaves,
    assign_markets,
    assign_paths,
    link_related,
)
from catret_pipeline.sample.broken import CORRUPT_ROOT, break_lines, cut_office_file
from catret_pipeline.sample.images import LeafStyle, RootStyle
from catret_pipeline.sample.lines import Line, dumps, gzip_bytes, rel_file
from catret_pipeline.sample.products import Product, ProductBuilder

_OFFICE_SHARE = 0.03
_CROSS_MARKET_SHARE = 0.05

#: (market, file name) -> the lines of that metadata file
Files = dict[tuple[str, str], list[Line]]


@dataclass(frozen=True)
class ImageJob:
    """One mirror image to render: the product's index (its image seed), file name and looks."""

    index: int
    image_name: str
    image_format: str
    root_style: RootStyle
    leaf_style: LeafStyle


def category_counts(paths: list[tuple[str, ...]]) -> tuple[int, int, int]:
    """(nodes, leaves, roots) of the tree the category ``paths`` span."""
    nodes: dict[tuple[str, ...], None] = {}
    for path in paths:
        for d in range(1, len(path) + 1):
            nodes[path[:d]] = None
    parents = {node[:-1] for node in nodes if len(node) > 1}
    leaves = sum(1 for node in nodes if node not in parents)
    roots = sum(1 for node in nodes if len(node) == 1)
    return len(nodes), leaves, roots


def _draw_products(b: ProductBuilder, n_total: int) -> tuple[list[Product], list[Product], str]:
    """(products of the main roots, ``CORRUPT_ROOT`` products, the market of the latter)."""
    markets = b.markets
    n_office = max(3, round(n_total * _OFFICE_SHARE))
    main_leaves = [leaf for leaf in b.leaves if leaf.root != CORRUPT_ROOT]

    drawn = allocate_leaves(b.rng, main_leaves, n_total - n_office)
    paths = assign_paths(b.rng, drawn)
    homes = assign_markets(b.rng, markets, drawn)
    products = [
        b.make_product(leaf, path, m) for leaf, path, m in zip(drawn, paths, homes, strict=True)
    ]
    office_market = "uk" if "uk" in markets else markets[-1]
    office_drawn = allocate_leaves(b.rng, b.by_root[CORRUPT_ROOT], n_office)
    office = [b.make_product(leaf, leaf.path, office_market) for leaf in office_drawn]
    link_related(b.rng, products + office)
    return products, office, office_market


def _market_files(b: ProductBuilder, products: list[Product]) -> tuple[Files, list[str]]:
    """The non-empty files of the main roots, and the asins copied to a second market."""
    markets = b.markets
    files: Files = {}
    for m in markets:
        for root, vocab in V.ROOTS.items():
            if root != CORRUPT_ROOT:
                files[(m, vocab.file_name)] = []
    for p in products:
        files[(p.market, V.ROOTS[p.leaf.root].file_name)].append(
            Line(dumps(p.record), p.asin, p.record)
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
                b.rng.randint(0, len(lines)), Line(dumps(record), p.asin, record, protected=True)
            )
            cross.append(p.asin)
        protected = set(cross)
        for lines in files.values():
            for line in lines:
                if line.asin in protected:
                    line.protected = True

    return {key: lines for key, lines in files.items() if lines}, cross


def build(params: dict[str, Any]) -> tuple[dict[str, bytes], list[ImageJob], dict[str, Any]]:
    """Everything but the disk writes: (relative file -> gzip bytes, products to image, facts)."""
    b = ProductBuilder(params)
    n_total = params["n_products"]
    products, office, office_market = _draw_products(b, n_total)
    files, cross = _market_files(b, products)
    if params["broken_lines"]:
        break_lines(b, files)

    broken: list[dict[str, Any]] = []
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
        rel = rel_file(market, file_name)
        out[rel] = gzip_bytes(b"".join(line.data + b"\n" for line in lines))
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
    rel = rel_file(office_market, office_file)
    good = b"".join(dumps(p.record) + b"\n" for p in office)
    for p in office:
        seen[p.asin] = None
        valid_paths.append(p.path)
    if params["broken_lines"]:
        out[rel], entry = cut_office_file(b, office, office_market, rel, good)
        broken.append(entry)
    else:
        out[rel] = gzip_bytes(good)
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

    n_categories, n_leaves, n_roots = category_counts(valid_paths)
    imaged = [
        ImageJob(
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
