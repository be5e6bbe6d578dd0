"""The one fan-out / merge shape both sharded graphs use (embedding shards, index steps)."""

from __future__ import annotations

import dagster as dg
import pytest

from catret_pipeline.fan_out import FanOut, assemble


def _part(key: dg.AssetKey) -> dg.AssetsDefinition:
    @dg.asset(key=key)
    def part() -> int:
        return len(key.path)

    return part


def _merge(fan: FanOut, ins: dict | None = None) -> dg.AssetsDefinition:
    @dg.asset(name="whole", ins=ins if ins is not None else fan.ins)
    def whole(**inputs: int) -> list[int]:
        parts, _ = fan.split(inputs)
        return parts

    return whole


def test_parts_merge_in_fan_order_through_a_real_run():
    fan = FanOut((dg.AssetKey(["p", "b"]), dg.AssetKey(["p", "a", "x"])))
    assets = assemble(fan, [_part(k) for k in fan.keys], _merge(fan))
    result = dg.materialize(assets, instance=dg.DagsterInstance.ephemeral())
    assert result.output_for_node("whole") == [2, 3]  # fan order, not key order


def test_split_keeps_the_other_inputs_apart():
    fan = FanOut((dg.AssetKey("a"), dg.AssetKey("b")))
    parts, others = fan.split({"part_1": "B", "products": "P", "part_0": "A"})
    assert parts == ["A", "B"] and others == {"products": "P"}
    with pytest.raises(ValueError, match="part_1"):
        fan.split({"part_0": "A"})


def test_a_graph_of_another_shape_is_refused():
    keys = (dg.AssetKey("a"), dg.AssetKey("b"))
    fan = FanOut(keys)
    with pytest.raises(ValueError, match="expects"):
        assemble(fan, [_part(keys[1]), _part(keys[0])], _merge(fan))  # parts out of order
    with pytest.raises(ValueError, match="expects"):
        assemble(fan, [_part(keys[0])], _merge(fan))  # a part missing
    short = {"part_0": dg.AssetIn(key=keys[0])}
    with pytest.raises(ValueError, match="does not read part"):
        assemble(fan, [_part(k) for k in keys], _merge(fan, short))  # merge skips a part
    with pytest.raises(ValueError, match="distinct"):
        FanOut((keys[0], keys[0]))
    with pytest.raises(ValueError, match="at least one"):
        FanOut(())
