"""Repairs: planning part of an order again for an exception playbook.

A repair plans only the quantities a failing shipment will not deliver
(`Repair.lines`), on the same decision engine, and is accepted only within
the playbook's limits: what it costs, and how late it delivers against the
order's promise. Outside them it fails, and the playbook tries its next action.
"""

from __future__ import annotations

from orchestrator.contract.common import HomeDelivery, OrderLine, ServiceLevel
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome, Repair

_SPEED = {ServiceLevel.EXPRESS: "express", ServiceLevel.NEXT_DAY: "next_day"}


def repair_order(order: OrderCreated, repair: Repair) -> OrderCreated:
    """The order reduced to the quantities to re-plan (and sped up when the repair asks for it)."""
    by_id = {line.line_id: line for line in order.lines}
    lines: list[OrderLine] = []
    for wanted in repair.lines:
        line = by_id.get(wanted.line_id)
        if line is None:
            raise ValueError(f"repair names line {wanted.line_id}, which order {order.order_id} lacks")
        lines.append(line.model_copy(update={"quantity": wanted.quantity}))
    delivery = order.delivery
    speed = _SPEED.get(repair.min_service_level) if repair.min_service_level else None
    if speed is not None and isinstance(delivery, HomeDelivery):
        delivery = HomeDelivery(kind=speed)
    # A repair is one part of the order by definition: it may not wait for the rest.
    return order.model_copy(update={"lines": tuple(lines), "delivery": delivery, "ship_complete": False})


def excluded_for(repair: Repair, excluded: frozenset[str], all_nodes: frozenset[str]) -> frozenset[str]:
    """Nodes the repair must not use: the failed ones, and for a re-book every node but its own."""
    if repair.only_nodes:
        return excluded | (all_nodes - frozenset(repair.only_nodes))
    return excluded


def limits_broken(plan: PlanDecided, order: OrderCreated, repair: Repair) -> str | None:
    """Why the plan is not an acceptable repair, or None when it is."""
    if plan.outcome is not PlanOutcome.SHIP:
        return f"no node can take the quantities now ({plan.outcome.value})"
    if repair.max_extra_cost is not None and plan.total_cost > repair.max_extra_cost:
        return f"the repair would cost {plan.total_cost:.2f}, over the limit of {repair.max_extra_cost:.2f}"
    latest = max(s.promised_delivery_date for s in plan.shipments)
    late_days = (latest - order.promised_delivery_date).days
    if repair.max_delay_days is not None and late_days > repair.max_delay_days:
        return (
            f"the repair would arrive {latest}, {late_days} day(s) after the promise "
            f"(limit {repair.max_delay_days})"
        )
    return None
