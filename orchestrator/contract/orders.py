"""Order events the OMS publishes on `oms.orders.v1`, keyed by order id.

The OMS owns the order record; these events tell the orchestrator what the
OMS knows. The OMS's own event id travels as `ce_id` (the ingest stage
deduplicates on it), so no payload repeats it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, field_validator, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    Amount,
    Channel,
    ContractModel,
    CurrencyCode,
    CustomerTier,
    DeliveryOption,
    HoldReason,
    Identifier,
    OrderLine,
    Text,
    unique_values,
)

#: A promise token as the promise API gives it: base64url, short enough for a header-sized field.
PromiseTokenText = Annotated[
    str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[A-Za-z0-9_-]+$")
]


class OrderCreated(EventPayload):
    """A customer placed an order; the orchestrator is to fulfil it.

    The order's lines, where it goes, how fast, by which date it was promised
    and any hold the OMS already knows about (an order that arrives on hold
    waits for `order.hold_released`).
    """

    event_type: ClassVar[str] = "order.created.v1"

    order_id: Identifier = Field(description="The OMS's order id; the Kafka key of every event of the order.")
    channel: Channel = Field(description="Where the order was placed.")
    customer_id: Identifier = Field(description="The OMS's customer id.")
    customer_tier: CustomerTier = Field(description="The customer's service tier.")
    placed_at: AwareDatetime = Field(description="When the customer placed the order.")
    ship_to: Address | None = Field(
        default=None,
        description="Where the goods go; may be absent only for BOPIS (the order is rejected with "
        "`missing_address` otherwise).",
    )
    lines: tuple[OrderLine, ...] = Field(min_length=1, description="The order lines; `line_id`s are unique.")
    order_total: Amount = Field(
        description="What the customer pays in total (goods, shipping, tax), in `currency`."
    )
    currency: CurrencyCode = Field(description="ISO 4217 currency of every amount in the order.")
    delivery: DeliveryOption = Field(description="The delivery option the customer chose.")
    promised_delivery_date: date = Field(
        description="The delivery (or pickup) date promised to the customer."
    )
    ship_complete: bool = Field(
        default=False, description="True: ship all lines together or not at all (no split shipments)."
    )
    priority: bool = Field(default=False, description="True: handle ahead of non-priority orders.")
    holds: tuple[HoldReason, ...] = Field(
        default=(),
        description="Holds already on the order; it is not released to a node until each is released.",
        json_schema_extra={"uniqueItems": True},
    )
    promise_token: PromiseTokenText | None = Field(
        default=None,
        description="The `promise_token` of the promise API option the customer chose at checkout: the "
        "plan's explanation then says whether the order got what was promised, and if not, why. It is "
        "compared with, never obeyed.",
    )

    @field_validator("lines")
    @classmethod
    def _line_ids_unique(cls, v: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        unique_values(tuple(line.line_id for line in v), "lines[].line_id")
        return v

    @field_validator("holds")
    @classmethod
    def _holds_unique(cls, v: tuple[HoldReason, ...]) -> tuple[HoldReason, ...]:
        unique_values(tuple(str(h) for h in v), "holds")
        return v


class LineQuantityChange(ContractModel):
    """The new quantity of one line; 0 removes the line from the order."""

    line_id: Identifier = Field(description="The order line.")
    quantity: int = Field(ge=0, description="The line's new quantity; 0 removes the line.")


_AMENDABLE = ("ship_to", "priority", "line_quantities", "order_total")


class OrderAmended(EventPayload):
    """The OMS changed an order after it was created.

    Only the fields that changed are given; at least one is. Lines the event
    does not name keep their quantity.
    """

    # Pydantic merges this with the base config; the extra schema is how JSON
    # Schema says "at least one of these is given and not null".
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}} for f in _AMENDABLE]
        }
    )

    event_type: ClassVar[str] = "order.amended.v1"

    order_id: Identifier = Field(description="The order.")
    ship_to: Address | None = Field(default=None, description="The new ship-to address, if it changed.")
    priority: bool | None = Field(default=None, description="The new priority flag, if it changed.")
    line_quantities: tuple[LineQuantityChange, ...] | None = Field(
        default=None, min_length=1, description="New quantities of the lines that changed, if any."
    )
    order_total: Amount | None = Field(
        default=None,
        description="What the customer now pays in all, if it changed (a quantity change usually does).",
    )

    @field_validator("line_quantities")
    @classmethod
    def _lines_unique(cls, v: tuple[LineQuantityChange, ...] | None) -> tuple[LineQuantityChange, ...] | None:
        if v is not None:
            unique_values(tuple(c.line_id for c in v), "line_quantities[].line_id")
        return v

    @model_validator(mode="after")
    def _something_changed(self) -> Self:
        if all(getattr(self, f) is None for f in _AMENDABLE):
            raise ValueError(f"an amendment must change at least one of {', '.join(_AMENDABLE)}")
        return self


class CancelReason(StrEnum):
    """Why the OMS cancelled an order."""

    CUSTOMER_REQUEST = "customer_request"
    PAYMENT_FAILED = "payment_failed"
    FRAUD = "fraud"
    OUT_OF_STOCK = "out_of_stock"
    MERCHANT = "merchant"
    OTHER = "other"


class OrderCancelled(EventPayload):
    """The OMS cancelled the whole order; whatever has not shipped must stop."""

    event_type: ClassVar[str] = "order.cancelled.v1"

    order_id: Identifier = Field(description="The order.")
    reason: CancelReason = Field(description="Why it was cancelled.")
    detail: Text | None = Field(default=None, description="Free-text detail for people.")


class OrderHoldReleased(EventPayload):
    """The OMS released one hold on an order (holds are released only when the OMS says so)."""

    event_type: ClassVar[str] = "order.hold_released.v1"

    order_id: Identifier = Field(description="The order.")
    hold: HoldReason = Field(description="The hold that no longer applies.")
