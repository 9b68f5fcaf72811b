"""Repairs: the part of an order an exception playbook plans again, and its limits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.contract.common import HomeDelivery, ServiceLevel, SkuLine
from orchestrator.contract.examples import example
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome, Repair
from orchestrator.domain.repair import excluded_for, limits_broken, repair_order


def _order() -> OrderCreated:
    order = example("order.created.v1")
    assert isinstance(order, OrderCreated)
    return order.model_copy(update={"ship_complete": True, "delivery": HomeDelivery(kind="standard")})


def _repair(**changes: object) -> Repair:
    order = _order()
    line = order.lines[-1]
    base = Repair(
        exception_id="X-1",
        action="reroute",
        lines=(SkuLine(line_id=line.line_id, sku=line.sku, quantity=1),),
        replaces_work_order_id="WO-1",
        replaces_shipment_id="S-1",
        cancel_replaced=False,
        max_extra_cost=10.0,
        max_delay_days=1,
    )
    return base.model_copy(update=changes)


def test_the_repair_order_holds_only_the_unfilled_quantities() -> None:
    order = _order()
    part = repair_order(order, _repair())
    assert [(line.line_id, line.quantity) for line in part.lines] == [(order.lines[-1].line_id, 1)]
    assert part.lines[0].labels == order.lines[-1].labels, "handling labels travel with the line"
    assert part.ship_complete is False


def test_a_rebook_asks_for_speed_and_stays_at_its_node() -> None:
    part = repair_order(_order(), _repair(min_service_level=ServiceLevel.EXPRESS, only_nodes=("DC-1",)))
    assert part.delivery == HomeDelivery(kind="express")
    assert excluded_for(_repair(only_nodes=("DC-1",)), frozenset(), frozenset({"DC-1", "DC-2", "S-3"})) == {
        "DC-2",
        "S-3",
    }
    assert excluded_for(_repair(), frozenset({"DC-1"}), frozenset({"DC-1", "DC-2"})) == {"DC-1"}


def test_a_repair_naming_a_line_the_order_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        repair_order(_order(), _repair(lines=(SkuLine(line_id="nope", sku="X", quantity=1),)))


def _plan(cost: float, late_days: int, outcome: PlanOutcome = PlanOutcome.SHIP) -> PlanDecided:
    plan = example("plan.decided.v1")
    assert isinstance(plan, PlanDecided)
    shipment = plan.shipments[0].model_copy(
        update={"promised_delivery_date": _order().promised_delivery_date + timedelta(days=late_days)}
    )
    return plan.model_copy(update={"total_cost": cost, "shipments": (shipment,), "outcome": outcome})


def test_limits_on_cost_and_lateness() -> None:
    order, repair = _order(), _repair()
    assert limits_broken(_plan(9.0, 1), order, repair) is None
    assert "cost" in (limits_broken(_plan(12.0, 0), order, repair) or "")
    assert "after the promise" in (limits_broken(_plan(5.0, 2), order, repair) or "")
    assert "no node" in (limits_broken(_plan(5.0, 0, PlanOutcome.BACKORDER), order, repair) or "")
