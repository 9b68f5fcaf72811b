"""Work orders the orchestrator sends to nodes on `wms.work-orders.v1`, keyed by order id.

One work order per planned shipment: it tells one node which units to pick,
pack and hand to which carrier service by when. Nodes answer on
`wms.events.v1` (see `execution.py`).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import AwareDatetime, Field, field_validator, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    CarrierAssignment,
    ContractModel,
    DeliveryOption,
    Identifier,
    ProductLabel,
    Quantity,
    Text,
    require_not_before,
    unique_values,
)


class WorkOrderLine(ContractModel):
    """Units of one order line the node is to pick."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(description="Units to pick (at least 1).")
    labels: tuple[ProductLabel, ...] = Field(
        default=(), description="Handling labels (hazmat, fragile...) the node must respect."
    )


class WorkOrderReleased(EventPayload):
    """A node is to fulfil one shipment of an order: pick, pack and ship (or hold for pickup)."""

    event_type: ClassVar[str] = "workorder.released.v1"

    work_order_id: Identifier = Field(description="Id of the work order; stable across retries.")
    order_id: Identifier = Field(description="The order; the Kafka key.")
    shipment_id: Identifier = Field(description="The planned shipment this work order fulfils.")
    node_id: Identifier = Field(description="The node that is to do the work.")
    lines: tuple[WorkOrderLine, ...] = Field(min_length=1, description="What to pick; `line_id`s are unique.")
    ship_to: Address = Field(description="Where the shipment goes (for ship-to-store: the receiving store).")
    delivery: DeliveryOption = Field(description="The customer's delivery option.")
    carrier: CarrierAssignment | None = Field(
        default=None, description="Carrier and service to hand the shipment to; absent only for BOPIS pickup."
    )
    pick_by: AwareDatetime = Field(description="Picking must be done by then.")
    ship_by: AwareDatetime = Field(description="The carrier must have the shipment by then (the cut-off).")
    promised_delivery_date: date = Field(description="The date promised to the customer.")
    priority: bool = Field(default=False, description="True: pick ahead of non-priority work.")

    @field_validator("lines")
    @classmethod
    def _line_ids_unique(cls, v: tuple[WorkOrderLine, ...]) -> tuple[WorkOrderLine, ...]:
        unique_values(tuple(line.line_id for line in v), "lines[].line_id")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        require_not_before(self.pick_by, self.ship_by, "pick_by", "ship_by")
        if self.carrier is None and self.delivery.kind != "bopis":
            raise ValueError(f"carrier is required for delivery kind {self.delivery.kind!r}")
        return self


class CancelRequestReason(StrEnum):
    """Why the orchestrator asks a node to cancel a work order."""

    ORDER_CANCELLED = "order_cancelled"
    ORDER_AMENDED = "order_amended"
    REROUTED = "rerouted"
    NOT_ACKNOWLEDGED = "not_acknowledged"
    OTHER = "other"


class WorkOrderCancelRequested(EventPayload):
    """The orchestrator asks a node to stop a work order it released.

    The node answers with `wms.cancelled` (stopped) or, if it is too late,
    `wms.shipped`.
    """

    event_type: ClassVar[str] = "workorder.cancel_requested.v1"

    work_order_id: Identifier = Field(description="The work order to stop.")
    order_id: Identifier = Field(description="The order; the Kafka key.")
    node_id: Identifier = Field(description="The node holding the work order.")
    reason: CancelRequestReason = Field(description="Why.")
    detail: Text | None = Field(default=None, description="Free-text detail for people.")
