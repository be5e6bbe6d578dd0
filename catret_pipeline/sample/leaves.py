"""The leaves products are drawn from: of the hand-written tree, or of the paper-shaped one."""

from __future__ import annotations

from dataclasses import dataclass

from catret_pipeline.sample.sample_tree import TREE, CategorySpec


@dataclass(frozen=True)
class Leaf:
    """One leaf of ``sample_tree.TREE``: its root-to-leaf path and the nouns its titles use."""

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


def tree_leaves(tree: CategorySpec | None = None) -> list[Leaf]:
    """Leaves of the sample tree in a fixed depth-first order."""
    out: list[Leaf] = []

    def walk(node: CategorySpec, prefix: tuple[str, ...]) -> None:
        for name, child in node.items():
            path = (*prefix, name)
            if isinstance(child, dict):
                walk(child, path)
            else:
                out.append(Leaf(len(out), path, tuple(child)))

    walk(TREE if tree is None else tree, ())
    return out


def paper_leaves(seed: int) -> list[Leaf]:
    """Leaves of the paper-shaped tree for ``seed`` (``paper_tree.build_paper_tree``)."""
    from catret_pipeline.sample.paper_tree import build_paper_tree

    return [
        Leaf(i, leaf.path, leaf.nouns, leaf.base_index)
        for i, leaf in enumerate(build_paper_tree(seed))
    ]
