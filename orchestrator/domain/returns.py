"""Returns and exchanges: the life of one return, as a pure state machine.

A return has two legs that move on their own and one headline the OMS sees:
- the goods: not required (refund without return) or awaited at a node, then
  received, then inspected (restockable units go back into stock);
- the settlement: a refund or store credit when the goods are received (at
  once when they are not required), or for an exchange a replacement shipped
  through decide, reserve and release (at once or after receipt, by policy).
Every step returns the case as it now stands and the events it causes; the
stage shell stores the one and emits the others. Nothing here touches Kafka
or the database.

Rules that keep a return honest:
- a leg already carried out (money due, a replacement released) is never
  undone by a later change: the change is refused and the return needs a
  person;
- goods that arrive are restocked when inspected as fit to sell, whatever the
  return's state: the ledger follows what is physically at the node;
- after `completed` or `cancelled`, nothing more is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import CustomerTier, OrderLine, Reason, SkuLine
from orchestrator.contract.inventory import DeltaReason, InventoryDelta
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RedecideRequested, Repair, RepairOutcome
from orchestrator.contract.returns import (
    TERMINAL_RETURN_STATES,
    Replacement,
    ReturnAuthorised,
    ReturnCancelled,
    ReturnInspected,
    ReturnMethod,
    ReturnOrderCancelReason,
    ReturnOrderCancelRequested,
    ReturnOrderLine,
    ReturnOrderReleased,
    ReturnReason,
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
    ReturnState,
    ReturnStatusChanged,
)
from orchestrator.domain.return_routing import ReturnedLine, ReturnRoute, Unroutable, value_of
from orchestrator.domain.returns_policy import ReplacementTiming, ReturnsPolicy

#: The `Repair.action` of an exchange's replacement, and the prefix of its "exception" id.
EXCHANGE_ACTION = "exchange"
_REPLACEMENT_PREFIX = "return:"
_MAX_TEXT = 2000


class ReturnRefused(ValueError):
    """An event the return can never take (it contradicts the return): dead-lettered with this reason."""


class Goods(StrEnum):
    """Where the returned goods are."""

    NOT_REQUIRED = "not_required"  # the customer keeps them
    AWAITED = "awaited"  # a return work order is out
    UNROUTED = "unrouted"  # they should come back, but no node can take them
    RECEIVED = "received"
    INSPECTED = "inspected"
    WITHDRAWN = "withdrawn"  # the return was cancelled before they came


class ReplacementLeg(StrEnum):
    """Where an exchange's replacement stands."""

    NONE = "none"
    WAITING = "waiting"  # for the goods to be received (policy: after_receipt)
    REQUESTED = "requested"  # on its way through decide, reserve and release
    RELEASED = "released"
    FAILED = "failed"  # no node could ship it


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReturnCase(_Model):
    """One return as the returns stage keeps it (stored as JSON; every step makes a new one)."""

    return_id: str
    order_id: str
    order_sequence: int
    currency: str
    customer_tier: CustomerTier
    reason: ReturnReason
    method: ReturnMethod
    store_id: str | None = None
    lines: tuple[ReturnedLine, ...]
    resolution: ReturnResolution
    replacements: tuple[Replacement, ...] = ()
    node_id: str | None = None
    return_orders: tuple[str, ...] = ()
    goods: Goods
    received: tuple[SkuLine, ...] = ()
    restocked: tuple[SkuLine, ...] = ()
    not_restocked: tuple[SkuLine, ...] = ()
    settled: ReturnState | None = None  # refunded or credited, once the money is due
    amount: Decimal | None = None
    replacement: ReplacementLeg = ReplacementLeg.NONE
    replacement_attempt: int = 0
    replacement_work_orders: tuple[str, ...] = ()
    #: Attempts requested, then no longer wanted: one released anyway needs a person.
    withdrawn: tuple[int, ...] = ()
    state: ReturnState = ReturnState.AUTHORISED
    sequence: int = 0

    @property
    def terminal(self) -> bool:
        return self.sequence > 0 and self.state in TERMINAL_RETURN_STATES

    @property
    def return_order_id(self) -> str | None:
        return self.return_orders[-1] if self.return_orders else None


@dataclass(frozen=True, slots=True)
class Step:
    """What a step did: the case after it, the events to emit (in order), and a note for the log."""

    case: ReturnCase
    events: tuple[EventPayload, ...] = ()
    note: str | None = None


class _Builder:
    """Accumulates one step's events while the case moves on."""

    def __init__(self, case: ReturnCase, now: datetime) -> None:
        self.case = case
        self.now = now
        self.events: list[EventPayload] = []

    def update(self, **changes: Any) -> None:
        self.case = self.case.model_copy(update=changes)

    def emit(self, event: EventPayload) -> None:
        self.events.append(event)

    def publish(self, state: ReturnState, *reasons: Reason, amount: Decimal | None = None) -> None:
        """One status for the OMS; numbered, and never after the return ended."""
        case = self.case
        if case.terminal:
            return
        money = amount if amount is not None else case.amount
        status = ReturnStatusChanged(
            return_id=case.return_id,
            order_id=case.order_id,
            state=state,
            previous_state=case.state if case.sequence else None,
            sequence=case.sequence + 1,
            resolution=case.resolution,
            reasons=reasons,
            node_id=case.node_id,
            return_order_id=case.return_order_id if case.goods is not Goods.NOT_REQUIRED else None,
            amount=money,
            currency=case.currency if money is not None else None,
            replacement_work_order_ids=case.replacement_work_orders,
            restocked=case.restocked,
            not_restocked=case.not_restocked,
            occurred_at=self.now,
        )
        self.update(state=state, sequence=case.sequence + 1)
        self.emit(status)

    def done(self, note: str | None = None) -> Step:
        return Step(self.case, tuple(self.events), note)


def _reason(code: str, message: str) -> Reason:
    return Reason(code=code, message=message if len(message) <= _MAX_TEXT else message[: _MAX_TEXT - 1] + "…")


def _lines_text(lines: Sequence[SkuLine] | Sequence[ReturnedLine] | Sequence[OrderLine]) -> str:
    return ", ".join(f"{line.sku} x{line.quantity}" for line in lines)


# ---------------------------------------------------------------------------
# Checks against the order
# ---------------------------------------------------------------------------


def with_shipped_removed_lines(
    order: OrderCreated, removed: Sequence[OrderLine], shipped: dict[str, int]
) -> OrderCreated:
    """The order a return is checked against: as amended, plus each line an amendment removed
    after it had shipped, at the units that shipped (the customer has them; the node sent them
    before the removal reached it). A removed line that never shipped stays out."""
    have = {line.line_id for line in order.lines}
    back = tuple(
        line.model_copy(update={"quantity": shipped[line.line_id]})
        for line in removed
        if line.line_id not in have and shipped.get(line.line_id, 0) > 0
    )
    return order if not back else order.model_copy(update={"lines": order.lines + back})


def returned_lines(
    request: ReturnAuthorised, order: OrderCreated, already: dict[str, int]
) -> tuple[ReturnedLine, ...]:
    """The return's lines with their order line's price and handling; refuses lines the order cannot have
    sent (`already`: units of each line in the order's other live returns)."""
    by_id = {line.line_id: line for line in order.lines}
    out: list[ReturnedLine] = []
    for wanted in request.lines:
        line = by_id.get(wanted.line_id)
        if line is None:
            raise ReturnRefused(f"order {order.order_id} has no line {wanted.line_id}")
        if line.sku != wanted.sku:
            raise ReturnRefused(
                f"line {wanted.line_id} of order {order.order_id} is {line.sku}, not {wanted.sku}"
            )
        left = line.quantity - already.get(line.line_id, 0)
        if wanted.quantity > left:
            raise ReturnRefused(
                f"return of {wanted.quantity} x {wanted.sku} on line {wanted.line_id}: the order has "
                f"{line.quantity}, {max(left, 0)} not already in another return"
            )
        out.append(
            ReturnedLine(
                line_id=line.line_id,
                sku=line.sku,
                quantity=wanted.quantity,
                unit_price=line.unit_price,
                unit_weight_kg=line.unit_weight_kg,
                labels=line.labels,
            )
        )
    return tuple(out)


def resolved_replacements(
    resolution: ReturnResolution, replacements: Sequence[Replacement], lines: Sequence[ReturnedLine]
) -> tuple[Replacement, ...]:
    """An exchange's replacements spelled out (the same SKU and quantity when not given); none otherwise."""
    if resolution is not ReturnResolution.EXCHANGE:
        return ()
    ids = {line.line_id for line in lines}
    strangers = sorted({r.line_id for r in replacements} - ids)
    if strangers:
        raise ReturnRefused(f"replacements name line(s) the return does not: {', '.join(strangers)}")
    if replacements:
        return tuple(replacements)
    return tuple(Replacement(line_id=line.line_id, sku=line.sku, quantity=line.quantity) for line in lines)


# ---------------------------------------------------------------------------
# The legs
# ---------------------------------------------------------------------------


def replacement_exception_id(return_id: str, attempt: int) -> str:
    """The id a replacement's repair travels under; the attempt tells a stale outcome from the current one."""
    return f"{_REPLACEMENT_PREFIX}{return_id}:{attempt}"


def parse_replacement_id(exception_id: str) -> tuple[str, int] | None:
    """(return id, attempt) of a replacement's repair id; None for anything else."""
    if not exception_id.startswith(_REPLACEMENT_PREFIX):
        return None
    return_id, _, attempt = exception_id[len(_REPLACEMENT_PREFIX) :].rpartition(":")
    if not return_id or not attempt.isdigit():
        return None
    return return_id, int(attempt)


def replacement_order_lines(case: ReturnCase, only: set[str] | None = None) -> tuple[OrderLine, ...]:
    """The replacement as order lines, with ids of their own so they never collide with the order's."""
    by_id = {line.line_id: line for line in case.lines}
    out: list[OrderLine] = []
    for r in case.replacements:
        if only is not None and r.line_id not in only:
            continue
        returned = by_id[r.line_id]
        same = r.sku == returned.sku
        out.append(
            OrderLine(
                line_id=f"{case.return_id}.{r.line_id}",
                sku=r.sku,
                quantity=r.quantity,
                unit_price=r.unit_price if r.unit_price is not None else returned.unit_price,
                unit_weight_kg=returned.unit_weight_kg if same else None,
                labels=r.labels if r.labels is not None else (returned.labels if same else ()),
            )
        )
    return tuple(out)


def _request_replacement(
    b: _Builder, order: OrderCreated, policy: ReturnsPolicy, only: set[str] | None
) -> None:
    """Ask decide-node for the replacement as a repair of the order: it goes through decide, reserve and
    release like any repair, and release reports the work orders back."""
    case = b.case
    lines = replacement_order_lines(case, only)
    if not lines:
        b.update(replacement=ReplacementLeg.FAILED)
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason("nothing_to_replace", "no returned line came back in full, so no replacement is sent"),
        )
        return
    attempt = case.replacement_attempt + 1
    promised: date = b.now.date() + timedelta(days=policy.exchange.promise_days)
    # The order as it stands (address, delivery option, tier) carrying only the replacement lines.
    part = order.model_copy(
        update={"lines": lines, "ship_complete": False, "holds": (), "promised_delivery_date": promised}
    )
    b.emit(
        RedecideRequested(
            order_id=case.order_id,
            sequence=case.order_sequence,
            attempt=1,
            order=part,
            reason=_reason(EXCHANGE_ACTION, f"exchange for return {case.return_id}: {_lines_text(lines)}"),
            repair=Repair(
                exception_id=replacement_exception_id(case.return_id, attempt),
                action=EXCHANGE_ACTION,
                lines=tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in lines),
                cancel_replaced=False,
            ),
        )
    )
    b.update(replacement=ReplacementLeg.REQUESTED, replacement_attempt=attempt)


def _release_return_order(b: _Builder, route: ReturnRoute) -> None:
    case = b.case
    assert route.node_id is not None
    count = len(case.return_orders) + 1
    return_order_id = f"RO-{case.return_id}" + (f"-{count}" if count > 1 else "")
    b.update(node_id=route.node_id, goods=Goods.AWAITED, return_orders=(*case.return_orders, return_order_id))
    b.emit(
        ReturnOrderReleased(
            return_order_id=return_order_id,
            return_id=case.return_id,
            order_id=case.order_id,
            node_id=route.node_id,
            method=route.method,
            lines=tuple(
                ReturnOrderLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity, labels=x.labels)
                for x in case.lines
            ),
            reason=case.reason,
            label=route.label,
        )
    )
    b.publish(ReturnState.AWAITING_RETURN, _reason("return_node", route.why))


def _cancel_return_order(b: _Builder, reason: ReturnOrderCancelReason, detail: str, goods: Goods) -> None:
    case = b.case
    if case.goods is Goods.AWAITED and case.return_order_id is not None and case.node_id is not None:
        b.emit(
            ReturnOrderCancelRequested(
                return_order_id=case.return_order_id,
                return_id=case.return_id,
                order_id=case.order_id,
                node_id=case.node_id,
                reason=reason,
                detail=detail,
            )
        )
    b.update(goods=goods)


def _received_units(case: ReturnCase) -> dict[str, int]:
    return {line.line_id: line.quantity for line in case.received}


def _settle(b: _Builder, order: OrderCreated, policy: ReturnsPolicy) -> None:
    """Settle the customer now that the goods are back (or not required), unless already done."""
    case = b.case
    if case.settled is not None:
        return
    if case.resolution is ReturnResolution.EXCHANGE:
        if case.replacement in (ReplacementLeg.NONE, ReplacementLeg.WAITING):
            only = None
            if case.goods in (Goods.RECEIVED, Goods.INSPECTED):
                # A line that came back short gets no replacement: a person looks at it instead.
                got = _received_units(case)
                only = {line.line_id for line in case.lines if got.get(line.line_id, 0) >= line.quantity}
            _request_replacement(b, order, policy, only)
        return
    if case.replacement is ReplacementLeg.RELEASED:
        return  # the customer has the replacement: no money on top without a person
    quantities = None if case.goods is Goods.NOT_REQUIRED else _received_units(case)
    amount = value_of(case.lines, quantities)
    state = ReturnState.REFUNDED if case.resolution is ReturnResolution.REFUND else ReturnState.CREDITED
    b.update(settled=state, amount=amount)
    what = "refund" if state is ReturnState.REFUNDED else "store credit"
    why = (
        "the customer keeps the goods"
        if case.goods is Goods.NOT_REQUIRED
        else f"received {_lines_text(case.received)}"
    )
    b.publish(
        state, _reason(f"{state.value}", f"{what} of {amount:.2f} {case.currency}: {why}"), amount=amount
    )


def _complete_if_done(b: _Builder) -> None:
    case = b.case
    goods_done = case.goods in (Goods.NOT_REQUIRED, Goods.INSPECTED)
    if case.resolution is ReturnResolution.EXCHANGE:
        settled = case.replacement is ReplacementLeg.RELEASED
    else:
        settled = case.settled is not None
    if goods_done and settled:
        b.publish(ReturnState.COMPLETED)
    elif (
        goods_done
        and case.replacement is ReplacementLeg.FAILED
        and case.state is not ReturnState.NEEDS_ATTENTION
    ):
        # The goods are dealt with, the customer is not: nothing more comes on its own.
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason(
                "replacement_failed",
                "the goods are back, but the replacement cannot ship: change the resolution or cancel",
            ),
        )


# ---------------------------------------------------------------------------
# Steps: one per event the return can take
# ---------------------------------------------------------------------------


def authorise(
    request: ReturnAuthorised,
    *,
    order: OrderCreated,
    order_sequence: int,
    lines: tuple[ReturnedLine, ...],
    route: ReturnRoute | Unroutable,
    policy: ReturnsPolicy,
    now: datetime,
) -> Step:
    """A return authorised by the OMS: decide, release the return work order, maybe ship a replacement."""
    case = ReturnCase(
        return_id=request.return_id,
        order_id=request.order_id,
        order_sequence=order_sequence,
        currency=order.currency,
        customer_tier=order.customer_tier,
        reason=request.reason,
        method=request.method,
        store_id=request.store_id,
        lines=lines,
        resolution=request.resolution,
        replacements=resolved_replacements(request.resolution, request.replacements, lines),
        goods=Goods.AWAITED,
    )
    b = _Builder(case, now)
    b.publish(
        ReturnState.AUTHORISED,
        _reason(
            request.reason.value, f"{_lines_text(lines)} for {request.resolution.value.replace('_', ' ')}"
        ),
    )
    if isinstance(route, Unroutable):
        b.update(goods=Goods.UNROUTED)
        b.publish(ReturnState.NEEDS_ATTENTION, _reason(route.code, route.why))
        return b.done(f"unroutable: {route.why}")
    if route.node_id is None:
        b.update(goods=Goods.NOT_REQUIRED)
        _settle(b, order, policy)
    else:
        _release_return_order(b, route)
        if b.case.resolution is ReturnResolution.EXCHANGE:
            if policy.exchange.timing(case.reason, case.customer_tier) is ReplacementTiming.AT_ONCE:
                _request_replacement(b, order, policy, None)
            else:
                b.update(replacement=ReplacementLeg.WAITING)
    _complete_if_done(b)
    return b.done()


def _check_return_order(case: ReturnCase, return_order_id: str) -> None:
    if return_order_id not in case.return_orders:
        known = ", ".join(case.return_orders) or "none"
        raise ReturnRefused(
            f"return {case.return_id} has no return work order {return_order_id} "
            f"(its return work orders: {known})"
        )


def _check_quantities(case: ReturnCase, units: dict[str, tuple[str, int]], what: str) -> None:
    by_id = {line.line_id: line for line in case.lines}
    for line_id, (sku, quantity) in units.items():
        line = by_id.get(line_id)
        if line is None:
            raise ReturnRefused(f"{what} line {line_id}, which return {case.return_id} does not include")
        if line.sku != sku:
            raise ReturnRefused(f"{what} {sku} on line {line_id}; return {case.return_id} expects {line.sku}")
        if quantity > line.quantity:
            raise ReturnRefused(
                f"{what} {quantity} x {sku} on line {line_id}; "
                f"return {case.return_id} authorised {line.quantity}"
            )


def _receive(
    b: _Builder, received: tuple[SkuLine, ...], node_id: str, order: OrderCreated, policy: ReturnsPolicy
) -> None:
    case = b.case
    expected = case.goods is Goods.AWAITED
    b.update(goods=Goods.RECEIVED, received=received)
    reasons: tuple[Reason, ...] = ()
    if not expected:
        reasons = (_reason("goods_not_expected", f"{node_id} received goods the return no longer expected"),)
    elif node_id != case.node_id:
        reasons = (_reason("received_elsewhere", f"expected at {case.node_id}, received at {node_id}"),)
    short = [x for x in case.lines if _received_units(b.case).get(x.line_id, 0) < x.quantity]
    if short:
        reasons = (
            *reasons,
            _reason("received_short", "fewer units than authorised came back: " + _lines_text(short)),
        )
    b.publish(ReturnState.RECEIVED, *reasons)
    if expected:
        _settle(b, order, policy)


def receive(
    case: ReturnCase, event: ReturnReceived, *, order: OrderCreated, policy: ReturnsPolicy, now: datetime
) -> Step:
    """The node has the goods: settle the customer (refund, credit, or the replacement after receipt)."""
    _check_return_order(case, event.return_order_id)
    _check_quantities(case, {x.line_id: (x.sku, x.quantity) for x in event.lines}, "received")
    if case.goods in (Goods.RECEIVED, Goods.INSPECTED):
        return Step(case, note=f"return {case.return_id} was already received")
    b = _Builder(case, now)
    _receive(b, event.lines, event.node_id, order, policy)
    _complete_if_done(b)
    return b.done()


def inspect(
    case: ReturnCase, event: ReturnInspected, *, order: OrderCreated, policy: ReturnsPolicy, now: datetime
) -> Step:
    """The node says what can be sold again: that goes back into the ledger at the node, the rest does not."""
    _check_return_order(case, event.return_order_id)
    units = {x.line_id: (x.sku, x.restockable + x.not_restockable) for x in event.lines}
    _check_quantities(case, units, "inspected")
    if case.goods is Goods.INSPECTED:
        return Step(case, note=f"return {case.return_id} was already inspected")
    b = _Builder(case, now)
    if case.goods is not Goods.RECEIVED:
        # A node inspects only what it received: the receipt event is late or lost.
        implied = tuple(SkuLine(line_id=k, sku=s, quantity=q) for k, (s, q) in units.items())
        _receive(b, implied, event.node_id, order, policy)
    else:
        got = _received_units(case)
        over = [k for k, (_, q) in units.items() if q > got.get(k, 0)]
        if over:
            raise ReturnRefused(
                f"inspected more units than were received on line(s) {', '.join(sorted(over))} "
                f"of return {case.return_id} (received {_lines_text(case.received)})"
            )
    restocked = tuple(
        SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.restockable) for x in event.lines if x.restockable
    )
    not_restocked = tuple(
        SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.not_restockable)
        for x in event.lines
        if x.not_restockable
    )
    for line in restocked:
        b.emit(
            InventoryDelta(
                node_id=event.node_id,
                sku=line.sku,
                change=line.quantity,
                reason=DeltaReason.RETURN,
                reference=event.return_order_id,
                as_of=event.occurred_at,
            )
        )
    b.update(goods=Goods.INSPECTED, restocked=restocked, not_restocked=not_restocked)
    parts = []
    if restocked:
        parts.append(f"back in stock at {event.node_id}: {_lines_text(restocked)}")
    if not_restocked:
        parts.append(f"not fit to sell again: {_lines_text(not_restocked)}")
    b.publish(ReturnState.INSPECTED, _reason("inspected", "; ".join(parts)))
    _complete_if_done(b)
    return b.done()


def change_resolution(
    case: ReturnCase,
    change: ReturnResolutionChanged,
    *,
    order: OrderCreated,
    route: ReturnRoute | Unroutable,
    policy: ReturnsPolicy,
    now: datetime,
) -> Step:
    """Stop what the old resolution needed and the new one does not; start what the new one needs.

    `route` is where the goods go under the new resolution (refund without return may now apply, or no
    longer apply)."""
    if case.terminal:
        raise ReturnRefused(
            f"return {case.return_id} is {case.state.value}: its resolution can no longer change"
        )
    replacements = resolved_replacements(change.resolution, change.replacements, case.lines)
    if change.resolution is case.resolution and replacements == case.replacements:
        return Step(case, note=f"return {case.return_id} already resolves to {case.resolution.value}")
    b = _Builder(case, now)
    old = case.resolution.value.replace("_", " ")
    new = change.resolution.value.replace("_", " ")
    if case.settled is not None:
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason(
                "already_settled",
                f"change from {old} to {new} refused: {case.settled.value} {case.amount:.2f} {case.currency} "
                "is already due to the customer",
            ),
        )
        return b.done("resolution change refused: already settled")
    if case.replacement is ReplacementLeg.RELEASED:
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason(
                "replacement_already_released",
                f"change from {old} to {new} refused: the replacement is already released "
                f"({', '.join(case.replacement_work_orders)})",
            ),
        )
        return b.done("resolution change refused: replacement released")
    stopped: list[str] = []
    withdrawn = case.withdrawn
    if case.replacement is ReplacementLeg.REQUESTED:
        withdrawn = (*withdrawn, case.replacement_attempt)
        stopped.append("the replacement already requested is withdrawn (released anyway, a person decides)")
    elif case.replacement is ReplacementLeg.WAITING:
        stopped.append("the replacement waiting for the goods is not sent")
    b.update(
        resolution=change.resolution,
        replacements=replacements,
        replacement=ReplacementLeg.NONE,
        withdrawn=withdrawn,
    )
    goods_back = not (isinstance(route, ReturnRoute) and route.node_id is None)
    if case.goods is Goods.AWAITED and not goods_back:
        _cancel_return_order(
            b,
            ReturnOrderCancelReason.RESOLUTION_CHANGED,
            f"resolution changed from {old} to {new}",
            Goods.NOT_REQUIRED,
        )
        stopped.append(
            f"the return work order {case.return_order_id} is cancelled: the customer keeps the goods"
        )
    elif case.goods is Goods.UNROUTED and not goods_back:
        b.update(goods=Goods.NOT_REQUIRED)
    detail = f"resolution changed from {old} to {new}" + (f"; {'; '.join(stopped)}" if stopped else "")
    b.publish(b.case.state, _reason("resolution_changed", detail))
    if b.case.goods in (Goods.NOT_REQUIRED, Goods.UNROUTED) and goods_back:
        if isinstance(route, Unroutable):
            b.publish(ReturnState.NEEDS_ATTENTION, _reason(route.code, route.why))
            return b.done()
        _release_return_order(b, route)
    if b.case.goods in (Goods.NOT_REQUIRED, Goods.RECEIVED, Goods.INSPECTED):
        _settle(b, order, policy)
    elif change.resolution is ReturnResolution.EXCHANGE:
        if policy.exchange.timing(case.reason, case.customer_tier) is ReplacementTiming.AT_ONCE:
            _request_replacement(b, order, policy, None)
        else:
            b.update(replacement=ReplacementLeg.WAITING)
    _complete_if_done(b)
    return b.done()


def cancel(case: ReturnCase, event: ReturnCancelled, *, now: datetime) -> Step:
    """The OMS withdrew the return: stop the return work order and any replacement not yet released."""
    if case.terminal:
        raise ReturnRefused(f"return {case.return_id} is {case.state.value}: it can no longer be cancelled")
    b = _Builder(case, now)
    reasons = [_reason("return_cancelled", event.reason)]
    if case.goods is Goods.AWAITED:
        _cancel_return_order(b, ReturnOrderCancelReason.RETURN_CANCELLED, event.reason, Goods.WITHDRAWN)
    elif case.goods in (Goods.RECEIVED, Goods.INSPECTED):
        reasons.append(_reason("goods_received", f"the goods are already at {case.node_id}"))
    if case.replacement is ReplacementLeg.REQUESTED:
        b.update(replacement=ReplacementLeg.NONE, withdrawn=(*case.withdrawn, case.replacement_attempt))
        reasons.append(
            _reason("replacement_requested", "a replacement was already requested and may still be released")
        )
    elif case.replacement is ReplacementLeg.WAITING:
        b.update(replacement=ReplacementLeg.NONE)
    elif case.replacement is ReplacementLeg.RELEASED:
        reasons.append(
            _reason(
                "replacement_already_released",
                f"the replacement is released ({', '.join(case.replacement_work_orders)})",
            )
        )
    if case.settled is not None:
        reasons.append(
            _reason(
                "already_settled", f"{case.settled.value} {case.amount:.2f} {case.currency} is already due"
            )
        )
    b.publish(ReturnState.CANCELLED, *reasons)
    return b.done()


def replacement_outcome(case: ReturnCase, outcome: RepairOutcome, attempt: int, *, now: datetime) -> Step:
    """decide-node (failed) or release (released) answered a replacement request."""
    b = _Builder(case, now)
    if attempt in case.withdrawn:
        if not outcome.succeeded:
            return Step(case, note=f"withdrawn replacement {attempt} of return {case.return_id} did not ship")
        if case.terminal:
            # Its cancellation already said a replacement might still be released; the timeline shows it was.
            return Step(
                case, note=f"withdrawn replacement {attempt} of ended return {case.return_id} released"
            )
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason(
                "replacement_released_after_change",
                "a replacement withdrawn by a change was released before the change reached it: "
                + outcome.detail,
            ),
        )
        return b.done()
    if attempt != case.replacement_attempt or case.replacement is not ReplacementLeg.REQUESTED:
        return Step(case, note=f"stale replacement outcome for return {case.return_id} (attempt {attempt})")
    if outcome.succeeded:
        b.update(replacement=ReplacementLeg.RELEASED, replacement_work_orders=outcome.work_order_ids)
        b.publish(ReturnState.EXCHANGED, _reason("replacement_released", outcome.detail))
        _complete_if_done(b)
    else:
        b.update(replacement=ReplacementLeg.FAILED)
        b.publish(
            ReturnState.NEEDS_ATTENTION,
            _reason("replacement_failed", f"the replacement cannot ship: {outcome.detail}"),
        )
    return b.done()


def units_in_live_returns(cases: Sequence[ReturnCase]) -> dict[str, int]:
    """Units of each order line already in returns that still stand (cancelled ones free theirs)."""
    units: dict[str, int] = {}
    for case in cases:
        if case.state is ReturnState.CANCELLED:
            continue
        for line in case.lines:
            units[line.line_id] = units.get(line.line_id, 0) + line.quantity
    return units


__all__ = [
    "EXCHANGE_ACTION",
    "Goods",
    "ReplacementLeg",
    "ReturnCase",
    "ReturnRefused",
    "Step",
    "authorise",
    "cancel",
    "change_resolution",
    "inspect",
    "parse_replacement_id",
    "receive",
    "replacement_exception_id",
    "replacement_order_lines",
    "replacement_outcome",
    "resolved_replacements",
    "returned_lines",
    "units_in_live_returns",
    "with_shipped_removed_lines",
]
