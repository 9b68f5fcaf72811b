"""Lines that wait for supply: pre-orders until their release, back-orders until
their stock arrives. Pure: reserve keeps the waiting lines and the expected
inbound supply in its tables and asks these functions what they mean.

One queue per SKU, first come first served (by when the line started to
wait): stock on hand serves the queue first, then expected inbound supply in
the order it is due. That one rule gives every waiting line its expected
availability date (what the customer is told), keeps supply promised to an
earlier order from being promised again to a later one (pre-orders are
"reserved against expected supply" this way, without a second ledger), and
says which lines to plan when stock arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from orchestrator.contract.common import OrderLine, SkuLine
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome, Repair

#: The action of a partial plan for waiting lines whose supply came (a `Repair` of no exception).
RELEASE_WAITING = "release_waiting"
#: How the queue's own requests are named (`Repair.exception_id`): "supply:ORDER:LINES:WHEN".
_QUEUE_REQUEST = "supply:"


def queue_request_id(order_id: str, line_ids: Sequence[str], at: datetime) -> str:
    """The id of the queue's request to plan these waiting lines of the order, at `at`."""
    return f"{_QUEUE_REQUEST}{order_id}:{'/'.join(sorted(line_ids))}:{at:%Y%m%dT%H%M%S}"


def from_queue(repair: Repair) -> bool:
    """Whether the repair is the queue's request for waiting lines (not an exception's back-order)."""
    return repair.action == RELEASE_WAITING and repair.exception_id.startswith(_QUEUE_REQUEST)


class PreorderRelease(StrEnum):
    """When a pre-order line is planned and released to a node."""

    #: On its release date (if stock is there; else as soon as it arrives). Stock that comes earlier
    #: stays promised to it.
    ON_RELEASE_DATE = "on_release_date"
    #: As soon as its stock arrives, even before the release date (the node ships to arrive on time).
    ON_STOCK_ARRIVAL = "on_stock_arrival"


@dataclass(frozen=True, slots=True)
class WaitingLine:
    """Units of an order line that wait for supply."""

    order_id: str
    line_id: str
    sku: str
    quantity: int
    #: When the line started to wait: its place in the queue.
    since: datetime
    #: Pre-order: the product's release date; None for a back-order.
    release_on: date | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.order_id, self.line_id


@dataclass(frozen=True, slots=True)
class Inbound:
    """Units of a SKU expected at a node on a date (a purchase order, an advance shipping notice)."""

    node_id: str
    sku: str
    reference: str
    quantity: int
    expected_date: date


def queue(waiting: Sequence[WaitingLine]) -> list[WaitingLine]:
    """The waiting lines of one SKU in the order they are served."""
    return sorted(waiting, key=lambda w: (w.since, w.order_id, w.line_id))


def expected_dates(
    waiting: Sequence[WaitingLine], available_now: int, inbound: Sequence[Inbound], today: date
) -> dict[tuple[str, str], date | None]:
    """When each waiting line of one SKU can expect its units: the day the supply ahead of it in
    the queue covers it (`today` for stock on hand), and never before a pre-order's release date;
    None when no known supply covers it yet."""
    # Cumulative supply over time: (day, units available by then), earliest first.
    steps: list[tuple[date, int]] = [(today, max(0, available_now))]
    for supply in sorted(inbound, key=lambda s: (s.expected_date, s.node_id, s.reference)):
        if supply.quantity > 0:
            steps.append((max(today, supply.expected_date), steps[-1][1] + supply.quantity))
    out: dict[tuple[str, str], date | None] = {}
    needed = 0
    for line in queue(waiting):
        needed += line.quantity
        day = next((d for d, total in steps if total >= needed), None)
        if day is not None and line.release_on is not None:
            day = max(day, line.release_on)
        out[line.key] = day
    return out


def is_due(line: WaitingLine, today: date, release: PreorderRelease) -> bool:
    """May the line be planned now, stock permitting?"""
    if line.release_on is None or line.release_on <= today:
        return True
    return release is PreorderRelease.ON_STOCK_ARRIVAL


def releasable(
    waiting: Sequence[WaitingLine], available_now: int, today: date, release: PreorderRelease
) -> list[WaitingLine]:
    """The lines of one SKU to plan now, in queue order.

    Stock on hand goes down the queue: a due line it covers is released; a
    line not due yet (a pre-order before its release date) keeps the units it
    would get, so a later order cannot take stock promised to an earlier one.
    A line the remaining stock cannot cover is passed over (its order waits),
    so one large line does not hold up smaller ones behind it.
    """
    left = max(0, available_now)
    out = []
    for line in queue(waiting):
        if line.quantity > left:
            continue
        left -= line.quantity
        if is_due(line, today, release):
            out.append(line)
    return out


def set_aside(stock: dict[tuple[str, str], int], owed: dict[str, int]) -> dict[tuple[str, str], int]:
    """Stock per (node, SKU) less the units the SKU's queue is owed, taken from the nodes with the
    most first (the queue's lines are planned later, wherever suits them best)."""
    out = dict(stock)
    for sku, units in owed.items():
        for key in sorted((k for k in out if k[1] == sku), key=lambda k: (-out[k], k[0])):
            if units <= 0:
                break
            taken = min(units, out[key])
            out[key] -= taken
            units -= taken
    return out


# ---------------------------------------------------------------------------
# Pre-orders in a plan
# ---------------------------------------------------------------------------


def preorder_lines(order: OrderCreated, today: date) -> tuple[OrderLine, ...]:
    """Lines of products not released yet."""
    return tuple(line for line in order.lines if line.release_date is not None and line.release_date > today)


def order_to_plan_now(order: OrderCreated, today: date) -> OrderCreated | None:
    """The part of the order to plan today: without its pre-order lines (None: nothing).

    A ship-complete order with a pre-order line waits whole: it ships in one go, so not before
    its last product is released.
    """
    waiting = {line.line_id for line in preorder_lines(order, today)}
    if not waiting:
        return order
    if order.ship_complete or len(waiting) == len(order.lines):
        return None
    return order.model_copy(
        update={"lines": tuple(line for line in order.lines if line.line_id not in waiting)}
    )


def _sentence(line: OrderLine, release_on: date) -> str:
    return (
        f"Line {line.line_id} ({line.sku} x{line.quantity}) is a pre-order: it waits for its release "
        f"on {release_on.isoformat()}."
    )


def with_preorders(plan: PlanDecided, order: OrderCreated, today: date) -> PlanDecided:
    """The plan of the lines on sale today, extended to the whole order: its pre-order lines wait."""
    held = [line for line in order.lines if line.line_id not in {x.line_id for x in plan.order.lines}]
    if not held:
        return plan
    outcome = plan.outcome
    if outcome is PlanOutcome.SHIP:
        outcome = PlanOutcome.PARTIAL
    latest = max(line.release_date or today for line in held)
    return plan.model_copy(
        update={
            "order": order,
            "outcome": outcome,
            "backordered": (
                *plan.backordered,
                *(SkuLine(line_id=line.line_id, sku=line.sku, quantity=line.quantity) for line in held),
            ),
            "explanation": (
                *plan.explanation,
                *(_sentence(line, line.release_date or latest) for line in held),
            ),
        }
    )


def preorder_plan(
    order: OrderCreated, *, sequence: int, plan_version: int, policy_version: str, now: datetime
) -> PlanDecided:
    """The plan of an order none of whose lines ships today: every line waits for a release."""
    today = now.date()
    latest = max(line.release_date or today for line in order.lines)
    if order.ship_complete:
        opening = (
            f"The order ships complete, so all of it waits for its last release on {latest.isoformat()}."
        )
    else:
        opening = "Nothing of the order is released yet."
    return PlanDecided(
        order_id=order.order_id,
        plan_id=f"{order.order_id}-p{plan_version}",
        plan_version=plan_version,
        sequence=sequence,
        order=order,
        outcome=PlanOutcome.BACKORDER,
        backordered=tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in order.lines),
        total_cost=0.0,
        policy_version=policy_version,
        explanation=(
            opening,
            *(_sentence(line, line.release_date or latest) for line in order.lines),
        ),
        decided_at=now,
    )


def waits_only_for_release(plan: PlanDecided) -> bool:
    """True when nothing ships and every waiting line is a pre-order (the order is held, not short)."""
    if plan.shipments or not plan.backordered:
        return False
    today = plan.decided_at.date()
    pre = {line.line_id for line in preorder_lines(plan.order, today)}
    return (plan.order.ship_complete and bool(pre)) or all(b.line_id in pre for b in plan.backordered)


def waiting_lines(plan: PlanDecided, since: datetime) -> list[WaitingLine]:
    """The plan's lines that wait for supply, as queue entries (pre-orders keep their release date;
    in a ship-complete order waiting for a release, every line waits for the latest one)."""
    today = plan.decided_at.date()
    release = {line.line_id: line.release_date for line in preorder_lines(plan.order, today)}
    whole = plan.order.ship_complete and release and not plan.shipments
    latest = max((d for d in release.values() if d is not None), default=None)
    return [
        WaitingLine(
            order_id=plan.order_id,
            line_id=b.line_id,
            sku=b.sku,
            quantity=b.quantity,
            since=since,
            release_on=latest if whole else release.get(b.line_id),
        )
        for b in plan.backordered
    ]


__all__ = [
    "RELEASE_WAITING",
    "Inbound",
    "PreorderRelease",
    "WaitingLine",
    "expected_dates",
    "from_queue",
    "is_due",
    "order_to_plan_now",
    "preorder_lines",
    "preorder_plan",
    "queue",
    "queue_request_id",
    "releasable",
    "set_aside",
    "waiting_lines",
    "waits_only_for_release",
    "with_preorders",
]
