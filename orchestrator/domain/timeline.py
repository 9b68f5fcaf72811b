"""An order's story in words: one sentence per event, for timelines and the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.contract.base import EventPayload
from orchestrator.domain.additions import additions_phrase
from orchestrator.domain.returns_story import RETURN_DESCRIPTIONS

Describe = Callable[[Any], str]


def _and(clause: str) -> str:
    return f"; {clause}" if clause else ""


def _lines(lines: Any) -> str:
    return ", ".join(f"{line.sku} x{line.quantity}" for line in lines)


_DESCRIBE: dict[str, Describe] = {
    "order.created.v1": lambda e: (
        f"OMS created the order ({e.channel.value}, {len(e.lines)} line(s), "
        f"{e.delivery.kind}, promised {e.promised_delivery_date})"
    ),
    "order.amended.v1": lambda e: (
        "OMS amended the order ("
        + ", ".join(f for f in ("ship_to", "priority", "line_quantities") if getattr(e, f) is not None)
        + ")"
    ),
    "order.cancelled.v1": lambda e: f"OMS cancelled the order ({e.reason.value})",
    "order.hold_released.v1": lambda e: f"OMS released the {e.hold.value} hold",
    "plan.decided.v1": lambda e: (
        f"plan {e.plan_version} decided: {e.outcome.value}, "
        f"{len(e.shipments)} shipment(s)"
        + (f" from {', '.join(s.node_id for s in e.shipments)}" if e.shipments else "")
        + (f"; {e.explanation[0]}" if e.explanation else "")
        + _and(additions_phrase(e))
    ),
    "plan.cancelled.v1": lambda e: f"plan cancelled: {e.reason}",
    "reservation.confirmed.v1": lambda e: (
        f"stock reserved for plan {e.plan_version} "
        f"({sum(len(s.reservation_ids) for s in e.shipments)} allocation(s))"
    ),
    "reservation.released.v1": lambda e: f"reservations released: {e.reason}",
    "reservation.consumed.v1": lambda e: (
        f"reservation consumed: {_lines(e.lines)} left {e.node_id} with {e.work_order_id}"
        + (f"; held but not taken, given back: {_lines(e.released)}" if e.released else "")
    ),
    "order.redecide_requested.v1": lambda e: f"re-decide requested (attempt {e.attempt}): {e.reason.message}",
    "workorder.released.v1": lambda e: (
        f"work order {e.work_order_id} released to {e.node_id}: {_lines(e.lines)}"
        + (f" by {e.carrier.service_id}" if e.carrier else " for pickup")
    ),
    "workorder.cancel_requested.v1": lambda e: (
        f"{e.node_id} asked to cancel {e.work_order_id} ({e.reason.value})"
    ),
    "order.stage_status.v1": lambda e: (
        f"{e.stage}: {e.state.value}"
        + (f" ({'; '.join(r.message for r in e.reasons)})" if e.reasons else "")
        + (f" - {e.detail}" if e.detail else "")
    ),
    "exception.raised.v1": lambda e: f"exception {e.kind.value}: {e.detail}",
    "exception.repair_outcome.v1": lambda e: (
        f"{e.action} {'succeeded' if e.succeeded else 'failed'}: {e.detail}"
    ),
    "customer.notification.v1": lambda e: f"customer told ({e.kind.value}): {e.message}",
    "wms.short_picked.v1": lambda e: (
        f"{e.node_id} short-picked " + ", ".join(f"{x.sku} ({x.quantity_short} short)" for x in e.lines)
    ),
    "wms.shipped.v1": lambda e: (
        f"{e.node_id} shipped {e.work_order_id} with {e.carrier}, tracking {e.tracking_number}"
    ),
    "wms.rejected.v1": lambda e: f"{e.node_id} rejected {e.work_order_id} ({e.reason.value})",
    "carrier.delayed.v1": lambda e: (
        f"{e.carrier} delayed {e.tracking_number}: now {e.new_estimated_delivery}"
    ),
    "carrier.exception.v1": lambda e: (
        f"{e.carrier} exception on {e.tracking_number}: {e.code} {e.description}"
    ),
    "carrier.delivered.v1": lambda e: f"{e.carrier} delivered {e.tracking_number}",
    "carrier.lost.v1": lambda e: f"{e.carrier} lost {e.tracking_number}",
    **RETURN_DESCRIPTIONS,
}


def describe(event: EventPayload) -> str:
    """The event in one sentence; else its type (and node or work order, if any)."""
    known = _DESCRIBE.get(event.event_type)
    if known is not None:
        return known(event)
    where = getattr(event, "work_order_id", None) or getattr(event, "node_id", None)
    return event.event_type.rsplit(".", 1)[0].replace("_", " ") + (f" ({where})" if where else "")
