"""Where the products go: leaf draws, path depth, home market, and the related-product links.

Every function draws from the sample's one seeded stream (``ProductBuilder.rng``), passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from catret_pipeline.sample.leaves import Leaf
from catret_pipeline.sample.products import Product

_INTERNAL_NODE_SHARE = 0.06


def allocate_leaves(rng: random.Random, leaves: list[Leaf], n: int) -> list[Leaf]:
    """``n`` leaf draws, Zipf-like (some leaves big, most small), each leaf once if n allows."""
    order = list(leaves)
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(order))]
    base = order if n >= 2 * len(order) else []
    drawn = base + rng.choices(order, weights=weights, k=n - len(base))
    rng.shuffle(drawn)
    return drawn


def assign_paths(rng: random.Random, drawn: list[Leaf]) -> list[tuple[str, ...]]:
    """Mostly the leaf path; a few products stop at an internal node (depth >= 2)."""
    counts: dict[int, int] = {}
    for leaf in drawn:
        counts[leaf.index] = counts.get(leaf.index, 0) + 1
    paths = []
    for leaf in drawn:
        depth = len(leaf.path)
        if depth >= 3 and counts[leaf.index] >= 3 and rng.random() < _INTERNAL_NODE_SHARE:
            counts[leaf.index] -= 1
            paths.append(leaf.path[: rng.randint(2, depth - 1)])
        else:
            paths.append(leaf.path)
    return paths


def assign_markets(rng: random.Random, markets: list[str], drawn: list[Leaf]) -> list[str]:
    """Home market per product; every market gets at least one product of every root."""
    rest = len(markets) - 1
    weights = [0.6] + [0.4 / rest] * rest if rest else [1.0]
    seen: dict[str, int] = {}
    out = []
    for leaf in drawn:
        k = seen.get(leaf.root, 0)
        seen[leaf.root] = k + 1
        if k < len(markets):
            out.append(markets[k])
        else:
            out.append(rng.choices(markets, weights=weights)[0])
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


def link_related(rng: random.Random, products: list[Product]) -> None:
    """Fill each record's ``related`` (also bought / viewed, bought together) lists."""
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
