"""The monitor stage's pure core: where a shipment stands, and what is worth an exception.

A work order moves forward through milestones (released, acknowledged,
picked, packed, shipped, in transit, delivered) and never back: nodes and
carriers resend events and deliver them late or out of order, so an event
for a milestone already passed changes nothing. Beside that line are the
states where a shipment stops counting for its order: the orchestrator asked
to cancel it, the node refused or cancelled it, the carrier lost it.

Everything here is a function of the shipment's state and the event, so the
stage can stay a thin shell around the database and the rules can be tested
without Kafka.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Literal

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import OrderState, SkuLine
from orchestrator.contract.execution import (
    NodeCancelReason,
    ShipmentDelivered,
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
from orchestrator.contract.status import ExceptionKind


class ShipmentState(StrEnum):
    """Where one work order (one planned shipment) stands, as the monitor sees it."""

    RELEASED = "released"
    ACKNOWLEDGED = "acknowledged"
    PICKED = "picked"
    PACKED = "packed"
    SHIPPED = "shipped"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    #: The orchestrator asked the node to stop; the node has not answered yet.
    CANCEL_REQUESTED = "cancel_requested"
    #: The node confirmed the cancellation the orchestrator asked for.
    CANCELLED = "cancelled"
    #: The node refused the work order.
    REJECTED = "rejected"
    #: The node stopped the work order on its own.
    NODE_CANCELLED = "node_cancelled"
    #: The carrier declared the shipment lost.
    LOST = "lost"


#: The milestones, in the order they happen; a shipment only ever moves up this list.
MILESTONES: tuple[ShipmentState, ...] = (
    ShipmentState.RELEASED,
    ShipmentState.ACKNOWLEDGED,
    ShipmentState.PICKED,
    ShipmentState.PACKED,
    ShipmentState.SHIPPED,
    ShipmentState.IN_TRANSIT,
    ShipmentState.DELIVERED,
)
RANK: Mapping[ShipmentState, int] = {state: i for i, state in enumerate(MILESTONES)}

#: Work still at the node: it can be acknowledged, picked, packed, refused, or be stranded by a closure.
OPEN_STATES: frozenset[ShipmentState] = frozenset(
    {ShipmentState.RELEASED, ShipmentState.ACKNOWLEDGED, ShipmentState.PICKED, ShipmentState.PACKED}
)
#: The carrier has it and owes us scans.
WITH_CARRIER: frozenset[ShipmentState] = frozenset({ShipmentState.SHIPPED, ShipmentState.IN_TRANSIT})
#: The work left its node (whatever became of the parcel since).
LEFT_NODE: frozenset[ShipmentState] = WITH_CARRIER | {ShipmentState.DELIVERED, ShipmentState.LOST}
#: States after which no milestone and no timer applies.
ENDED: frozenset[ShipmentState] = frozenset(
    {
        ShipmentState.DELIVERED,
        ShipmentState.CANCELLED,
        ShipmentState.REJECTED,
        ShipmentState.NODE_CANCELLED,
        ShipmentState.LOST,
    }
)


def advance(current: ShipmentState, target: ShipmentState) -> ShipmentState | None:
    """The state after an event that says the shipment reached `target`; None: the event changes nothing.

    Milestones only move forward, so a repeat or a late event is a no-op. A
    shipment we asked to cancel still moves once it has left the node (the
    node answers a cancel it is too late for by shipping); a lost parcel that
    turns up delivered is delivered.
    """
    if target in RANK:
        if current in RANK:
            return target if RANK[target] > RANK[current] else None
        if current is ShipmentState.CANCEL_REQUESTED and RANK[target] >= RANK[ShipmentState.SHIPPED]:
            return target
        if current is ShipmentState.LOST and target is ShipmentState.DELIVERED:
            return target
        return None
    if target is ShipmentState.CANCEL_REQUESTED:
        return target if current in OPEN_STATES else None
    if target in (ShipmentState.CANCELLED, ShipmentState.REJECTED, ShipmentState.NODE_CANCELLED):
        return target if current in OPEN_STATES or current is ShipmentState.CANCEL_REQUESTED else None
    if target is ShipmentState.LOST:
        movable = current in RANK and current is not ShipmentState.DELIVERED
        return target if movable or current is ShipmentState.CANCEL_REQUESTED else None
    return None  # pragma: no cover - every state is handled above


#: The milestone each node or carrier event reports (short picks finish picking, with less).
_MILESTONE_OF: Mapping[type[EventPayload], ShipmentState] = {
    WorkOrderAcknowledged: ShipmentState.ACKNOWLEDGED,
    WorkOrderPicked: ShipmentState.PICKED,
    WorkOrderShortPicked: ShipmentState.PICKED,
    WorkOrderPacked: ShipmentState.PACKED,
    WorkOrderShipped: ShipmentState.SHIPPED,
    ShipmentPickedUp: ShipmentState.IN_TRANSIT,
    ShipmentInTransit: ShipmentState.IN_TRANSIT,
    ShipmentDelivered: ShipmentState.DELIVERED,
    ShipmentLost: ShipmentState.LOST,
}


def milestone_of(event: EventPayload) -> ShipmentState | None:
    """The state a node or carrier event says the shipment reached; None for events that report none."""
    return _MILESTONE_OF.get(type(event))


@dataclass(frozen=True, slots=True)
class NodeStop:
    """What a node's refusal or cancellation does: the new state, and the exception it is worth (if any)."""

    state: ShipmentState
    kind: ExceptionKind | None


def node_stopped(
    current: ShipmentState, event: WorkOrderRejected | WorkOrderCancelledByNode
) -> NodeStop | None:
    """A node refused or cancelled a work order; None when that changes nothing (repeat, too late).

    When the orchestrator had asked to cancel, the node's answer is the
    confirmation: the work order is cancelled and nobody needs to act. Otherwise
    the node dropped work we still need, which a playbook must repair.
    """
    if current is ShipmentState.CANCEL_REQUESTED:
        return NodeStop(ShipmentState.CANCELLED, None)
    if current not in OPEN_STATES:
        return None
    if isinstance(event, WorkOrderCancelledByNode) and event.reason is NodeCancelReason.REQUESTED:
        # Our request and the node's answer travel on different topics: after a restart with a backlog
        # the answer can be read first. A node cancels "as requested" only when asked, so it is still
        # the confirmation, not work we lost (repairing it would ship the order twice).
        return NodeStop(ShipmentState.CANCELLED, None)
    if isinstance(event, WorkOrderRejected):
        return NodeStop(ShipmentState.REJECTED, ExceptionKind.NODE_REJECTED)
    return NodeStop(ShipmentState.NODE_CANCELLED, ExceptionKind.NODE_CANCELLED)


def counts_for_order(state: ShipmentState) -> bool:
    """Whether a work order still counts towards its order's shipped/delivered state.

    Cancelled, refused and lost work orders do not: what they carried is
    either no longer wanted or being replaced by another work order.
    """
    return state in RANK


def aggregate(states: Iterable[ShipmentState]) -> OrderState | None:
    """The order's shipping state from its work orders' states; None before anything shipped."""
    counted = [s for s in states if counts_for_order(s)]
    if not counted:
        return None
    if all(s is ShipmentState.DELIVERED for s in counted):
        return OrderState.DELIVERED
    shipped = [RANK[s] >= RANK[ShipmentState.SHIPPED] for s in counted]
    if all(shipped):
        return OrderState.SHIPPED
    if any(shipped):
        return OrderState.PARTIALLY_SHIPPED
    return None


def order_transitions(
    before: Iterable[ShipmentState], after: Iterable[ShipmentState]
) -> tuple[OrderState, ...]:
    """The order states to report, in order, when its work orders went from `before` to `after`.

    A carrier's delivery scan can overtake the node's `shipped` report (another topic). The order
    still shipped before it was delivered, and an OMS that invoices or writes to the customer on
    `shipped` must hear it: a jump to delivered from short of shipped reports both.
    """
    old, new = aggregate(before), aggregate(after)
    if new is None or new is old:
        return ()
    if new is OrderState.DELIVERED and old is not OrderState.SHIPPED:
        return (OrderState.SHIPPED, OrderState.DELIVERED)
    return (new,)


# ------------------------------------------------------------------- exceptions

_ID_MAX = 128  # Identifier's limit in the contract


def _id_safe(text: str) -> str:
    return re.sub(r"\s+", "_", text.strip())


def compact_time(at: datetime) -> str:
    """A time as an id fragment in UTC: the same instant gives the same text whatever zone it came in."""
    if at.tzinfo is not None:
        return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return at.strftime("%Y%m%dT%H%M%S%f")


def exception_id(work_order_id: str, kind: ExceptionKind, suffix: str | None = None) -> str:
    """`{work_order_id}:{kind}[:{suffix}]`: the same problem always gets the same id, so repeats are one.

    Kinds that can happen more than once to one work order (a second delay, a
    second carrier exception) carry a suffix naming the occurrence. An id
    longer than the contract allows keeps its readable start and ends in a
    hash of the whole, so it stays unique and deterministic.
    """
    full = f"{work_order_id}:{kind.value}" + (f":{_id_safe(suffix)}" if suffix else "")
    if len(full) <= _ID_MAX:
        return full
    digest = hashlib.blake2b(full.encode(), digest_size=12).hexdigest()
    return f"{full[: _ID_MAX - len(digest) - 1]}~{digest}"


def short_unfilled(short: Sequence[ShortLine]) -> tuple[SkuLine, ...]:
    """The units a short pick leaves undelivered."""
    return tuple(SkuLine(line_id=s.line_id, sku=s.sku, quantity=s.quantity_short) for s in short)


def short_pick_detail(node_id: str, short: Sequence[ShortLine]) -> str:
    """`node X picked 1 of 2 SKU-A; 0 of 1 SKU-B`."""
    parts = [f"{s.quantity_picked} of {s.quantity_picked + s.quantity_short} {s.sku}" for s in short]
    return f"node {node_id} picked " + "; ".join(parts)


def promise_at_risk(promised: date, new_estimate: date) -> bool:
    """A carrier's new estimate is worth an exception only when it misses the customer's date."""
    return new_estimate > promised


# ----------------------------------------------------------------------- timers

Timer = Literal["acknowledge", "ship_by", "carrier_scan"]
TIMERS: tuple[Timer, ...] = ("acknowledge", "ship_by", "carrier_scan")

#: The exception each missed deadline raises.
TIMER_EXCEPTION: Mapping[Timer, ExceptionKind] = {
    "acknowledge": ExceptionKind.NOT_ACKNOWLEDGED,
    "ship_by": ExceptionKind.NOT_SHIPPED_BY_CUTOFF,
    "carrier_scan": ExceptionKind.NO_CARRIER_SCAN,
}


def timer_applies(timer: Timer, state: ShipmentState) -> bool:
    """Whether a deadline still means something in this state (acknowledged work owes no acknowledgement)."""
    if timer == "acknowledge":
        return state is ShipmentState.RELEASED
    if timer == "ship_by":
        return state in OPEN_STATES
    return state in WITH_CARRIER


@dataclass(frozen=True, slots=True)
class Deadlines:
    """A work order's deadlines and the timers that have already fired."""

    state: ShipmentState
    acknowledge: datetime | None
    ship_by: datetime | None
    carrier_scan: datetime | None
    fired: frozenset[str]

    def due_at(self, timer: Timer) -> datetime | None:
        if timer == "acknowledge":
            return self.acknowledge
        if timer == "ship_by":
            return self.ship_by
        return self.carrier_scan


def is_due(deadlines: Deadlines, timer: Timer, now: datetime) -> bool:
    """A deadline has passed, still applies in the shipment's state, and has not fired yet."""
    due = deadlines.due_at(timer)
    return (
        due is not None
        and due <= now
        and timer not in deadlines.fired
        and timer_applies(timer, deadlines.state)
    )


def due_timers(deadlines: Deadlines, now: datetime) -> list[tuple[Timer, datetime]]:
    """Every timer of the work order that is due at `now`, with when it fell due."""
    out: list[tuple[Timer, datetime]] = []
    for timer in TIMERS:
        due = deadlines.due_at(timer)
        if due is not None and is_due(deadlines, timer, now):
            out.append((timer, due))
    return out


def timer_event_id(work_order_id: str, timer: Timer, due_at: datetime) -> str:
    """The id of the TimerDue event for one deadline: every tick and every instance sends the same id.

    The deadline is part of it because the carrier-scan deadline moves with
    every scan: a later silence is a new deadline and must not be taken for a
    repeat of an earlier one that the handler found no longer due.
    """
    return f"timer:{work_order_id}:{timer}:{compact_time(due_at)}"
