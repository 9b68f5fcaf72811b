"""Returns in words: one sentence per return event, for the order's timeline (`describe()`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.contract.returns import (
    ReturnAuthorised,
    ReturnCancelled,
    ReturnInspected,
    ReturnOrderCancelRequested,
    ReturnOrderReleased,
    ReturnParkedExpired,
    ReturnReceived,
    ReturnResolutionChanged,
    ReturnStatusChanged,
)


def _lines(lines: Any) -> str:
    return ", ".join(f"{line.sku} x{line.quantity}" for line in lines)


def _swaps(e: ReturnAuthorised | ReturnResolutionChanged) -> str:
    if not e.replacements:
        return ""
    return " (send " + ", ".join(f"{r.sku} x{r.quantity} for line {r.line_id}" for r in e.replacements) + ")"


def _authorised(e: ReturnAuthorised) -> str:
    how = f"to {e.store_id}" if e.store_id else e.method.value.replace("_", " ")
    return (
        f"OMS authorised return {e.return_id}: {_lines(e.lines)}, {e.reason.value.replace('_', ' ')}, "
        f"for {e.resolution.value.replace('_', ' ')}{_swaps(e)}, {how}"
    )


def _changed(e: ReturnResolutionChanged) -> str:
    return f"OMS changed return {e.return_id} to {e.resolution.value.replace('_', ' ')}{_swaps(e)}"


def _cancelled(e: ReturnCancelled) -> str:
    return f"OMS cancelled return {e.return_id}: {e.reason}"


def _released(e: ReturnOrderReleased) -> str:
    label = f", label {e.label.carrier.service_id}" if e.label else ", brought in by the customer"
    return f"return work order {e.return_order_id} released to {e.node_id}: {_lines(e.lines)}{label}"


def _cancel_requested(e: ReturnOrderCancelRequested) -> str:
    return f"{e.node_id} asked to cancel return work order {e.return_order_id} ({e.reason.value})"


def _received(e: ReturnReceived) -> str:
    return f"{e.node_id} received return {e.return_id}: {_lines(e.lines)}"


def _inspected(e: ReturnInspected) -> str:
    parts = [
        f"{x.sku} {x.restockable} restockable" + (f", {x.not_restockable} not" if x.not_restockable else "")
        for x in e.lines
    ]
    return f"{e.node_id} inspected return {e.return_id}: " + "; ".join(parts)


def _status(e: ReturnStatusChanged) -> str:
    money = (
        f" {e.amount:.2f} {e.currency}"
        if e.amount is not None and e.state.value in ("refunded", "credited")
        else ""
    )
    reasons = f" ({'; '.join(r.message for r in e.reasons)})" if e.reasons else ""
    return f"return {e.return_id} {e.state.value.replace('_', ' ')}{money}{reasons}"


#: `describe()` sentences of the return event types, by event type.
RETURN_DESCRIPTIONS: dict[str, Callable[[Any], str]] = {
    ReturnAuthorised.event_type: _authorised,
    ReturnResolutionChanged.event_type: _changed,
    ReturnCancelled.event_type: _cancelled,
    ReturnOrderReleased.event_type: _released,
    ReturnOrderCancelRequested.event_type: _cancel_requested,
    ReturnReceived.event_type: _received,
    ReturnInspected.event_type: _inspected,
    ReturnStatusChanged.event_type: _status,
    ReturnParkedExpired.event_type: lambda e: (
        f"a node's event about return {e.return_id} waited past the park limit for its authorisation"
    ),
}

__all__ = ["RETURN_DESCRIPTIONS"]
