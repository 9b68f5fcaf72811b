"""Returns and exchanges: what the OMS authorises, what nodes do with returned goods, what the OMS is told.

- From the OMS on `oms.returns.v1`: `return.authorised` (a customer may send
  lines back, with a reason and a resolution: refund, exchange or store
  credit), `return.resolution_changed` and `return.cancelled`.
- To nodes on `wms.work-orders.v1`: `returnorder.released` (expect these
  goods; the label request for a parcel sent back) and
  `returnorder.cancel_requested`.
- From nodes on `wms.return-events.v1`: `return.received` and
  `return.inspected` (per line, how many units can be sold again).
- To the OMS on `oms.status.v1` (through status-sync): `return.status_changed`,
  numbered per return.

All are keyed by order id, so one order's returns stay in order with its
other events. The OMS's own event id travels as `ce_id`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Self

from pydantic import AwareDatetime, Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    Amount,
    CarrierAssignment,
    ContractModel,
    CurrencyCode,
    Identifier,
    ProductLabel,
    Quantity,
    Reason,
    SkuLine,
    Text,
    unique_values,
)


class ReturnResolution(StrEnum):
    """What the customer gets for the goods they return."""

    REFUND = "refund"
    EXCHANGE = "exchange"
    STORE_CREDIT = "store_credit"


class ReturnReason(StrEnum):
    """Why the customer returns the goods."""

    DAMAGED = "damaged"
    DEFECTIVE = "defective"
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"
    SIZE_OR_FIT = "size_or_fit"
    CHANGED_MIND = "changed_mind"
    ARRIVED_LATE = "arrived_late"
    OTHER = "other"


class ReturnMethod(StrEnum):
    """How the goods come back."""

    SHIP_BACK = "ship_back"  # a parcel, with a label the orchestrator requests
    IN_STORE = "in_store"  # the customer brings them to a store


class ReturnLine(ContractModel):
    """Units of one order line the customer returns."""

    line_id: Identifier = Field(description="The order line (as the order named it).")
    sku: Identifier = Field(description="Stock keeping unit; must be the order line's.")
    quantity: Quantity = Field(description="Units returned (at least 1, at most what the line ordered).")


class Replacement(ContractModel):
    """What an exchange sends in place of one returned line: the same SKU or another."""

    line_id: Identifier = Field(description="The returned order line this replaces.")
    sku: Identifier = Field(description="The SKU to send: the returned one, or another (a size swap).")
    quantity: Quantity = Field(description="Units to send.")
    unit_price: Amount | None = Field(
        default=None, description="Price of one unit of the replacement; absent: the returned line's."
    )
    labels: tuple[ProductLabel, ...] | None = Field(
        default=None,
        description="Handling labels of the replacement product; absent: the returned line's when the SKU "
        "is the same, none otherwise.",
    )


def _check_resolution(
    resolution: ReturnResolution, replacements: tuple[Replacement, ...], line_ids: tuple[str, ...] | None
) -> None:
    if replacements and resolution is not ReturnResolution.EXCHANGE:
        raise ValueError(f"replacements are given only for an exchange, not for {resolution.value}")
    unique_values(tuple(r.line_id for r in replacements), "replacements[].line_id")
    if line_ids is not None:
        strangers = sorted({r.line_id for r in replacements} - set(line_ids))
        if strangers:
            raise ValueError(f"replacements name line(s) the return does not: {', '.join(strangers)}")


class ReturnAuthorised(EventPayload):
    """The OMS authorised a return: which lines come back, why, and what the customer gets.

    The orchestrator chooses where the goods go (or that the customer keeps
    them: a refund without return, below the policy's value), releases a return
    work order with a label request, and settles the return when the goods are
    received.
    """

    event_type: ClassVar[str] = "return.authorised.v1"

    return_id: Identifier = Field(description="The OMS's return (RMA) id, unique across orders.")
    order_id: Identifier = Field(description="The order the goods were bought in; the Kafka key.")
    lines: tuple[ReturnLine, ...] = Field(min_length=1, description="What comes back; `line_id`s are unique.")
    reason: ReturnReason = Field(description="Why the customer returns the goods.")
    reason_detail: Text | None = Field(default=None, description="The customer's words, for people.")
    resolution: ReturnResolution = Field(description="What the customer gets.")
    replacements: tuple[Replacement, ...] = Field(
        default=(),
        description="For an exchange: what to send for each returned line. Empty for an exchange: the same "
        "SKU and quantity for every line. Only given for an exchange.",
    )
    method: ReturnMethod = Field(
        default=ReturnMethod.SHIP_BACK, description="Sent back as a parcel, or brought to a store."
    )
    store_id: Identifier | None = Field(
        default=None,
        description="For `in_store`: the store the customer brings the goods to; absent: the nearest store "
        "that takes returns. Only given for `in_store`.",
    )
    authorised_at: AwareDatetime = Field(description="When the OMS authorised the return.")

    @field_validator("lines")
    @classmethod
    def _lines_unique(cls, v: tuple[ReturnLine, ...]) -> tuple[ReturnLine, ...]:
        unique_values(tuple(line.line_id for line in v), "lines[].line_id")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_resolution(self.resolution, self.replacements, tuple(line.line_id for line in self.lines))
        if self.store_id is not None and self.method is not ReturnMethod.IN_STORE:
            raise ValueError("store_id is given only for an in_store return")
        return self


class ReturnResolutionChanged(EventPayload):
    """The customer changed what they get for a return (return and replace becomes return for credit,
    or back). What no longer applies is stopped; what the new resolution needs is started."""

    event_type: ClassVar[str] = "return.resolution_changed.v1"

    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    resolution: ReturnResolution = Field(description="What the customer gets now.")
    replacements: tuple[Replacement, ...] = Field(
        default=(),
        description="For an exchange: what to send for each returned line (empty: the same SKU and "
        "quantity). Only given for an exchange.",
    )
    detail: Text | None = Field(default=None, description="Why, for people.")
    changed_at: AwareDatetime = Field(description="When the OMS changed it.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_resolution(self.resolution, self.replacements, None)
        return self


class ReturnCancelled(EventPayload):
    """The OMS withdrew a return authorisation (the customer keeps the goods and gets nothing back)."""

    event_type: ClassVar[str] = "return.cancelled.v1"

    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    reason: Text = Field(description="Why, for people.")
    cancelled_at: AwareDatetime = Field(description="When the OMS cancelled it.")


class ReturnOrderLine(ContractModel):
    """Units the receiving node is to expect."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(description="Units coming back.")
    labels: tuple[ProductLabel, ...] = Field(
        default=(), description="Handling labels (hazmat, fragile...) the node must respect."
    )


class ReturnLabel(ContractModel):
    """The return label to issue to the customer: who carries the parcel, from where, to where."""

    carrier: CarrierAssignment = Field(description="Carrier and service the label is for.")
    from_address: Address = Field(description="Where the parcel is collected or posted: the customer.")
    to_address: Address = Field(description="The receiving node's address.")


class ReturnOrderReleased(EventPayload):
    """A node is to receive returned goods: expect them, inspect them, report what can be sold again.

    A parcel sent back comes with the label request; a return brought to a
    store has none.
    """

    event_type: ClassVar[str] = "returnorder.released.v1"

    return_order_id: Identifier = Field(description="Id of the return work order; stable across retries.")
    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    node_id: Identifier = Field(description="The node that receives the goods.")
    method: ReturnMethod = Field(description="Sent back as a parcel, or brought to the store.")
    lines: tuple[ReturnOrderLine, ...] = Field(min_length=1, description="What comes back.")
    reason: ReturnReason = Field(description="Why the customer returns it (the node may inspect by it).")
    label: ReturnLabel | None = Field(
        default=None, description="The label request; absent only for a return brought to a store."
    )

    @model_validator(mode="after")
    def _label_for_parcels(self) -> Self:
        if self.method is ReturnMethod.SHIP_BACK and self.label is None:
            raise ValueError("a return sent back as a parcel needs a label")
        if self.method is ReturnMethod.IN_STORE and self.label is not None:
            raise ValueError("a return brought to a store has no label")
        return self


class ReturnOrderCancelReason(StrEnum):
    """Why the orchestrator no longer expects the goods."""

    RESOLUTION_CHANGED = "resolution_changed"
    RETURN_CANCELLED = "return_cancelled"


class ReturnOrderCancelRequested(EventPayload):
    """The orchestrator no longer expects the goods of a return work order (void the label)."""

    event_type: ClassVar[str] = "returnorder.cancel_requested.v1"

    return_order_id: Identifier = Field(description="The return work order to stop.")
    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    node_id: Identifier = Field(description="The node that was to receive the goods.")
    reason: ReturnOrderCancelReason = Field(description="Why.")
    detail: Text | None = Field(default=None, description="Free-text detail for people.")


class _ReturnEvent(EventPayload):
    """Fields every node return event carries (not an event type itself)."""

    return_order_id: Identifier = Field(description="The return work order this is about.")
    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    node_id: Identifier = Field(description="The node reporting (where the goods are).")
    occurred_at: AwareDatetime = Field(description="When it happened at the node.")


class ReturnReceived(_ReturnEvent):
    """The node received returned goods (not yet inspected)."""

    event_type: ClassVar[str] = "return.received.v1"

    lines: tuple[SkuLine, ...] = Field(min_length=1, description="Units received, per line.")

    @field_validator("lines")
    @classmethod
    def _lines_unique(cls, v: tuple[SkuLine, ...]) -> tuple[SkuLine, ...]:
        unique_values(tuple(line.line_id for line in v), "lines[].line_id")
        return v


class InspectedLine(ContractModel):
    """How the units of one returned line came out of inspection."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    restockable: NonNegativeInt = Field(description="Units fit to sell again: they go back into stock.")
    not_restockable: NonNegativeInt = Field(
        description="Units not fit to sell again (damaged, used, missing parts): they do not."
    )
    note: Text | None = Field(default=None, description="The inspector's words, for people.")

    @model_validator(mode="after")
    def _some_units(self) -> Self:
        if self.restockable + self.not_restockable == 0:
            raise ValueError("an inspected line has at least one unit (restockable or not)")
        return self


class ReturnInspected(_ReturnEvent):
    """The node inspected returned goods: per line, how many units can be sold again."""

    event_type: ClassVar[str] = "return.inspected.v1"

    lines: tuple[InspectedLine, ...] = Field(min_length=1, description="The outcome, per line.")

    @field_validator("lines")
    @classmethod
    def _lines_unique(cls, v: tuple[InspectedLine, ...]) -> tuple[InspectedLine, ...]:
        unique_values(tuple(line.line_id for line in v), "lines[].line_id")
        return v


class ReturnState(StrEnum):
    """Where a return stands, as the OMS is told it."""

    AUTHORISED = "authorised"  # accepted; where the goods go is decided
    AWAITING_RETURN = "awaiting_return"  # a return work order (and label) is out; waiting for the goods
    RECEIVED = "received"  # the goods arrived at the node
    INSPECTED = "inspected"  # the node said what can be sold again; that went back into stock
    REFUNDED = "refunded"  # the refund is due (amount)
    CREDITED = "credited"  # the store credit is due (amount)
    EXCHANGED = "exchanged"  # the replacement is released to a node
    NEEDS_ATTENTION = "needs_attention"  # a person must decide (reasons say what)
    COMPLETED = "completed"  # goods dealt with and the customer settled: nothing more happens
    CANCELLED = "cancelled"  # the OMS withdrew the return: nothing more happens


#: States after which nothing more happens to a return.
TERMINAL_RETURN_STATES: frozenset[ReturnState] = frozenset({ReturnState.COMPLETED, ReturnState.CANCELLED})


class ReturnStatusChanged(EventPayload):
    """The return moved to a new state (or what it resolves to changed); numbered per return."""

    event_type: ClassVar[str] = "return.status_changed.v1"

    return_id: Identifier = Field(description="The return.")
    order_id: Identifier = Field(description="Its order; the Kafka key.")
    state: ReturnState = Field(description="The return's state now.")
    previous_state: ReturnState | None = Field(
        default=None, description="The state before; absent on the return's first status."
    )
    sequence: PositiveInt = Field(
        description="1, 2, 3... per return, no gaps; the OMS applies them in order and ignores repeats."
    )
    resolution: ReturnResolution = Field(description="What the customer gets, as it stands.")
    reasons: tuple[Reason, ...] = Field(default=(), description="Why (changes, refusals, problems).")
    node_id: Identifier | None = Field(
        default=None, description="The node receiving the goods; absent: none (kept by the customer)."
    )
    return_order_id: Identifier | None = Field(default=None, description="The current return work order.")
    amount: Amount | None = Field(
        default=None, description="For `refunded` and `credited`: what the customer is owed, in `currency`."
    )
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 currency of `amount`.")
    replacement_work_order_ids: tuple[Identifier, ...] = Field(
        default=(), description="For an exchange: the work orders that ship the replacement, once released."
    )
    restocked: tuple[SkuLine, ...] = Field(
        default=(), description="Units put back into stock, once inspected."
    )
    not_restocked: tuple[SkuLine, ...] = Field(
        default=(), description="Units inspected as not fit to sell again."
    )
    occurred_at: AwareDatetime = Field(description="When the transition happened.")

    @model_validator(mode="after")
    def _money_has_amount(self) -> Self:
        if self.state in (ReturnState.REFUNDED, ReturnState.CREDITED) and self.amount is None:
            raise ValueError(f"amount is required when state is {self.state.value}")
        if (self.amount is None) != (self.currency is None):
            raise ValueError("amount and currency are given together")
        return self


class ReturnParkedExpired(EventPayload):
    """returns' ticker → returns: a parked event's wait is over. A node's event about a return not
    authorised yet, or an authorisation of a cancelled order none of whose work had been seen
    leaving, waited past the park limit: dead-letter it unless what it waited for came meanwhile.
    Or (an authorisation) a shipment of its order has been seen since: handle it now."""

    event_type: ClassVar[str] = "returns.parked_expired.v1"

    order_id: Identifier = Field(description="The order the parked event names; the Kafka key.")
    return_id: Identifier = Field(description="The return it waits for.")
    parked_event_id: str = Field(min_length=1, description="The parked event's id (`ce_id`).")
    parked_at: AwareDatetime = Field(description="When returns parked it.")
    due_at: AwareDatetime = Field(
        description="When its wait ran out (parked_at + the park limit), or, for an authorisation whose"
        " order's work was seen leaving, when that was seen."
    )
