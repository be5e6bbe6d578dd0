"""One asset built as parallel part steps plus a merge under the asset's own key.

Both sharded graphs are this shape: a product-level embedding as hash shards of the products
(``embeddings/product_assets`` + ``shard_assets``) and ``hnsw_indexes`` as one step per vector
model (``retrieval/index_assets``). The executor runs the parts side by side; downstream assets
depend only on the merge, so they see the same key, table and row order as the single-step
graph. What the two share is declared here once: the merge's inputs (``part_<i>``, in merge
order) and the check that the graph really has that shape, so a part left out of a merge is
an error at definition time rather than rows silently missing from the merged table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import dagster as dg

T = TypeVar("T")


def _input_name(i: int) -> str:
    return f"part_{i}"


@dataclass(frozen=True)
class FanOut:
    """The part keys of one fanned-out asset, in the order the merge stacks them."""

    keys: tuple[dg.AssetKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a fan-out needs at least one part")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"a fan-out's part keys must be distinct: {self.keys}")

    @property
    def ins(self) -> dict[str, dg.AssetIn]:
        """The merge asset's ``ins`` for the parts (add its other inputs beside them)."""
        return {_input_name(i): dg.AssetIn(key=key) for i, key in enumerate(self.keys)}

    def split(self, inputs: Mapping[str, T]) -> tuple[list[T], dict[str, T]]:
        """The merge's loaded inputs as (the parts in merge order, every other input)."""
        names = [_input_name(i) for i in range(len(self.keys))]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"the merge got no input {missing[0]!r}: it is not this fan-out's")
        others = {k: v for k, v in inputs.items() if k not in set(names)}
        return [inputs[n] for n in names], others


def assemble(
    fan: FanOut, parts: Sequence[dg.AssetsDefinition], merge: dg.AssetsDefinition
) -> list[dg.AssetsDefinition]:
    """``[*parts, merge]`` once the shape holds: the i-th part produces ``fan.keys[i]`` alone
    and the merge reads every part through ``fan.ins``."""
    produced = [tuple(p.keys) for p in parts]
    if produced != [(key,) for key in fan.keys]:
        raise ValueError(
            f"the part assets produce {[list(map(str, k)) for k in produced]}, "
            f"the fan-out expects {[str(k) for k in fan.keys]} in that order"
        )
    read = merge.keys_by_input_name
    for name, key in fan.ins.items():
        if read.get(name) != key.key:
            raise ValueError(
                f"the merge {merge.key.to_user_string()} does not read part {key.key} as {name!r}"
            )
    return [*parts, merge]
