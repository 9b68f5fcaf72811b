"""A whole re-plan holds only what has not left a node: `plan_what_has_not_left`, pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.contract.common import SkuLine
from orchestrator.contract.examples import example
from orchestrator.contract.pipeline import PlanDecided, Repair
from orchestrator.domain.already_left import plan_what_has_not_left

BASE_PLAN = example("plan.decided.v1")
assert isinstance(BASE_PLAN, PlanDecided)
BASE_SHIPMENT = BASE_PLAN.shipments[0]
LINES = ("1", "2", "3")


def plan(shipments: list[list[tuple[str, int]]], waiting: Sequence[tuple[str, int]] = ()) -> PlanDecided:
    return BASE_PLAN.model_copy(
        update={
            "shipments": tuple(
                BASE_SHIPMENT.model_copy(
                    update={
                        "shipment_id": f"S{k}",
                        "node_id": f"N{k}",
                        "lines": tuple(SkuLine(line_id=i, sku=f"SKU-{i}", quantity=q) for i, q in lines),
                    }
                )
                for k, lines in enumerate(shipments)
            ),
            "backordered": tuple(SkuLine(line_id=i, sku=f"SKU-{i}", quantity=q) for i, q in waiting),
            "repair": None,
        }
    )


def units(p: PlanDecided) -> Counter[str]:
    held: Counter[str] = Counter()
    for s in p.shipments:
        for line in s.lines:
            held[line.line_id] += line.quantity
    for line in p.backordered:
        held[line.line_id] += line.quantity
    return held


def test_a_line_that_left_in_full_is_not_planned_again_and_its_shipment_goes() -> None:
    p = plan([[("1", 2)], [("2", 1)]])
    remaining = plan_what_has_not_left(p, {"1": 2})
    assert [
        (s.shipment_id, [(x.line_id, x.quantity) for x in s.lines]) for s in remaining.plan.shipments
    ] == [("S1", [("2", 1)])]
    assert remaining.left_out == {"1": 2}
    assert remaining.plan.explanation[-1] == (
        "2 unit(s) of line 1 had already left a node: they are not planned again."
    )


def test_a_raised_quantity_holds_only_the_units_added() -> None:
    """Two units left; the amendment asks for three: one is held, on the same shipment."""
    remaining = plan_what_has_not_left(plan([[("1", 3), ("2", 1)]]), {"1": 2})
    [shipment] = remaining.plan.shipments
    assert [(x.line_id, x.quantity) for x in shipment.lines] == [("1", 1), ("2", 1)]
    assert shipment.shipment_id == "S0" and shipment.node_id == "N0"


def test_waiting_units_go_before_held_ones() -> None:
    """What is held ships sooner than what waits for stock, so the waiting units are left out first."""
    remaining = plan_what_has_not_left(plan([[("1", 2)]], waiting=[("1", 1)]), {"1": 2})
    assert units(remaining.plan) == Counter({"1": 1})
    assert remaining.plan.backordered == ()
    assert [(x.line_id, x.quantity) for x in remaining.plan.shipments[0].lines] == [("1", 1)]


def test_the_last_shipments_give_way_first() -> None:
    remaining = plan_what_has_not_left(plan([[("1", 1)], [("1", 1)]]), {"1": 1})
    assert [s.shipment_id for s in remaining.plan.shipments] == ["S0"]


def test_nothing_left_changes_nothing() -> None:
    p = plan([[("1", 2)]])
    assert plan_what_has_not_left(p, {}).plan is p
    assert plan_what_has_not_left(p, {"1": 0}).plan is p
    assert plan_what_has_not_left(p, {"9": 3}).plan is p, "a line the plan does not carry"


def test_a_repair_is_refused() -> None:
    p = plan([[("1", 1)]]).model_copy(
        update={
            "repair": Repair(
                exception_id="X",
                action="reroute",
                lines=(SkuLine(line_id="1", sku="SKU-1", quantity=1),),
                cancel_replaced=True,
            )
        }
    )
    with pytest.raises(ValueError, match="repair"):
        plan_what_has_not_left(p, {"1": 1})


shipments = st.lists(
    st.lists(
        st.tuples(st.sampled_from(LINES), st.integers(1, 4)), min_size=1, max_size=3, unique_by=lambda t: t[0]
    ),
    max_size=3,
)
waiting = st.lists(st.tuples(st.sampled_from(LINES), st.integers(1, 4)), max_size=3, unique_by=lambda t: t[0])
left = st.dictionaries(st.sampled_from(LINES), st.integers(0, 9))


@given(shipments=shipments, waiting=waiting, left=left)
def test_each_line_keeps_what_was_planned_less_what_left(
    shipments: list[list[tuple[str, int]]], waiting: list[tuple[str, int]], left: dict[str, int]
) -> None:
    p = plan(shipments, waiting)
    remaining = plan_what_has_not_left(p, left)
    before, after = units(p), units(remaining.plan)
    for line in LINES:
        assert after[line] == max(0, before[line] - left.get(line, 0))
        assert remaining.left_out.get(line, 0) == before[line] - after[line]
    kept = {s.shipment_id: s for s in p.shipments}
    for s in remaining.plan.shipments:
        assert s.lines, "a shipment with no line is dropped"
        original = kept[s.shipment_id]
        assert s.node_id == original.node_id and s.carrier == original.carrier
        planned = {x.line_id: x.quantity for x in original.lines}
        assert all(0 < x.quantity <= planned[x.line_id] for x in s.lines), "a shipment only loses units"
    ids = [s.shipment_id for s in remaining.plan.shipments]
    assert ids == [s.shipment_id for s in p.shipments if s.shipment_id in ids], "the plan's order is kept"
