"""What to do next about an exception, and the requests and messages that do it.

The pure core of the exceptions stage: no I/O. Given an exception, what has
been tried so far and the playbooks, `next_action` names the next action (or
says the playbook is exhausted); the builders turn an action into what the
stage emits: a `RedecideRequested` carrying a `Repair` for the actions the
order path carries out, a `CustomerNotification` for the ones that tell the
customer, and the sentence the review queue shows when nothing worked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from orchestrator.contract.common import HomeDelivery, Reason, ServiceLevel, SkuLine, StorePickup
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RedecideRequested, Repair
from orchestrator.contract.status import (
    CustomerNotification,
    CustomerOption,
    ExceptionKind,
    ExceptionRaised,
    NotificationKind,
)
from orchestrator.domain.playbooks import Limits, PlaybookAction, Playbooks
from orchestrator.domain.supply import RELEASE_WAITING

#: What `next_action` returns when every action of the playbook has been tried and failed.
EXHAUSTED: Final = "exhausted"
NextAction = PlaybookAction | Literal["exhausted"]

#: Kinds raised once the parcel has left the node: too late to re-book it there on a faster service.
SHIPPED_KINDS: frozenset[ExceptionKind] = frozenset(
    {
        ExceptionKind.NO_CARRIER_SCAN,
        ExceptionKind.CARRIER_DELAY,
        ExceptionKind.CARRIER_EXCEPTION,
        ExceptionKind.LOST_PARCEL,
    }
)

#: Kinds whose repair still stands once the failing shipment has left: the parcel itself went wrong,
#: or (a short pick) the units it lacks are missing whether it left or not. Every other kind's repair
#: replaces work the node was asked to stop, so a shipment that leaves anyway makes it a second one.
STANDS_AFTER_SHIPMENT: frozenset[ExceptionKind] = SHIPPED_KINDS | {ExceptionKind.SHORT_PICK}


class NotApplicable(Exception):
    """The action cannot be tried for this exception (nothing to re-plan, already shipped...).

    The stage records it as a failed attempt with this reason and goes on to the next action.
    """


@dataclass(frozen=True, slots=True)
class Attempt:
    """One action tried for an exception, and how it went."""

    action: PlaybookAction
    succeeded: bool
    detail: str
    #: The delivery date the action leads to, when it says (a repair's new promise).
    promised_delivery_date: date | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "succeeded": self.succeeded,
            "detail": self.detail,
            "promised_delivery_date": (
                self.promised_delivery_date.isoformat() if self.promised_delivery_date else None
            ),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Attempt:
        promised = raw.get("promised_delivery_date")
        return cls(
            action=PlaybookAction(raw["action"]),
            succeeded=bool(raw["succeeded"]),
            detail=str(raw.get("detail", "")),
            promised_delivery_date=date.fromisoformat(promised) if promised else None,
        )


def next_action(
    exception: ExceptionRaised,
    tried: Sequence[tuple[PlaybookAction | str, bool]],
    playbooks: Playbooks,
) -> NextAction:
    """The next action of the exception's playbook after the (action, succeeded) attempts in `tried`.

    Actions go in playbook order, each up to `max_attempts_per_action` times; the
    playbook never goes back to an earlier action. An attempt that succeeded ends
    the exception, so asking for a next action after one is a mistake.
    """
    if any(succeeded for _, succeeded in tried):
        raise ValueError(f"exception {exception.exception_id} is already resolved; there is no next action")
    actions = playbooks.actions_for(exception.kind)
    counts = Counter(PlaybookAction(action) for action, _ in tried)
    last = PlaybookAction(tried[-1][0]) if tried else None
    # An action no longer in the playbook (the file changed mid-case) restarts the list; the
    # counts still skip whatever was already tried.
    start = actions.index(last) if last is not None and last in actions else 0
    for action in actions[start:]:
        if counts[action] < playbooks.max_attempts_per_action:
            return action
    return EXHAUSTED


def affected_lines(
    exception: ExceptionRaised, work_order_lines: Sequence[SkuLine] = ()
) -> tuple[SkuLine, ...]:
    """The quantities the failing shipment will not deliver.

    `unfilled` when the raising stage gave it; otherwise the failing work order's
    lines (those named in `line_ids`, or all). Never for a short pick: the node
    ships what it picked, so only the stated shortfall may be planned again.
    """
    if exception.unfilled:
        return exception.unfilled
    if exception.kind is ExceptionKind.SHORT_PICK:
        return ()
    wanted = set(exception.line_ids)
    return tuple(line for line in work_order_lines if not wanted or line.line_id in wanted)


def faster_level(order: OrderCreated) -> ServiceLevel:
    """The service level a re-booking asks for: express, or next day when the order is express already."""
    current = order.delivery.kind if isinstance(order.delivery, HomeDelivery) else None
    if current == "next_day":
        raise NotApplicable("the shipment is on next-day service already; there is nothing faster")
    return ServiceLevel.NEXT_DAY if current == "express" else ServiceLevel.EXPRESS


def build_repair(
    exception: ExceptionRaised,
    action: PlaybookAction,
    order: OrderCreated,
    limits: Limits,
    *,
    work_order_lines: Sequence[SkuLine] = (),
) -> Repair:
    """The Repair a reroute, split or rebook_faster asks the order path for; NotApplicable if it cannot."""
    lines = affected_lines(exception, work_order_lines)
    if not lines:
        raise NotApplicable("the exception names no quantity to plan again")
    only_nodes: tuple[str, ...] = ()
    level: ServiceLevel | None = None
    if action is PlaybookAction.REBOOK_FASTER:
        if exception.kind in SHIPPED_KINDS:
            raise NotApplicable("the shipment has left the node; it cannot be re-booked there")
        if exception.node_id is None:
            raise NotApplicable("the exception names no node to re-book at")
        delivery = order.delivery
        if isinstance(delivery, StorePickup) and exception.node_id == delivery.pickup_store_id:
            # Re-planned, the same lines would be handed over at the same store: a new work order
            # for nothing, the store's own cancelled.
            raise NotApplicable("the customer collects at this store; there is no carrier to re-book")
        only_nodes = (exception.node_id,)
        level = faster_level(order)
    elif action not in (PlaybookAction.REROUTE, PlaybookAction.SPLIT):
        raise ValueError(f"{action.value} is not carried out by the order path")
    return Repair(
        exception_id=exception.exception_id,
        action=action.value,
        lines=lines,
        replaces_work_order_id=exception.work_order_id,
        replaces_shipment_id=exception.shipment_id,
        # A short-picked work order still ships what was picked; every other failing one must stop.
        cancel_replaced=exception.kind is not ExceptionKind.SHORT_PICK,
        dropped_if_shipped=exception.kind not in STANDS_AFTER_SHIPMENT,
        only_nodes=only_nodes,
        min_service_level=level,
        max_extra_cost=limits.max_extra_cost,
        max_delay_days=limits.max_delay_days,
    )


def backorder_repair(exception: ExceptionRaised, lines: tuple[SkuLine, ...]) -> Repair:
    """The Repair a back-order asks the order path for: the lines join their SKUs' queues.

    Work the node was asked to stop (it refused, closed, ...) is named as a reroute names it: reserve
    gives back what it holds, release asks the node to cancel it, and the back-order is dropped if
    the node shipped it after all. A short pick's missing units and a parcel's lines wait on their own.
    """
    stops = exception.kind not in STANDS_AFTER_SHIPMENT and exception.shipment_id is not None
    return Repair(
        exception_id=exception.exception_id,
        action=RELEASE_WAITING,
        lines=lines,
        replaces_work_order_id=exception.work_order_id if stops else None,
        replaces_shipment_id=exception.shipment_id if stops else None,
        cancel_replaced=stops,
        dropped_if_shipped=stops,
    )


def build_redecide(
    exception: ExceptionRaised,
    action: PlaybookAction,
    order: OrderCreated,
    sequence: int,
    limits: Limits,
    *,
    work_order_lines: Sequence[SkuLine] = (),
) -> RedecideRequested:
    """The re-decide carrying out a reroute, split or rebook_faster; NotApplicable if it cannot."""
    repair = build_repair(exception, action, order, limits, work_order_lines=work_order_lines)
    rerouting = action is not PlaybookAction.REBOOK_FASTER
    return RedecideRequested(
        order_id=exception.order_id,
        sequence=sequence,
        attempt=1,
        order=order,
        excluded_nodes=(exception.node_id,) if rerouting and exception.node_id else (),
        reason=Reason(code=exception.kind.value, message=exception.detail),
        repair=repair,
    )


def describe_lines(lines: Sequence[SkuLine]) -> str:
    """`1 x SKU-A (line 2), 3 x SKU-B (line 4)`: the quantities, for people."""
    return ", ".join(f"{line.quantity} x {line.sku} (line {line.line_id})" for line in lines)


def new_delivery_date(exception: ExceptionRaised, attempts: Sequence[Attempt]) -> date | None:
    """The best-known new delivery date: the carrier's estimate, else what the latest repair promised."""
    if exception.new_estimate is not None:
        return exception.new_estimate
    dated = [a.promised_delivery_date for a in attempts if a.promised_delivery_date is not None]
    return dated[-1] if dated else None


def new_date_notification(order: OrderCreated, new_date: date) -> CustomerNotification:
    """Tell the customer when the order will arrive now."""
    return CustomerNotification(
        order_id=order.order_id,
        customer_id=order.customer_id,
        kind=NotificationKind.DELAYED_NEW_DATE,
        message=f"Your order is delayed; it will now arrive by {new_date.isoformat()}.",
        new_promised_date=new_date,
    )


def options_notification(order: OrderCreated, lines: Sequence[SkuLine]) -> CustomerNotification:
    """Ask the customer how to go on without the missing quantities."""
    what = describe_lines(lines) if lines else "part of your order"
    return CustomerNotification(
        order_id=order.order_id,
        customer_id=order.customer_id,
        kind=NotificationKind.OPTIONS_OFFERED,
        message=f"We cannot send {what} as planned. Choose how you would like to continue.",
        options=(
            CustomerOption(
                option_id="ship_rest_later", description="Send the missing item(s) when in stock."
            ),
            CustomerOption(option_id="refund_missing", description="Refund the missing item(s)."),
        ),
    )


def refund_notification(order: OrderCreated, lines: Sequence[SkuLine]) -> CustomerNotification:
    """Tell the customer which items are refunded."""
    return CustomerNotification(
        order_id=order.order_id,
        customer_id=order.customer_id,
        kind=NotificationKind.REFUND_ISSUED,
        message=f"We are sorry: we cannot deliver {describe_lines(lines)}. It is being refunded.",
    )


def refund_reason(lines: Sequence[SkuLine]) -> Reason:
    """The status reason that tells the OMS which lines to refund."""
    line_ids = ", ".join(dict.fromkeys(line.line_id for line in lines))
    return Reason(code="refund_line", message=f"refund line(s) {line_ids}: {describe_lines(lines)}")


def exhausted_reason(kind: ExceptionKind, attempts: Sequence[Attempt]) -> str:
    """What the review queue shows when no action of the playbook resolved the exception."""
    tried = "; ".join(f"{a.action.value} failed ({a.detail})" for a in attempts) or "nothing was tried"
    return f"no playbook action could resolve {kind.value}: {tried}"


__all__ = [
    "EXHAUSTED",
    "SHIPPED_KINDS",
    "STANDS_AFTER_SHIPMENT",
    "Attempt",
    "NextAction",
    "NotApplicable",
    "affected_lines",
    "backorder_repair",
    "build_redecide",
    "build_repair",
    "describe_lines",
    "exhausted_reason",
    "faster_level",
    "new_date_notification",
    "new_delivery_date",
    "next_action",
    "options_notification",
    "refund_notification",
    "refund_reason",
]
