"""How simulated nodes and carriers behave: what they do with a work order or a
shipment, step by step, with their failure rates. Pure: no Kafka, no clock;
the processes in `processes` play the steps out in time.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import Package, SkuLine
from orchestrator.contract.execution import (
    NodeCancelReason,
    NodeRejectReason,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentException,
    ShipmentInTransit,
    ShipmentLost,
    ShipmentPickedUp,
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.returns import (
    InspectedLine,
    ReturnAuthorised,
    ReturnInspected,
    ReturnLine,
    ReturnMethod,
    ReturnOrderReleased,
    ReturnReason,
    ReturnReceived,
    ReturnResolution,
)
from orchestrator.contract.work import WorkOrderReleased

#: Placeholder time in planned steps; the process stamps the real time when it sends the event.
PLANNED = datetime(2000, 1, 1, tzinfo=UTC)


#: Who "carries" a collect-in-store order: the store's own till reports the collection.
IN_STORE_CARRIER = "in-store"
IN_STORE_SERVICE = "in-store-pickup"


@dataclass(frozen=True, slots=True)
class NodeRates:
    """How often nodes go off plan, per work order (0..1), and how fast they work."""

    reject: float = 0.01
    short_pick: float = 0.04
    node_cancel: float = 0.005
    #: Seconds a step takes on average (acknowledge, pick, pack, ship); real nodes take hours.
    step_seconds: float = 0.6


@dataclass(frozen=True, slots=True)
class CarrierRates:
    """How often carriers go off plan, per shipment (0..1), and how fast they move."""

    delay: float = 0.05
    exception: float = 0.01
    lost: float = 0.01
    step_seconds: float = 0.8


@dataclass(frozen=True, slots=True)
class ReturnRates:
    """How often customers send something back from a delivered parcel, what they ask for, and how
    the goods come out of the receiving node's inspection (0..1)."""

    #: Delivered parcels from which the customer returns one unit (the OMS authorises it at once).
    returned: float = 0.08
    #: Of those, exchanges for the same SKU, and store credit; the rest are refunds.
    exchange: float = 0.2
    store_credit: float = 0.15
    #: Returned units the node finds fit to sell again.
    restockable: float = 0.85


@dataclass(frozen=True, slots=True)
class Step:
    """Wait `after_s` seconds after the previous step, then send `event` (with the time then)."""

    after_s: float
    event: EventPayload


def _wait(rng: random.Random, mean: float) -> float:
    # Uniform around the mean: simple, bounded, and never negative.
    return rng.uniform(0.5 * mean, 1.5 * mean)


def work_order_steps(wo: WorkOrderReleased, rng: random.Random, rates: NodeRates) -> list[Step]:
    """What a node does with a released work order, as the events it publishes.

    Most work orders go acknowledged → picked → packed → shipped. Some are
    rejected outright, some cancelled by the node after acknowledging, and
    some come up short on one line: the node reports the shortage and ships
    what it found (or cancels for lack of stock when it found nothing).
    """
    ids = {"work_order_id": wo.work_order_id, "order_id": wo.order_id, "node_id": wo.node_id}
    mean = rates.step_seconds
    roll = rng.random()
    if roll < rates.reject:
        reason = rng.choice((NodeRejectReason.NO_CAPACITY, NodeRejectReason.NO_STOCK))
        detail = "simulated: the node refused the work order"
        return [
            Step(
                _wait(rng, mean), WorkOrderRejected(**ids, occurred_at=PLANNED, reason=reason, detail=detail)
            )
        ]
    steps = [Step(_wait(rng, mean), WorkOrderAcknowledged(**ids, occurred_at=PLANNED))]
    roll -= rates.reject
    if roll < rates.node_cancel:
        cancelled = WorkOrderCancelledByNode(
            **ids,
            occurred_at=PLANNED,
            reason=NodeCancelReason.DAMAGED,
            detail="simulated: stock found damaged",
        )
        return [*steps, Step(_wait(rng, mean), cancelled)]
    roll -= rates.node_cancel
    picked = [SkuLine(line_id=line.line_id, sku=line.sku, quantity=line.quantity) for line in wo.lines]
    if roll < rates.short_pick:
        index = rng.randrange(len(picked))
        line = picked[index]
        short = rng.randint(1, line.quantity)
        remaining = [p for p in picked if p is not line]
        if short < line.quantity:
            remaining.insert(index, line.model_copy(update={"quantity": line.quantity - short}))
        if not remaining:
            # Nothing of the work order was found: the node gives it up rather than ship nothing.
            cancelled = WorkOrderCancelledByNode(
                **ids,
                occurred_at=PLANNED,
                reason=NodeCancelReason.NO_STOCK,
                detail="simulated: nothing found",
            )
            return [*steps, Step(_wait(rng, mean), cancelled)]
        shortage = ShortLine(
            line_id=line.line_id, sku=line.sku, quantity_picked=line.quantity - short, quantity_short=short
        )
        steps.append(
            Step(_wait(rng, mean), WorkOrderShortPicked(**ids, occurred_at=PLANNED, lines=(shortage,)))
        )
        picked = remaining
    else:
        steps.append(Step(_wait(rng, mean), WorkOrderPicked(**ids, occurred_at=PLANNED, lines=tuple(picked))))
    units = sum(p.quantity for p in picked)
    packages = tuple(
        Package(package_id=f"{wo.work_order_id}-P{n + 1}") for n in range(max(1, min(3, units // 3)))
    )
    steps.append(Step(_wait(rng, mean), WorkOrderPacked(**ids, occurred_at=PLANNED, packages=packages)))
    # A collect-in-store work order has no carrier: the store hands it to the customer.
    carrier = wo.carrier.carrier if wo.carrier else IN_STORE_CARRIER
    service = wo.carrier.service_id if wo.carrier else IN_STORE_SERVICE
    shipped = WorkOrderShipped(
        **ids,
        occurred_at=PLANNED,
        shipment_id=wo.shipment_id,
        carrier=carrier,
        service_id=service,
        tracking_number=f"{carrier.upper()}{rng.randrange(10**11, 10**12)}",
        packages=packages,
        lines=tuple(picked),
    )
    steps.append(Step(_wait(rng, mean), shipped))
    return steps


def shipment_steps(
    shipped: WorkOrderShipped, rng: random.Random, rates: CarrierRates, today: date
) -> list[Step]:
    """What the carrier reports for a shipment a node handed over.

    Picked up, in transit, delivered, with some shipments delayed past their
    date (the carrier moves its estimate a few days out), some with a carrier
    exception on the way, and some lost after the last scan.
    """
    ids = {
        "tracking_number": shipped.tracking_number,
        "carrier": shipped.carrier,
        "order_id": shipped.order_id,
        "shipment_id": shipped.shipment_id,
    }
    mean = rates.step_seconds
    if shipped.carrier == IN_STORE_CARRIER:
        # The customer collects at the store a little later; no carrier, nothing to go wrong on the road.
        return [
            Step(_wait(rng, 2 * mean), ShipmentDelivered(**ids, occurred_at=PLANNED, received_by="customer"))
        ]
    steps = [
        Step(_wait(rng, mean), ShipmentPickedUp(**ids, occurred_at=PLANNED)),
        Step(_wait(rng, mean), ShipmentInTransit(**ids, occurred_at=PLANNED, location="sort centre")),
    ]
    roll = rng.random()
    if roll < rates.lost:
        return [*steps, Step(_wait(rng, 2 * mean), ShipmentLost(**ids, occurred_at=PLANNED))]
    roll -= rates.lost
    if roll < rates.delay:
        estimate = today + timedelta(days=rng.randint(4, 7))
        delayed = ShipmentDelayed(
            **ids, occurred_at=PLANNED, new_estimated_delivery=estimate, reason="simulated: hub backlog"
        )
        steps.append(Step(_wait(rng, mean), delayed))
    elif roll - rates.delay < rates.exception:
        problem = ShipmentException(
            **ids, occurred_at=PLANNED, code="ADDR", description="simulated: address needs checking"
        )
        steps.append(Step(_wait(rng, mean), problem))
    steps.append(Step(_wait(rng, 2 * mean), ShipmentDelivered(**ids, occurred_at=PLANNED)))
    return steps


#: Why simulated customers send things back, as often as each (exchanges: only the first four).
_REASONS = (
    ReturnReason.SIZE_OR_FIT,
    ReturnReason.DAMAGED,
    ReturnReason.DEFECTIVE,
    ReturnReason.WRONG_ITEM,
    ReturnReason.CHANGED_MIND,
    ReturnReason.NOT_AS_DESCRIBED,
)


def return_request(
    shipped: WorkOrderShipped,
    rng: random.Random,
    rates: ReturnRates,
    returned: Collection[tuple[str, str]] = (),
) -> ReturnAuthorised | None:
    """What the customer of a delivered shipment asks the OMS to take back, if anything: one unit of
    one of its order lines, with a refund, store credit or the same SKU again.

    Units of a replacement (their line ids name the return, `RMA-….1`) are not the order's lines:
    they are never sent back, and neither is a line with a return already (`returned`: (order id,
    line id)): an OMS authorises no more than was ordered, even of a line that arrived twice. A
    collect-in-store order comes back to its store.
    """
    if rng.random() >= rates.returned:
        return None
    lines = [
        line
        for line in shipped.lines
        if "." not in line.line_id and (shipped.order_id, line.line_id) not in returned
    ]
    if not lines:
        return None
    line = rng.choice(lines)
    roll = rng.random()
    if roll < rates.exchange:
        resolution, reason = ReturnResolution.EXCHANGE, rng.choice(_REASONS[:4])
    else:
        reason = rng.choice(_REASONS)
        credit = roll < rates.exchange + rates.store_credit
        resolution = ReturnResolution.STORE_CREDIT if credit else ReturnResolution.REFUND
    in_store = shipped.carrier == IN_STORE_CARRIER
    return ReturnAuthorised(
        return_id=f"RMA-{shipped.shipment_id}",
        order_id=shipped.order_id,
        lines=(ReturnLine(line_id=line.line_id, sku=line.sku, quantity=1),),
        reason=reason,
        resolution=resolution,
        method=ReturnMethod.IN_STORE if in_store else ReturnMethod.SHIP_BACK,
        store_id=shipped.node_id if in_store else None,
        authorised_at=PLANNED,
    )


def return_steps(ro: ReturnOrderReleased, rng: random.Random, rates: ReturnRates, mean: float) -> list[Step]:
    """What the receiving node reports for a return work order: the goods received (a parcel takes
    longer to arrive than a customer walking in), then inspected, each unit fit to sell again or not."""
    ids = {
        "return_order_id": ro.return_order_id,
        "return_id": ro.return_id,
        "order_id": ro.order_id,
        "node_id": ro.node_id,
        "occurred_at": PLANNED,
    }
    received = ReturnReceived(
        **ids, lines=tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in ro.lines)
    )
    inspected = []
    for x in ro.lines:
        fit = sum(1 for _ in range(x.quantity) if rng.random() < rates.restockable)
        note = None if fit == x.quantity else "simulated: opened and used"
        inspected.append(
            InspectedLine(
                line_id=x.line_id, sku=x.sku, restockable=fit, not_restockable=x.quantity - fit, note=note
            )
        )
    arrive = mean if ro.method is ReturnMethod.IN_STORE else 3 * mean
    return [
        Step(_wait(rng, arrive), received),
        Step(_wait(rng, mean), ReturnInspected(**ids, lines=tuple(inspected))),
    ]


__all__ = [
    "IN_STORE_CARRIER",
    "IN_STORE_SERVICE",
    "PLANNED",
    "CarrierRates",
    "NodeRates",
    "ReturnRates",
    "Step",
    "return_request",
    "return_steps",
    "shipment_steps",
    "work_order_steps",
]
