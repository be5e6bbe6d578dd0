"""A procedural category tree shaped like the paper's XMarket US catalogue.

The paper's set has 38,921 products in 5,471 categories on 9 levels (mean product path depth
4.63). ``sample_tree.TREE`` has 142 nodes and depth <= 6, so ``build_paper_tree`` grows it,
deterministically from a seed, out of its own names: every new node belongs to one vocabulary
leaf (its *base*: nouns, image style) and is named by putting qualifier words in front of the
base name ("Boots" -> "Leather Boots" -> "Waterproof Leather Boots"). Two operations, drawn
until the tree holds ``n_categories`` nodes:

- **widen**: a qualified sibling of the base leaf ("Digital Cameras" gets "Waterproof Digital
  Cameras" next to it): new categories at the vocabulary's depth, which keeps the mean depth
  near the paper's although the tree grows almost 40-fold;
- **deepen**: a leaf of the base's group gets 2-5 qualified children, more likely the shallower
  the leaf (nothing below depth 9); one chain is pushed to depth 9 first so the tree always
  has 9 levels.

A chain holds at most one qualifier of each kind (audience, size, style, type, material) and
a name shows at most the last three, in that adjective order, so deep names stay readable;
siblings always differ (a child adds a qualifier its parent's chain lacks, and every name is
checked against its siblings). The tree depends only on the seed, not on the number of products.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from catret_pipeline.sample import vocabulary as V
from catret_pipeline.sample.sample_tree import TREE, CategorySpec

#: The paper's XMarket US category count (5,471 categories on 9 levels).
PAPER_CATEGORIES = 5471
MAX_DEPTH = 9
#: Share of widen operations; the rest deepen (tuned for a mean leaf depth near 4.75).
_WIDEN_SHARE = 0.78
#: Relative chance of deepening a leaf at each depth (0 from ``MAX_DEPTH`` on).
_DEEPEN_WEIGHT = {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.7, 5: 0.35, 6: 0.2, 7: 0.12, 8: 0.08}
#: Roots that get fewer categories (the generator gives Office Products 3 % of the products).
_LIGHT_ROOTS = ("Office Products",)
_LIGHT_ROOT_WEIGHT = 0.4
#: Most qualifiers a name shows.
_NAME_QUALIFIERS = 3

# kind -> rank in a name (English adjective order: "Kids' Mini Waterproof Leather Boots").
_AUDIENCE, _SIZE, _STYLE, _TYPE, _MATERIAL = range(5)

_GENERIC: dict[int, tuple[str, ...]] = {
    _SIZE: ("Mini", "Compact", "Large", "Extra Large", "Travel", "Slim", "Small", "Oversized"),
    _STYLE: (
        "Classic",
        "Modern",
        "Vintage",
        "Premium",
        "Professional",
        "Heavy-Duty",
        "Lightweight",
        "Foldable",
        "Adjustable",
        "Portable",
        "Eco-Friendly",
        "Deluxe",
        "Everyday",
        "Budget",
    ),
}

#: Audience words per root (a chain holds at most one word of each kind).
_ROOT_AUDIENCES: dict[str, tuple[str, ...]] = {
    "Electronics": ("Kids'", "Gaming"),
    "Home & Kitchen": ("Kids'", "Student"),
    "Sports & Outdoors": ("Kids'", "Women's", "Men's", "Unisex", "Junior", "Adult"),
    "Toys & Games": ("Toddler", "Baby", "Preschool", "Teen"),
    "Office Products": ("Kids'", "Student"),
}

#: Type words per root (closest to the noun after material-free words).
_ROOT_TYPES: dict[str, tuple[str, ...]] = {
    "Electronics": (
        "Bluetooth",
        "USB",
        "Smart",
        "Rechargeable",
        "Universal",
        "Waterproof",
        "Solar",
        "Magnetic",
        "Wall-Mounted",
        "Noise-Reducing",
        "Dual-Port",
        "Wired",
    ),
    "Home & Kitchen": (
        "Electric",
        "Decorative",
        "Stackable",
        "Induction",
        "Scented",
        "Washable",
        "Collapsible",
        "Hand-Held",
        "Cordless",
        "Hanging",
        "Airtight",
        "Wall-Mounted",
    ),
    "Sports & Outdoors": (
        "Waterproof",
        "Reflective",
        "Insulated",
        "Inflatable",
        "Padded",
        "Folding",
        "Trail",
        "Indoor",
        "Outdoor",
        "Competition",
        "Training",
        "Winter",
    ),
    "Toys & Games": (
        "Educational",
        "Musical",
        "Magnetic",
        "Glow-in-the-Dark",
        "Interactive",
        "Battery-Operated",
        "Pull-Along",
        "Pretend Play",
        "Light-Up",
        "Travel-Size",
        "Collectible",
        "Giant",
    ),
    "Office Products": (
        "Refillable",
        "Erasable",
        "Recycled",
        "Coloured",
        "Retractable",
        "Fine-Tip",
        "Spiral-Bound",
        "Magnetic",
        "Pocket",
        "Bulk",
    ),
}


@dataclass(frozen=True)
class PaperLeaf:
    """A leaf of the paper-shaped tree: its path, title nouns and base vocabulary leaf."""

    path: tuple[str, ...]
    nouns: tuple[str, ...]
    #: index of the vocabulary leaf (``leaves.tree_leaves()`` order) it grew from
    base_index: int


@dataclass
class _Node:
    name: str
    depth: int
    base: int | None  # vocabulary leaf index; None for vocabulary internal nodes
    quals: tuple[str, ...] = ()
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    nouns: tuple[str, ...] = ()

    def path(self) -> tuple[str, ...]:
        out: list[str] = []
        node: _Node | None = self
        while node is not None:
            out.append(node.name)
            node = node.parent
        return tuple(reversed(out))


def _pools() -> dict[str, list[tuple[str, int]]]:
    """Root -> (qualifier, kind) pairs, no word repeated, in a fixed order."""
    pools: dict[str, list[tuple[str, int]]] = {}
    for root, vocab in V.ROOTS.items():
        pairs = [(w, _STYLE) for w in vocab.adjectives]
        pairs += [(w, _MATERIAL) for w in vocab.materials]
        pairs += [(w, _TYPE) for w in _ROOT_TYPES[root]]
        pairs += [(w, _AUDIENCE) for w in _ROOT_AUDIENCES[root]]
        for kind, words in _GENERIC.items():
            pairs += [(w, kind) for w in words]
        seen: dict[str, None] = {}
        unique = []
        for word, kind in pairs:
            if word.lower() not in seen:
                seen[word.lower()] = None
                unique.append((word, kind))
        pools[root] = unique
    return pools


def _words(text: str) -> set[str]:
    return {w.strip(",&").lower() for w in text.split()} - {""}


class _Grower:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"catret-paper-tree/{seed}")
        self.pools = _pools()
        self.kind = {w: k for pairs in self.pools.values() for w, k in pairs}
        self.roots: list[_Node] = []
        self.bases: list[_Node] = []  # vocabulary leaves, tree_leaves() order
        self.groups: list[list[_Node]] = []  # per base: leaves of its group
        self.n_nodes = 0
        self._load(TREE, None)

    def _load(self, spec: CategorySpec, parent: _Node | None) -> None:
        for name, child in spec.items():
            depth = 1 if parent is None else parent.depth + 1
            node = _Node(name, depth, None, parent=parent)
            self.n_nodes += 1
            if parent is None:
                self.roots.append(node)
            else:
                parent.children.append(node)
            if isinstance(child, dict):
                self._load(child, node)
            else:
                node.base = len(self.bases)
                node.nouns = tuple(child)
                self.bases.append(node)
                self.groups.append([node])

    def render(self, quals: tuple[str, ...], head: str) -> str:
        shown = [q for q in quals[-_NAME_QUALIFIERS:] if not (_words(q) & _words(head))]
        shown.sort(key=lambda q: self.kind[q])  # stable: equal kinds keep chain order
        return " ".join([*shown, head])

    def _nouns(self, base: _Node, quals: tuple[str, ...]) -> tuple[str, ...]:
        nouns = [self.render(quals[-2:], n) for n in base.nouns]
        nouns.append(self.render(quals[-1:], base.nouns[0]))
        return tuple(dict.fromkeys(nouns))

    def _new_child(self, parent: _Node, base: _Node, chain: tuple[str, ...]) -> _Node | None:
        """A node under ``parent`` whose chain is ``chain`` + one new qualifier, or None."""
        root = base.path()[0]
        taken = {c.name for c in parent.children}
        banned = _words(base.name)
        order = list(self.pools[root])
        self.rng.shuffle(order)
        kinds = {self.kind[q] for q in chain}
        banned = banned.union(*(_words(q) for q in chain))
        for q, kind in order:
            if kind in kinds or _words(q) & banned:
                continue
            quals = (*chain, q)
            name = self.render(quals, base.name)
            if name in taken:
                continue
            node = _Node(name, parent.depth + 1, base.base, quals, parent)
            node.nouns = self._nouns(base, quals)
            parent.children.append(node)
            self.n_nodes += 1
            return node
        return None

    def widen(self, b: int) -> bool:
        base = self.bases[b]
        assert base.parent is not None
        node = self._new_child(base.parent, base, ())
        if node is None:
            return False
        self.groups[b].append(node)
        return True

    def deepen(self, leaf: _Node, budget: int) -> bool:
        base = self.bases[leaf.base]  # type: ignore[index]
        k = min(self.rng.randint(2, 5), budget)
        made = [self._new_child(leaf, base, leaf.quals) for _ in range(k)]
        made = [n for n in made if n is not None]
        if not made:
            return False
        group = self.groups[leaf.base]  # type: ignore[index]
        group.remove(leaf)
        group.extend(made)
        return True

    def pick_leaf(self, b: int) -> _Node | None:
        group = self.groups[b]
        weights = [_DEEPEN_WEIGHT.get(n.depth, 0.0) for n in group]
        if not any(weights):
            return None
        return self.rng.choices(group, weights=weights)[0]

    def grow(self, n_categories: int) -> None:
        heavy = {b for b, n in enumerate(self.bases) if n.path()[0] not in _LIGHT_ROOTS}
        # One chain to the deepest level first: from a deepest vocabulary leaf.
        deepest = max(n.depth for n in self.bases)
        leaf = self.rng.choice(
            [self.bases[b] for b in sorted(heavy) if self.bases[b].depth == deepest]
        )
        while leaf.depth < MAX_DEPTH:
            if not self.deepen(leaf, 2):  # pragma: no cover - needs 3 qualifier kinds of 5
                raise RuntimeError("paper tree: could not reach depth 9")
            leaf = leaf.children[-1]
        weights = [1.0 if b in heavy else _LIGHT_ROOT_WEIGHT for b in range(len(self.bases))]
        stuck = 0
        while self.n_nodes < n_categories:
            b = self.rng.choices(range(len(self.bases)), weights=weights)[0]
            if self.rng.random() < _WIDEN_SHARE:
                ok = self.widen(b)
            else:
                target = self.pick_leaf(b)
                ok = target is not None and self.deepen(target, n_categories - self.n_nodes)
            stuck = 0 if ok else stuck + 1
            if stuck > 10_000:  # pragma: no cover - the pools are far larger than needed
                raise RuntimeError("paper tree: ran out of qualifier words")

    def leaves(self) -> list[PaperLeaf]:
        out: list[PaperLeaf] = []

        def walk(node: _Node) -> None:
            if node.children:
                for child in node.children:
                    walk(child)
            else:
                assert node.base is not None
                out.append(PaperLeaf(node.path(), node.nouns, node.base))

        for root in self.roots:
            walk(root)
        return out


def build_paper_tree(seed: int, n_categories: int = PAPER_CATEGORIES) -> list[PaperLeaf]:
    """Leaves (depth-first, fixed order) of a paper-shaped tree of ``n_categories`` nodes."""
    if n_categories < 200:
        raise ValueError(f"n_categories must be >= 200, got {n_categories}")
    grower = _Grower(seed)
    grower.grow(n_categories)
    return grower.leaves()


def tree_stats(paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """Node count, leaves, depth histograms and mean depth of the tree these paths span.

    ``mean_path_depth`` is over the given paths (one per product, or one per leaf).
    """
    nodes: dict[tuple[str, ...], None] = {}
    for path in paths:
        for d in range(1, len(path) + 1):
            nodes[path[:d]] = None
    parents = {node[:-1] for node in nodes if len(node) > 1}
    leaves = [node for node in nodes if node not in parents]
    return {
        "n_categories": len(nodes),
        "n_leaves": len(leaves),
        "max_depth": max(len(n) for n in nodes),
        "nodes_by_depth": dict(sorted(Counter(len(n) for n in nodes).items())),
        "leaves_by_depth": dict(sorted(Counter(len(n) for n in leaves).items())),
        "mean_path_depth": sum(len(p) for p in paths) / len(paths),
        "n_pairs": sum(len(p) for p in paths),
    }
