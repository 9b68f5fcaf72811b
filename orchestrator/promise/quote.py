"""A promise: the plan decide-node would make for a cart if the order came now, reserving nothing.

Pure: the same `decide` as decide-node, on a view of the same ledger and
network. The cart becomes an order (one per delivery option asked) the way
the OMS would place it; the only freedom is the promised date, which does
not exist yet: without `deliver_by` it is set far out, so no option is
penalised as late and the plan is the cheapest at the option's speed. An
order later placed with the date this promise gives finds the same plan
cheapest again (options that arrive after it only get dearer), unless the
stock or the network changed in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel

from orchestrator.contract.common import DeliveryOption, OrderLine
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided
from orchestrator.domain.learning import NO_RISK, RoutingRisk
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.domain.sourcing import NO_OPPORTUNITY, decide
from orchestrator.promise.ledger import StockKey
from orchestrator.promise.models import PromiseRequest, SkuAvailability
from orchestrator.promise.token import encode_token

#: Without a date from the customer, the order's promised date is this far out: no option is late.
_NO_DEADLINE = timedelta(days=366)
#: The id of the order a quote plans.
PROMISE_ORDER_ID = "promise"


def cart_order(request: PromiseRequest, delivery: DeliveryOption, now: datetime) -> OrderCreated:
    """The order the OMS would place for this cart and delivery option.

    Built without validation: a valid `PromiseRequest` makes a valid order (its lines' labels
    are unique, its total is an amount), so validating it again checks nothing and cost a tenth
    of a quote outside the decision. Tests hold it equal to the validated order.
    """
    lines = tuple(
        OrderLine.model_construct(
            line_id=f"L{i}",
            sku=line.sku,
            quantity=line.quantity,
            unit_price=line.unit_price,
            unit_weight_kg=line.unit_weight_kg,
            labels=line.labels,
            drop_ship_vendor_id=line.drop_ship_vendor_id,
        )
        for i, line in enumerate(request.cart, start=1)
    )
    return OrderCreated.model_construct(
        # Never placed or shown: the id only names the plan decide computes.
        order_id=PROMISE_ORDER_ID,
        channel=request.channel,
        customer_id="checkout",
        customer_tier=request.customer_tier,
        placed_at=now,
        ship_to=request.ship_to,
        lines=lines,
        order_total=sum((line.unit_price * line.quantity for line in request.cart), Decimal(0)),
        currency=request.currency,
        delivery=delivery,
        promised_delivery_date=request.deliver_by or (now + _NO_DEADLINE).date(),
        ship_complete=request.ship_complete,
        priority=request.priority,
    )


def _option(
    plan: PlanDecided, delivery: DeliveryOption, now: datetime, deadline: date | None
) -> dict[str, object]:
    """A PromiseOption's fields, as plain data (see `answer_json`)."""
    shipments = [
        {
            "node_id": s.node_id,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in s.lines],
            "carrier": s.carrier,
            "service_level": s.service_level,
            "ship_by": s.ship_by,
            "promised_delivery_date": s.promised_delivery_date,
            "shipping_cost": s.shipping_cost,
            "distance_km": s.distance_km,
        }
        for s in plan.shipments
    ]
    return {
        "delivery": delivery,
        "outcome": plan.outcome,
        "promised_delivery_date": max((s.promised_delivery_date for s in plan.shipments), default=None),
        "shipping_cost": sum((s.shipping_cost for s in plan.shipments), Decimal(0)),
        "total_cost": plan.total_cost,
        "split": len(shipments) > 1,
        "shipments": shipments,
        "short": [{"sku": line.sku, "quantity": line.quantity} for line in plan.backordered],
        "explanation": _without_deadline(plan.explanation, deadline),
        "promise_token": encode_token(plan, now),
    }


def _without_deadline(sentences: tuple[str, ...], deadline: date | None) -> tuple[str, ...]:
    """The sentences without the made-up promised date of a cart the customer gave no date for."""
    if deadline is None:
        return sentences
    return tuple(s.replace(f" (promised {deadline.isoformat()})", "") for s in sentences)


def _availability(stock: Mapping[StockKey, int], skus: list[str]) -> list[dict[str, object]]:
    """SkuAvailability fields per SKU, as plain data: one validation of it all is several times
    cheaper than building fifty small models one by one."""
    by_sku: dict[str, list[tuple[str, int]]] = {sku: [] for sku in skus}
    for (node_id, sku), units in stock.items():
        if sku in by_sku:
            by_sku[sku].append((node_id, units))
    out = []
    for sku in skus:
        nodes = sorted(by_sku[sku])
        out.append(
            {
                "sku": sku,
                "network": sum(units for _, units in nodes),
                "nodes": [{"node_id": n, "available": u} for n, u in nodes],
            }
        )
    return out


def availability(stock: Mapping[StockKey, int], skus: list[str]) -> tuple[SkuAvailability, ...]:
    """Available to promise per SKU: per node holding a position, and network-wide."""
    return tuple(SkuAvailability.model_validate(data) for data in _availability(stock, skus))


def promise_answer(
    request: PromiseRequest,
    *,
    network: NetworkView,
    stock: Mapping[StockKey, int],
    capacity_used: Mapping[str, int],
    policy: Policy,
    now: datetime,
    risk: RoutingRisk = NO_RISK,
    opportunity: Mapping[StockKey, float] = NO_OPPORTUNITY,
) -> dict[str, Any]:
    """Every delivery option of `request` answered by the decision decide-node would make now: the
    fields of a `PromiseResponse`, as plain data (`answer_json` writes it)."""
    options: list[dict[str, object]] = []
    for delivery in request.delivery_options:
        order = cart_order(request, delivery, now)
        plan = decide(
            order,
            network=network,
            stock=stock,
            capacity_used=capacity_used,
            policy=policy,
            now=now,
            risk=risk,
            opportunity=opportunity,
            verdicts=False,  # a promise shows shipments and sentences, not every node's verdict
        )
        made_up = None if request.deliver_by else order.promised_delivery_date
        options.append(_option(plan, delivery, now, made_up))
    skus = list(dict.fromkeys(line.sku for line in request.cart))
    return {
        "quoted_at": now,
        "policy_version": policy.version,
        "options": options,
        "availability": _availability(stock, skus),
    }


def _plain(value: object) -> object:
    """What orjson cannot write itself, as pydantic writes it: amounts as strings, models as JSON data."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not part of a promise answer")


def answer_json(answer: Mapping[str, Any]) -> bytes:
    """A `promise_answer` as the JSON `PromiseResponse` writes, byte for byte, without validating it.

    Everything in it comes from a validated request and a validated plan, so validating the answer
    again checks nothing; it took a third of the time outside the decision (tests hold the bytes
    equal to the model's).
    """
    return orjson.dumps(answer, default=_plain, option=orjson.OPT_UTC_Z)


__all__ = ["answer_json", "availability", "cart_order", "promise_answer"]
