"""Internal events: what the stages of the order path tell each other.

They travel on the `orchestrator.*` topics, keyed by order id like the OMS
events, so one order's story stays in order from ingest to release. Each
carries the order as it stands now (`order`), so no stage needs to look up
another stage's state, and the per-order `sequence` that ingest assigned.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, NonNegativeInt, PositiveInt

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Amount,
    CarrierAssignment,
    ContractModel,
    HoldReason,
    Identifier,
    OrderState,
    Reason,
    ServiceLevel,
    SkuLine,
    Text,
)
from orchestrator.contract.orders import CancelReason, OrderCreated


class OrderChange(StrEnum):
    """What happened to the order in the OMS event that ingest accepted."""

    CREATED = "created"
    AMENDED = "amended"
    CANCELLED = "cancelled"
    HOLD_RELEASED = "hold_released"


class OrderIngested(EventPayload):
    """ingest → validate: an OMS event accepted once, in sequence, normalised to the whole current order."""

    event_type: ClassVar[str] = "order.ingested.v1"

    order_id: Identifier = Field(description="The order.")
    sequence: PositiveInt = Field(description="Position of this change in the order's story (1 = created).")
    change: OrderChange = Field(description="What the OMS event did.")
    order: OrderCreated = Field(description="The order as it stands after the change.")
    amended_fields: tuple[str, ...] = Field(default=(), description="For amendments: what changed.")
    cancel_reason: CancelReason | None = Field(default=None, description="For cancellations: why.")
    released_hold: HoldReason | None = Field(default=None, description="For hold releases: which hold.")


class OrderValidated(EventPayload):
    """validate → decide-node: plan this order (again), or stop it."""

    event_type: ClassVar[str] = "order.validated.v1"

    order_id: Identifier = Field(description="The order.")
    sequence: PositiveInt = Field(description="The ingest sequence this decision answers.")
    action: Literal["plan", "cancel"] = Field(description="`plan`: decide where to fulfil; `cancel`: stop.")
    order: OrderCreated = Field(description="The order as it stands.")
    reason: Text | None = Field(default=None, description="Why (re-plan after an amendment, cancellation).")


class Repair(ContractModel):
    """What an exception playbook asks of a re-decide: plan part of an order again, within limits."""

    exception_id: Identifier = Field(description="The exception being repaired.")
    action: Identifier = Field(description="The playbook action (reroute, rebook_faster...).")
    lines: tuple[SkuLine, ...] = Field(min_length=1, description="The quantities to plan again.")
    replaces_work_order_id: Identifier | None = Field(default=None, description="The failing work order.")
    replaces_shipment_id: Identifier | None = Field(default=None, description="Its shipment.")
    cancel_replaced: bool = Field(description="True: ask the node to cancel the failing work order.")
    dropped_if_shipped: bool = Field(
        default=False,
        description="True: needed only while the failing shipment has not left. The node was asked to stop"
        " it (it refused, cancelled or closed, did not acknowledge, missed its cut-off); if it ships anyway"
        " before the repair is reserved, its lines are on their way and the repair is dropped. False: the"
        " repair stands after the shipment left (a lost or late parcel is sent again; a short pick's"
        " missing units are still missing).",
    )
    only_nodes: tuple[Identifier, ...] = Field(default=(), description="Plan only at these nodes (re-book).")
    min_service_level: ServiceLevel | None = Field(default=None, description="At least this fast.")
    max_extra_cost: float | None = Field(default=None, description="The repair may cost at most this.")
    max_delay_days: int | None = Field(default=None, description="Days past the promise it may arrive.")


class RedecideRequested(EventPayload):
    """reserve or exceptions → decide-node: the plan could not be carried out; decide again."""

    event_type: ClassVar[str] = "order.redecide_requested.v1"

    order_id: Identifier = Field(description="The order.")
    sequence: PositiveInt = Field(description="The ingest sequence of the order the plan was for.")
    attempt: PositiveInt = Field(description="How many times this order has been re-decided (1, 2, ...).")
    order: OrderCreated = Field(description="The order as it stands.")
    excluded_nodes: tuple[Identifier, ...] = Field(default=(), description="Nodes not to use this time.")
    reason: Reason = Field(description="Why the plan failed.")
    repair: Repair | None = Field(
        default=None, description="Set by an exception playbook: re-plan only these lines; absent: the order."
    )


class PlanOutcome(StrEnum):
    """What the decision does with the order."""

    SHIP = "ship"  # every line planned on shipments
    PARTIAL = "partial"  # some lines ship now, the rest are back-ordered
    BACKORDER = "backorder"  # nothing can ship now; wait for stock
    HOLD_FOR_STOCK = "hold_for_stock"  # ship-complete order that no plan can fill completely now
    UNFULFILLABLE = "unfulfillable"  # no node can ever take some line (labels, region, no carrier)


class DayCapacity(ContractModel):
    """The node's day a shipment counts against, and how many shipments the node takes that day."""

    day: date = Field(
        description="The day the shipment leaves the node: the node's local date when the plan was "
        "decided, or its next working day when that was after the node's cut-off (Monday to Friday "
        "for a warehouse, 3PL or vendor; any day for a store)."
    )
    shipments: NonNegativeInt = Field(
        description="Shipments the node can take that day, in the deciding stage's network view."
    )


class PlannedShipment(ContractModel):
    """One shipment of a plan: which node sends which lines, how, and by when."""

    shipment_id: Identifier = Field(description="Deterministic id: order, plan version and node.")
    node_id: Identifier = Field(description="The node that fulfils it.")
    lines: tuple[SkuLine, ...] = Field(min_length=1, description="Lines (or parts of lines) it carries.")
    carrier: CarrierAssignment = Field(description="Carrier and service.")
    service_level: ServiceLevel = Field(description="Speed class of the service.")
    ship_by: AwareDatetime = Field(description="When the node must hand it to the carrier (its cut-off).")
    promised_delivery_date: date = Field(description="The delivery (or pickup) date this shipment promises.")
    distance_km: float = Field(ge=0, description="Great-circle distance node → destination.")
    shipping_cost: Amount = Field(description="What the carrier charges.")
    cost: float = Field(description="Total cost the optimiser gave this shipment (shipping + penalties).")
    capacity: DayCapacity | None = Field(
        default=None,
        description="The node's day this shipment counts against and its capacity then: reserve holds"
        " the plan only if the node's shipments that day stay within it. Absent: counted on the UTC"
        " date of the decision, capacity not checked (plans made before the field existed).",
    )

    def counts_on(self, decided_on: date) -> date:
        """The day this shipment counts against at its node: the day it carries, or for a plan made
        before shipments carried it, `decided_on` (the UTC date of the decision)."""
        return decided_on if self.capacity is None else self.capacity.day


class CandidateVerdict(ContractModel):
    """How one node fared in the decision: why it was rejected, or what it would have cost."""

    node_id: Identifier = Field(description="The node.")
    eligible: bool = Field(description="True: it passed the hard constraints for at least one line.")
    reasons: tuple[Reason, ...] = Field(default=(), description="Why it was rejected (some or all lines).")
    lines: tuple[Identifier, ...] = Field(default=(), description="Lines it could serve.")
    best_cost: float | None = Field(default=None, description="Its cost serving what it could, alone.")


class PlanDecided(EventPayload):
    """decide-node → reserve: where each line is fulfilled, and why."""

    event_type: ClassVar[str] = "plan.decided.v1"

    order_id: Identifier = Field(description="The order.")
    plan_id: Identifier = Field(description="Deterministic id of this plan (order and version).")
    plan_version: PositiveInt = Field(description="1 for the first plan of the order, then 2, 3...")
    sequence: PositiveInt = Field(description="The ingest sequence of the order this plan is for.")
    order: OrderCreated = Field(description="The order as it stands.")
    outcome: PlanOutcome = Field(description="What the decision does with the order.")
    shipments: tuple[PlannedShipment, ...] = Field(default=(), description="The shipments (may be empty).")
    backordered: tuple[SkuLine, ...] = Field(default=(), description="Quantities waiting for stock.")
    total_cost: float = Field(description="The objective value of the chosen plan.")
    policy_version: Identifier = Field(description="Version of the routing policy that decided.")
    candidates: tuple[CandidateVerdict, ...] = Field(default=(), description="Every node considered.")
    explanation: tuple[Text, ...] = Field(default=(), description="The decision in words, a sentence each.")
    decided_at: AwareDatetime = Field(description="When it was decided.")
    excluded_nodes: tuple[Identifier, ...] = Field(default=(), description="Nodes excluded by a re-decide.")
    attempt: NonNegativeInt = Field(default=0, description="Re-decide attempt (0: first decision).")
    repair: Repair | None = Field(
        default=None, description="A partial plan repairing an exception; absent: a plan of the whole order."
    )

    def node_day(self, shipment: PlannedShipment) -> tuple[str, date]:
        """The (node, day) one of its shipments counts against (see `PlannedShipment.counts_on`)."""
        return shipment.node_id, shipment.counts_on(self.decided_at.date())


class PlanCancelled(EventPayload):
    """decide-node → reserve: the order stops; give back what it holds."""

    event_type: ClassVar[str] = "plan.cancelled.v1"

    order_id: Identifier = Field(description="The order.")
    sequence: PositiveInt = Field(description="The ingest sequence of the cancellation.")
    reason: Text = Field(description="Why.")


class ReservedShipment(ContractModel):
    """A planned shipment whose stock is now reserved at its node."""

    shipment: PlannedShipment = Field(description="The shipment.")
    reservation_ids: tuple[Identifier, ...] = Field(min_length=1, description="One per line allocation.")


class ReservationConfirmed(EventPayload):
    """reserve → release: every shipment of the plan has its stock reserved."""

    event_type: ClassVar[str] = "reservation.confirmed.v1"

    order_id: Identifier = Field(description="The order.")
    plan_id: Identifier = Field(description="The plan reserved.")
    plan_version: PositiveInt = Field(description="Its version.")
    sequence: PositiveInt = Field(description="The ingest sequence of the order the plan is for.")
    order: OrderCreated = Field(description="The order as it stands.")
    shipments: tuple[ReservedShipment, ...] = Field(min_length=1, description="Reserved shipments.")
    backordered: tuple[SkuLine, ...] = Field(default=(), description="Quantities waiting for stock.")
    repair: Repair | None = Field(default=None, description="Set when the plan repairs an exception.")


class ReservationsReleased(EventPayload):
    """reserve → release: the order's reservations were given back (cancellation or re-plan)."""

    event_type: ClassVar[str] = "reservation.released.v1"

    order_id: Identifier = Field(description="The order.")
    plan_id: Identifier | None = Field(default=None, description="The plan whose reservations went back.")
    reason: Text = Field(description="Why.")
    cancel_order: bool = Field(description="True: the order is cancelled; cancel any released work.")
    shipment_ids: tuple[Identifier, ...] = Field(
        default=(),
        description="Only these shipments were given back (a repair that moved or back-ordered their"
        " lines without a new shipment to confirm): cancel their work orders. Empty: the plan's (or the"
        " order's) every shipment.",
    )


class ReservationsConsumed(EventPayload):
    """reserve → every ledger that follows it: a shipment left its node, taking units reserved for it.

    Those units are no longer reserved and no longer on hand (unless the node's count was taken after
    they left: see `orchestrator.domain.stock_counts`). `lines` are the units consumed, at most what
    the shipment held of each line. A work order ships once: what the shipment still held beyond
    that (units the node picked short, lines it left out) is `released`, no longer reserved but still
    on hand until the node's count says otherwise.
    """

    event_type: ClassVar[str] = "reservation.consumed.v1"

    order_id: Identifier = Field(description="The order.")
    shipment_id: Identifier = Field(description="The planned shipment that left.")
    work_order_id: Identifier = Field(description="The work order the node shipped.")
    node_id: Identifier = Field(description="The node it left.")
    shipped_at: AwareDatetime = Field(description="When it left, as the node reported.")
    lines: tuple[SkuLine, ...] = Field(min_length=1, description="Units consumed per line.")
    released: tuple[SkuLine, ...] = Field(
        default=(),
        description="Units the shipment held but did not take (picked short, left out): given back, "
        "not consumed.",
    )


class RepairOutcome(EventPayload):
    """decide-node or release → exceptions: how a playbook action went."""

    event_type: ClassVar[str] = "exception.repair_outcome.v1"

    order_id: Identifier = Field(description="The order.")
    exception_id: Identifier = Field(description="The exception the action was for.")
    action: Identifier = Field(description="The playbook action.")
    succeeded: bool = Field(description="True: the repair is released; false: try the next action.")
    detail: Text = Field(description="What happened, for people.")
    work_order_ids: tuple[Identifier, ...] = Field(default=(), description="New work orders, on success.")
    promised_delivery_date: date | None = Field(default=None, description="The date the repair delivers by.")
    extra_cost: float | None = Field(default=None, description="What the repair costs.")


class TimerDue(EventPayload):
    """monitor's timer → monitor: a milestone deadline of a work order has passed; check it."""

    event_type: ClassVar[str] = "monitor.timer_due.v1"

    order_id: Identifier = Field(description="The order.")
    work_order_id: Identifier = Field(description="The work order.")
    timer: Literal["acknowledge", "ship_by", "carrier_scan"] = Field(description="Which deadline.")
    due_at: AwareDatetime = Field(description="When it fell due.")


class ParkedEventExpired(EventPayload):
    """monitor's timer → monitor: an event parked until its work order's release has waited past the
    park limit; dead-letter it unless the release came meanwhile."""

    event_type: ClassVar[str] = "monitor.parked_expired.v1"

    order_id: Identifier = Field(description="The order the parked event is about.")
    parked_event_id: str = Field(min_length=1, description="The parked event's id (`ce_id`).")
    parked_at: AwareDatetime = Field(description="When monitor parked it.")
    due_at: AwareDatetime = Field(description="When its wait ran out (parked_at + the park limit).")


class SupplyReleaseDue(EventPayload):
    """reserve's ticker → reserve: pre-order lines of a SKU reached their release date; plan what
    the stock allows."""

    event_type: ClassVar[str] = "supply.release_due.v1"
    subject_field: ClassVar[str] = "sku"

    sku: Identifier = Field(description="The SKU whose waiting lines are due; the Kafka key.")
    day: date = Field(description="The release day that fell due.")


class QueueOwed(EventPayload):
    """reserve → the promise API: what the waiting lines of a SKU are owed now.

    Back-ordered and pre-ordered lines wait in their SKU's queue, and a new order is planned against
    the stock less what the queue is owed (`orchestrator.domain.supply.set_aside`). The latest of
    these per SKU is the whole truth, so the topic is compacted.
    """

    event_type: ClassVar[str] = "supply.queue_owed.v1"
    subject_field: ClassVar[str] = "sku"

    sku: Identifier = Field(description="The SKU; the Kafka key.")
    units: NonNegativeInt = Field(description="Units its waiting lines are owed (0: nothing waits).")
    as_of: AwareDatetime = Field(description="When reserve's queue was so.")


class StageStatus(EventPayload):
    """Every stage → status-sync: the order reached a state, as this stage sees it.

    status-sync turns these into one `order.status_changed.v1` per transition
    on `oms.status.v1`, in order.
    """

    event_type: ClassVar[str] = "order.stage_status.v1"

    order_id: Identifier = Field(description="The order.")
    state: OrderState = Field(description="The state the order reached.")
    stage: Identifier = Field(description="The stage that says so.")
    sequence: PositiveInt = Field(description="The ingest sequence this state belongs to.")
    reasons: tuple[Reason, ...] = Field(default=(), description="Why (for rejections, holds, back-orders).")
    detail: Text | None = Field(default=None, description="A sentence for people.")
    occurred_at: datetime = Field(description="When the stage saw it.")
