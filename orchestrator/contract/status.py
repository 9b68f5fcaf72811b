"""What the orchestrator tells the OMS, the customer, and its own exception stage.

- `order.status_changed` on `oms.status.v1`: one event per state transition,
  numbered per order so the OMS can apply them in order and ignore repeats.
- `exception.raised` on the internal exceptions topic: something went off
  plan; the exceptions stage picks a playbook.
- `customer.notification` on `customer.notifications.v1`: a message the
  notification service is to send to the customer.

All are keyed by order id.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import AwareDatetime, Field, PositiveInt, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    ContractModel,
    Identifier,
    OrderState,
    Quantity,
    Reason,
    SkuLine,
    Text,
)


class LineStatus(ContractModel):
    """Where one order line (or part of it) stands."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(description="Units of the line in this state.")
    state: OrderState = Field(description="The state of these units.")
    node_id: Identifier | None = Field(default=None, description="The node fulfilling them, once decided.")
    shipment_id: Identifier | None = Field(default=None, description="Their shipment, once planned.")
    tracking_number: Identifier | None = Field(
        default=None, description="Their tracking number, once shipped."
    )


class OrderStatusChanged(EventPayload):
    """The order moved to a new state (or the reasons for its state changed)."""

    event_type: ClassVar[str] = "order.status_changed.v1"

    order_id: Identifier = Field(description="The order; the Kafka key.")
    state: OrderState = Field(description="The order's state now.")
    previous_state: OrderState | None = Field(
        default=None, description="The state before; absent on the order's first status."
    )
    reasons: tuple[Reason, ...] = Field(default=(), description="Why the order is in this state.")
    sequence: PositiveInt = Field(
        description="1, 2, 3... per order, no gaps; the OMS applies them in order and ignores repeats."
    )
    lines: tuple[LineStatus, ...] | None = Field(
        default=None, description="Per-line detail, when lines are in different states (splits)."
    )
    occurred_at: AwareDatetime = Field(description="When the transition happened.")


class ExceptionKind(StrEnum):
    """What went off plan."""

    VALIDATION_FAILED = "validation_failed"
    NO_FEASIBLE_PLAN = "no_feasible_plan"
    RESERVATION_FAILED = "reservation_failed"
    SHORT_PICK = "short_pick"
    NODE_REJECTED = "node_rejected"
    NODE_CANCELLED = "node_cancelled"
    NODE_CLOSED = "node_closed"
    NOT_ACKNOWLEDGED = "not_acknowledged"
    NOT_SHIPPED_BY_CUTOFF = "not_shipped_by_cutoff"
    PROMISE_AT_RISK = "promise_at_risk"
    NO_CARRIER_SCAN = "no_carrier_scan"
    CARRIER_OUTAGE = "carrier_outage"
    CARRIER_DELAY = "carrier_delay"
    CARRIER_EXCEPTION = "carrier_exception"
    LOST_PARCEL = "lost_parcel"


class ExceptionRaised(EventPayload):
    """A stage found that an order's plan is failing or about to; a playbook is to respond."""

    event_type: ClassVar[str] = "exception.raised.v1"

    exception_id: Identifier = Field(description="Id of the exception; deterministic, so repeats are one.")
    order_id: Identifier = Field(description="The order; the Kafka key.")
    kind: ExceptionKind = Field(description="What went off plan.")
    node_id: Identifier | None = Field(default=None, description="The node involved, if any.")
    work_order_id: Identifier | None = Field(default=None, description="The work order involved, if any.")
    shipment_id: Identifier | None = Field(default=None, description="The shipment involved, if any.")
    line_ids: tuple[Identifier, ...] = Field(default=(), description="The order lines involved; empty: all.")
    detail: Text = Field(description="What happened, for people.")
    raised_at: AwareDatetime = Field(description="When the stage noticed.")
    unfilled: tuple[SkuLine, ...] = Field(
        default=(),
        description="Quantities the failing shipment will not deliver (re-route or back-order).",
    )
    new_estimate: date | None = Field(
        default=None, description="The carrier's new estimated delivery date, for delays."
    )


class NotificationKind(StrEnum):
    """What the customer is told."""

    ORDER_CONFIRMED = "order_confirmed"
    SHIPPED = "shipped"
    PARTIALLY_SHIPPED = "partially_shipped"
    READY_FOR_PICKUP = "ready_for_pickup"
    DELAYED_NEW_DATE = "delayed_new_date"
    OPTIONS_OFFERED = "options_offered"
    BACK_ORDERED = "back_ordered"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUND_ISSUED = "refund_issued"


class CustomerOption(ContractModel):
    """One choice offered to the customer when the original plan cannot be kept."""

    option_id: Identifier = Field(description="Id the customer's answer refers to.")
    description: Text = Field(description="What the option means, for the customer.")
    promised_date: date | None = Field(default=None, description="Delivery date if this option is chosen.")


class CustomerNotification(EventPayload):
    """A message for the customer about their order; the notification service delivers it."""

    event_type: ClassVar[str] = "customer.notification.v1"

    order_id: Identifier = Field(description="The order; the Kafka key.")
    customer_id: Identifier = Field(description="The customer to notify.")
    kind: NotificationKind = Field(description="What the customer is told.")
    message: Text = Field(description="The message text.")
    new_promised_date: date | None = Field(
        default=None, description="The new delivery date (required for `delayed_new_date`)."
    )
    options: tuple[CustomerOption, ...] | None = Field(
        default=None, min_length=1, description="Choices offered (required for `options_offered`)."
    )
    tracking_numbers: tuple[Identifier, ...] = Field(
        default=(), description="Tracking numbers to show (shipped notifications)."
    )

    @model_validator(mode="after")
    def _kind_has_its_data(self) -> Self:
        if self.kind is NotificationKind.DELAYED_NEW_DATE and self.new_promised_date is None:
            raise ValueError("new_promised_date is required when kind is delayed_new_date")
        if self.kind is NotificationKind.OPTIONS_OFFERED and not self.options:
            raise ValueError("options is required when kind is options_offered")
        return self
