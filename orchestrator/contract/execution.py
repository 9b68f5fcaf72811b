"""What happens to released work, as nodes and carriers report it.

Nodes (WMS, store systems, 3PLs, drop-ship vendors) publish on
`wms.events.v1`; carriers (or a tracking aggregator) on `carrier.events.v1`.
Both are keyed by order id so the monitor sees one order's milestones in
order. Every event says when it happened at the source (`occurred_at`),
which may be well before it reaches Kafka.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import AwareDatetime, Field, NonNegativeInt, PositiveInt, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    ContractModel,
    Identifier,
    Name,
    Package,
    SkuLine,
    Text,
)

# ---------------------------------------------------------------------------
# Node execution events (wms.events.v1)
# ---------------------------------------------------------------------------


class _NodeEvent(EventPayload):
    """Fields every node execution event carries (not an event type itself)."""

    work_order_id: Identifier = Field(description="The work order this is about.")
    order_id: Identifier = Field(description="The order; the Kafka key.")
    node_id: Identifier = Field(description="The node reporting.")
    occurred_at: AwareDatetime = Field(description="When it happened at the node.")


class WorkOrderAcknowledged(_NodeEvent):
    """The node accepted the work order and will work it."""

    event_type: ClassVar[str] = "wms.acknowledged.v1"


class WorkOrderPicked(_NodeEvent):
    """The node picked every unit of the work order."""

    event_type: ClassVar[str] = "wms.picked.v1"

    lines: tuple[SkuLine, ...] = Field(min_length=1, description="Units picked, per line.")


class ShortLine(ContractModel):
    """A line the node could not pick in full."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity_picked: NonNegativeInt = Field(description="Units found and picked.")
    quantity_short: PositiveInt = Field(description="Units the node could not find.")


class WorkOrderShortPicked(_NodeEvent):
    """The node could not pick some units; it goes on with what it has unless told otherwise."""

    event_type: ClassVar[str] = "wms.short_picked.v1"

    lines: tuple[ShortLine, ...] = Field(min_length=1, description="The lines that came up short.")


class WorkOrderPacked(_NodeEvent):
    """The node packed the work order into parcels, ready for the carrier."""

    event_type: ClassVar[str] = "wms.packed.v1"

    packages: tuple[Package, ...] = Field(min_length=1, description="The parcels.")


class WorkOrderShipped(_NodeEvent):
    """The carrier took the shipment from the node."""

    event_type: ClassVar[str] = "wms.shipped.v1"

    shipment_id: Identifier = Field(description="The planned shipment (from the work order).")
    carrier: Identifier = Field(description="The carrier that took it (may differ from the one planned).")
    service_id: Identifier = Field(description="The carrier service used.")
    tracking_number: Identifier = Field(description="The shipment's (master) tracking number.")
    packages: tuple[Package, ...] = Field(min_length=1, description="The parcels handed over.")
    lines: tuple[SkuLine, ...] = Field(min_length=1, description="Units shipped, per line.")


class NodeRejectReason(StrEnum):
    """Why a node refused a work order."""

    NO_STOCK = "no_stock"
    NO_CAPACITY = "no_capacity"
    CANNOT_HANDLE = "cannot_handle"
    NODE_CLOSED = "node_closed"
    INVALID = "invalid"
    OTHER = "other"


class WorkOrderRejected(_NodeEvent):
    """The node refused the work order; nothing was picked."""

    event_type: ClassVar[str] = "wms.rejected.v1"

    reason: NodeRejectReason = Field(description="Why.")
    detail: Text | None = Field(default=None, description="Free-text detail for people.")


class NodeCancelReason(StrEnum):
    """Why a node cancelled a work order it had accepted."""

    REQUESTED = "requested"
    NO_STOCK = "no_stock"
    DAMAGED = "damaged"
    NODE_CLOSED = "node_closed"
    OTHER = "other"


class WorkOrderCancelledByNode(_NodeEvent):
    """The node stopped the work order; nothing of it will ship.

    `requested` confirms a `workorder.cancel_requested`; any other reason is
    the node's own decision.
    """

    event_type: ClassVar[str] = "wms.cancelled.v1"

    reason: NodeCancelReason = Field(description="Why.")
    detail: Text | None = Field(default=None, description="Free-text detail for people.")


# ---------------------------------------------------------------------------
# Carrier tracking events (carrier.events.v1)
# ---------------------------------------------------------------------------


class _CarrierEvent(EventPayload):
    """Fields every carrier tracking event carries (not an event type itself)."""

    tracking_number: Identifier = Field(description="The shipment's tracking number.")
    carrier: Identifier = Field(description="The carrier reporting.")
    order_id: Identifier = Field(description="The order; the Kafka key.")
    shipment_id: Identifier = Field(description="The shipment.")
    occurred_at: AwareDatetime = Field(description="When the carrier scanned or recorded it.")


class ShipmentPickedUp(_CarrierEvent):
    """First carrier scan: the carrier has the shipment."""

    event_type: ClassVar[str] = "carrier.picked_up.v1"


class ShipmentInTransit(_CarrierEvent):
    """A carrier scan on the way."""

    event_type: ClassVar[str] = "carrier.in_transit.v1"

    location: Name = Field(description="Where the scan happened, as the carrier reports it.")


class ShipmentDelayed(_CarrierEvent):
    """The carrier moved the estimated delivery date."""

    event_type: ClassVar[str] = "carrier.delayed.v1"

    new_estimated_delivery: date = Field(description="The carrier's new estimated delivery date.")
    reason: Text | None = Field(default=None, description="The carrier's reason, if given.")


class ShipmentException(_CarrierEvent):
    """The carrier reported a problem (address, damage, refused, customs...)."""

    event_type: ClassVar[str] = "carrier.exception.v1"

    code: Name = Field(description="The carrier's own exception code.")
    description: Text = Field(description="The carrier's description of the problem.")


class ShipmentDelivered(_CarrierEvent):
    """The shipment reached the customer (or the pickup store)."""

    event_type: ClassVar[str] = "carrier.delivered.v1"

    received_by: Name | None = Field(default=None, description="Who signed, if the carrier says.")


class ShipmentLost(_CarrierEvent):
    """The carrier declared the shipment lost."""

    event_type: ClassVar[str] = "carrier.lost.v1"

    last_seen_at: AwareDatetime | None = Field(default=None, description="Time of the last scan, if known.")

    @model_validator(mode="after")
    def _seen_before_lost(self) -> Self:
        if self.last_seen_at is not None and self.last_seen_at > self.occurred_at:
            raise ValueError("last_seen_at must not be after occurred_at (the time it was declared lost)")
        return self
