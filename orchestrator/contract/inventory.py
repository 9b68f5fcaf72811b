"""Inventory events on `inventory.updates.v1`, keyed by SKU.

Keyed by SKU (not node) so every change to one SKU, at any node, is seen in
order by the one reserve instance that owns that SKU's ledger rows.
Producers are the systems of record for stock (WMS, store systems, ERP).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, Field, NonNegativeInt, field_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import Identifier, Name


class InventorySnapshot(EventPayload):
    """The full stock position of one SKU at one node, replacing what was known before.

    Snapshots older than what the ledger already applied (by `as_of`) are ignored.
    """

    event_type: ClassVar[str] = "inventory.snapshot.v1"
    subject_field: ClassVar[str] = "sku"

    node_id: Identifier = Field(description="The node holding the stock.")
    sku: Identifier = Field(description="Stock keeping unit; the Kafka key.")
    on_hand: NonNegativeInt = Field(description="Physical units at the node.")
    safety_stock: NonNegativeInt = Field(
        default=0, description="Units the node keeps back and never promises to orders."
    )
    as_of: AwareDatetime = Field(description="When the count was true at the source.")


class DeltaReason(StrEnum):
    """Why the on-hand quantity of a SKU at a node changed."""

    RECEIPT = "receipt"
    SALE = "sale"
    ADJUSTMENT = "adjustment"
    RETURN = "return"
    DAMAGE = "damage"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"
    CYCLE_COUNT = "cycle_count"


class InventoryDelta(EventPayload):
    """On-hand stock of one SKU at one node went up or down by `change` units."""

    event_type: ClassVar[str] = "inventory.delta.v1"
    subject_field: ClassVar[str] = "sku"

    node_id: Identifier = Field(description="The node whose stock changed.")
    sku: Identifier = Field(description="Stock keeping unit; the Kafka key.")
    change: int = Field(description="Units added (positive) or removed (negative); never 0.")
    reason: DeltaReason = Field(description="Why the stock changed.")
    reference: Identifier | None = Field(
        default=None, description="The source document (receipt, sale, adjustment id), for audit."
    )
    as_of: AwareDatetime = Field(description="When the change happened at the source.")

    @field_validator("change")
    @classmethod
    def _non_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("change must not be 0 (a delta that changes nothing is not an event)")
        return v


class SupplyKind(StrEnum):
    """What document announces inbound supply."""

    PURCHASE_ORDER = "purchase_order"
    ADVANCE_SHIPPING_NOTICE = "advance_shipping_notice"
    TRANSFER = "transfer"
    PRODUCTION = "production"


class InboundSupplyExpected(EventPayload):
    """Units of a SKU are expected to arrive at a node on a date (a PO, an ASN, a transfer).

    The latest event for one (node, sku, reference) replaces the earlier
    ones; quantity 0 withdraws the expectation. Back-order and pre-order
    promises are made against this supply.
    """

    event_type: ClassVar[str] = "inventory.inbound_expected.v1"
    subject_field: ClassVar[str] = "sku"

    node_id: Identifier = Field(description="The node the supply arrives at.")
    sku: Identifier = Field(description="Stock keeping unit; the Kafka key.")
    quantity: NonNegativeInt = Field(description="Units expected; 0 withdraws this expectation.")
    expected_date: date = Field(description="The day the units are expected to be available at the node.")
    supply_kind: SupplyKind = Field(description="The kind of document `reference` names.")
    reference: Name = Field(description="The document's number (PO or ASN number, transfer id).")
    as_of: AwareDatetime = Field(description="When the source last updated the expectation.")
