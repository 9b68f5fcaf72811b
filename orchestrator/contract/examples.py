"""A realistic instance of every event type, for tests, docs and demos.

All examples tell one story: order `ORD-100234`, placed on the web in
Manchester, two lines, fulfilled from the Leeds DC by DPD next day, with a
short pick along the way. Fixed times keep the examples (and anything
rendered from them) identical from run to run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from types import MappingProxyType

from orchestrator.contract.base import EventPayload, UnknownEventType
from orchestrator.contract.common import (
    Address,
    CarrierAssignment,
    Channel,
    CustomerTier,
    HoldReason,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    OrderState,
    Package,
    ProductLabel,
    Reason,
    ServiceLevel,
    SkuLine,
)
from orchestrator.contract.execution import (
    NodeCancelReason,
    NodeRejectReason,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentException,
    ShipmentInTransit,
    ShipmentLost,
    ShipmentPickedUp,
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.inventory import (
    DeltaReason,
    InboundSupplyExpected,
    InventoryDelta,
    InventorySnapshot,
    SupplyKind,
)
from orchestrator.contract.network import (
    CarrierOutage,
    CarrierServiceUpserted,
    DistanceBand,
    DistanceBandCost,
    NodeCapacityChanged,
    NodeStatusChanged,
    NodeUpserted,
)
from orchestrator.contract.orders import (
    CancelReason,
    LineQuantityChange,
    OrderAmended,
    OrderCancelled,
    OrderCreated,
    OrderHoldReleased,
)
from orchestrator.contract.pipeline import (
    CandidateVerdict,
    DayCapacity,
    OrderChange,
    OrderIngested,
    OrderValidated,
    ParkedEventExpired,
    PlanCancelled,
    PlanDecided,
    PlannedShipment,
    PlanOutcome,
    QueueOwed,
    RedecideRequested,
    RepairOutcome,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
    ReservedShipment,
    StageStatus,
    SupplyReleaseDue,
    TimerDue,
)
from orchestrator.contract.registry import EVENT_TYPES
from orchestrator.contract.returns import (
    InspectedLine,
    ReturnAuthorised,
    ReturnCancelled,
    ReturnInspected,
    ReturnLabel,
    ReturnLine,
    ReturnMethod,
    ReturnOrderCancelReason,
    ReturnOrderCancelRequested,
    ReturnOrderLine,
    ReturnOrderReleased,
    ReturnParkedExpired,
    ReturnReason,
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
    ReturnState,
    ReturnStatusChanged,
)
from orchestrator.contract.status import (
    CustomerNotification,
    CustomerOption,
    ExceptionKind,
    ExceptionRaised,
    LineStatus,
    NotificationKind,
    OrderStatusChanged,
)
from orchestrator.contract.work import (
    CancelRequestReason,
    WorkOrderCancelRequested,
    WorkOrderLine,
    WorkOrderReleased,
)

ORDER_ID = "ORD-100234"
CUSTOMER_ID = "CUST-88121"
NODE_ID = "DC-LEEDS"
WORK_ORDER_ID = "WO-ORD-100234-1"
SHIPMENT_ID = "SHP-ORD-100234-1"
TRACKING = "15501234567890"
CARRIER = "dpd"
SERVICE_ID = "dpd-next-day"

_T0 = datetime(2025, 3, 10, 9, 14, 2, tzinfo=UTC)
#: England and Wales bank holidays of Christmas 2025 and New Year 2026.
_BANK_HOLIDAYS = (date(2025, 12, 25), date(2025, 12, 26), date(2026, 1, 1))


def _customer_address() -> Address:
    return Address(
        name="Priya Shah",
        line1="14 Canal Street",
        city="Manchester",
        postal_code="M1 3HE",
        country="GB",
        latitude=53.4772,
        longitude=-2.2353,
    )


def _dc_address() -> Address:
    return Address(
        name="Leeds DC",
        line1="Unit 4, Logic Leeds, Nepshaw Lane",
        city="Leeds",
        region="West Yorkshire",
        postal_code="LS27 7JQ",
        country="GB",
        latitude=53.7405,
        longitude=-1.5946,
    )


def _lines() -> tuple[OrderLine, ...]:
    return (
        OrderLine(
            line_id="1",
            sku="SKU-KETTLE-BLK",
            quantity=1,
            unit_price=Decimal("49.99"),
            unit_weight_kg=Decimal("1.450"),
            labels=(ProductLabel.FRAGILE,),
        ),
        OrderLine(
            line_id="2",
            sku="SKU-MUG-SET4",
            quantity=2,
            unit_price=Decimal("18.50"),
            unit_weight_kg=Decimal("1.200"),
        ),
    )


def _sku_lines() -> tuple[SkuLine, ...]:
    return (
        SkuLine(line_id="1", sku="SKU-KETTLE-BLK", quantity=1),
        SkuLine(line_id="2", sku="SKU-MUG-SET4", quantity=2),
    )


def _order_created() -> OrderCreated:
    return OrderCreated(
        order_id=ORDER_ID,
        channel=Channel.WEB,
        customer_id=CUSTOMER_ID,
        customer_tier=CustomerTier.GOLD,
        placed_at=_T0,
        ship_to=_customer_address(),
        lines=_lines(),
        order_total=Decimal("91.98"),
        currency="GBP",
        delivery=HomeDelivery(kind="next_day"),
        promised_delivery_date=date(2025, 3, 11),
        ship_complete=False,
        priority=False,
        holds=(HoldReason.PAYMENT_PENDING,),
    )


_BUILDERS: Mapping[str, Callable[[], EventPayload]] = MappingProxyType(
    {
        "order.created.v1": _order_created,
        "order.amended.v1": lambda: OrderAmended(
            order_id=ORDER_ID,
            priority=True,
            line_quantities=(LineQuantityChange(line_id="2", quantity=1),),
        ),
        "order.cancelled.v1": lambda: OrderCancelled(
            order_id=ORDER_ID,
            reason=CancelReason.CUSTOMER_REQUEST,
            detail="Customer found it cheaper elsewhere",
        ),
        "order.hold_released.v1": lambda: OrderHoldReleased(
            order_id=ORDER_ID, hold=HoldReason.PAYMENT_PENDING
        ),
        "inventory.snapshot.v1": lambda: InventorySnapshot(
            node_id=NODE_ID, sku="SKU-KETTLE-BLK", on_hand=42, safety_stock=3, as_of=_T0
        ),
        "inventory.delta.v1": lambda: InventoryDelta(
            node_id=NODE_ID,
            sku="SKU-KETTLE-BLK",
            change=-1,
            reason=DeltaReason.ADJUSTMENT,
            reference="ADJ-20250310-0007",
            as_of=_T0,
        ),
        "inventory.inbound_expected.v1": lambda: InboundSupplyExpected(
            node_id=NODE_ID,
            sku="SKU-MUG-SET4",
            quantity=240,
            expected_date=date(2025, 3, 14),
            supply_kind=SupplyKind.ADVANCE_SHIPPING_NOTICE,
            reference="ASN-553120",
            as_of=_T0,
        ),
        "network.node_upserted.v1": lambda: NodeUpserted(
            node_id=NODE_ID,
            kind=NodeKind.DC,
            name="Leeds DC",
            location=_dc_address(),
            capabilities=(NodeCapability.HAZMAT, NodeCapability.OVERSIZE),
            daily_capacity=12000,
            cutoff_local=time(17, 0),
            timezone="Europe/London",
            open=True,
            non_working_days=_BANK_HOLIDAYS,
        ),
        "network.node_status_changed.v1": lambda: NodeStatusChanged(
            node_id="STORE-MCR-01",
            open=False,
            reason="Power cut in the Arndale centre",
            changed_at=_T0,
        ),
        "network.node_capacity_changed.v1": lambda: NodeCapacityChanged(
            node_id=NODE_ID, daily_capacity=8000, for_date=date(2025, 3, 12), reason="Half the shift off sick"
        ),
        "network.carrier_service_upserted.v1": lambda: CarrierServiceUpserted(
            service_id=SERVICE_ID,
            carrier=CARRIER,
            name="DPD Next Day",
            service_level=ServiceLevel.NEXT_DAY,
            transit_days=1,
            reliability=0.96,
            hazmat_allowed=False,
            oversize_allowed=False,
            countries=("GB",),
            cost=DistanceBandCost(
                kind="distance_bands",
                currency="GBP",
                base=Decimal("4.20"),
                per_kg=Decimal("0.35"),
                bands=(
                    DistanceBand(max_km=100, surcharge=Decimal("0")),
                    DistanceBand(max_km=400, surcharge=Decimal("1.10")),
                    DistanceBand(max_km=1200, surcharge=Decimal("3.80")),
                ),
            ),
            non_working_days=_BANK_HOLIDAYS,
        ),
        "network.carrier_outage.v1": lambda: CarrierOutage(
            outage_id="OUT-2025-031",
            carrier=CARRIER,
            service_id=SERVICE_ID,
            starts_at=_T0,
            ends_at=datetime(2025, 3, 10, 18, 0, tzinfo=UTC),
            reason="Hub sortation failure at Hinckley",
        ),
        "workorder.released.v1": lambda: WorkOrderReleased(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            node_id=NODE_ID,
            lines=(
                WorkOrderLine(line_id="1", sku="SKU-KETTLE-BLK", quantity=1, labels=(ProductLabel.FRAGILE,)),
                WorkOrderLine(line_id="2", sku="SKU-MUG-SET4", quantity=2),
            ),
            ship_to=_customer_address(),
            delivery=HomeDelivery(kind="next_day"),
            carrier=CarrierAssignment(carrier=CARRIER, service_id=SERVICE_ID),
            pick_by=datetime(2025, 3, 10, 15, 0, tzinfo=UTC),
            ship_by=datetime(2025, 3, 10, 17, 0, tzinfo=UTC),
            promised_delivery_date=date(2025, 3, 11),
        ),
        "workorder.cancel_requested.v1": lambda: WorkOrderCancelRequested(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            reason=CancelRequestReason.ORDER_CANCELLED,
        ),
        "wms.acknowledged.v1": lambda: WorkOrderAcknowledged(
            work_order_id=WORK_ORDER_ID, order_id=ORDER_ID, node_id=NODE_ID, occurred_at=_T0
        ),
        "wms.picked.v1": lambda: WorkOrderPicked(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            lines=_sku_lines(),
        ),
        "wms.short_picked.v1": lambda: WorkOrderShortPicked(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            lines=(ShortLine(line_id="2", sku="SKU-MUG-SET4", quantity_picked=1, quantity_short=1),),
        ),
        "wms.packed.v1": lambda: WorkOrderPacked(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            packages=(Package(package_id="PKG-1", weight_kg=Decimal("4.100")),),
        ),
        "wms.shipped.v1": lambda: WorkOrderShipped(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            shipment_id=SHIPMENT_ID,
            carrier=CARRIER,
            service_id=SERVICE_ID,
            tracking_number=TRACKING,
            packages=(Package(package_id="PKG-1", tracking_number=TRACKING, weight_kg=Decimal("4.100")),),
            lines=_sku_lines(),
        ),
        "wms.rejected.v1": lambda: WorkOrderRejected(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            reason=NodeRejectReason.NO_CAPACITY,
            detail="Wave plan for today is full",
        ),
        "wms.cancelled.v1": lambda: WorkOrderCancelledByNode(
            work_order_id=WORK_ORDER_ID,
            order_id=ORDER_ID,
            node_id=NODE_ID,
            occurred_at=_T0,
            reason=NodeCancelReason.REQUESTED,
        ),
        "carrier.picked_up.v1": lambda: ShipmentPickedUp(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
        ),
        "carrier.in_transit.v1": lambda: ShipmentInTransit(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
            location="Hinckley hub",
        ),
        "carrier.delayed.v1": lambda: ShipmentDelayed(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
            new_estimated_delivery=date(2025, 3, 12),
            reason="Missed trunk departure",
        ),
        "carrier.exception.v1": lambda: ShipmentException(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
            code="ADDR-INCOMPLETE",
            description="Flat number missing; driver could not deliver",
        ),
        "carrier.delivered.v1": lambda: ShipmentDelivered(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
            received_by="P. Shah",
        ),
        "carrier.lost.v1": lambda: ShipmentLost(
            tracking_number=TRACKING,
            carrier=CARRIER,
            order_id=ORDER_ID,
            shipment_id=SHIPMENT_ID,
            occurred_at=_T0,
            last_seen_at=datetime(2025, 3, 3, 22, 41, tzinfo=UTC),
        ),
        "order.status_changed.v1": lambda: OrderStatusChanged(
            order_id=ORDER_ID,
            state=OrderState.PARTIALLY_SHIPPED,
            previous_state=OrderState.RELEASED,
            reasons=(
                Reason(code="short_pick", message="1 of 2 units of SKU-MUG-SET4 not found at DC-LEEDS"),
            ),
            sequence=6,
            lines=(
                LineStatus(
                    line_id="1",
                    sku="SKU-KETTLE-BLK",
                    quantity=1,
                    state=OrderState.SHIPPED,
                    node_id=NODE_ID,
                    shipment_id=SHIPMENT_ID,
                    tracking_number=TRACKING,
                ),
                LineStatus(line_id="2", sku="SKU-MUG-SET4", quantity=1, state=OrderState.BACK_ORDERED),
            ),
            occurred_at=_T0,
        ),
        "exception.raised.v1": lambda: ExceptionRaised(
            exception_id="EXC-ORD-100234-1",
            order_id=ORDER_ID,
            kind=ExceptionKind.SHORT_PICK,
            node_id=NODE_ID,
            work_order_id=WORK_ORDER_ID,
            shipment_id=SHIPMENT_ID,
            line_ids=("2",),
            detail="1 of 2 units of SKU-MUG-SET4 not found at pick",
            raised_at=_T0,
        ),
        "customer.notification.v1": lambda: CustomerNotification(
            order_id=ORDER_ID,
            customer_id=CUSTOMER_ID,
            kind=NotificationKind.OPTIONS_OFFERED,
            message="One of your mugs is out of stock. Choose how you'd like to continue.",
            options=(
                CustomerOption(
                    option_id="split",
                    description="Send the mug separately when it arrives",
                    promised_date=date(2025, 3, 15),
                ),
                CustomerOption(option_id="refund", description="Refund the missing mug now"),
            ),
        ),
    }
)


def _planned_shipment() -> PlannedShipment:
    return PlannedShipment(
        shipment_id=f"{ORDER_ID}-p1-{NODE_ID}",
        node_id=NODE_ID,
        lines=_sku_lines(),
        carrier=CarrierAssignment(carrier="dhl", service_id="dhl-parcel-uk"),
        service_level=ServiceLevel.STANDARD,
        ship_by=datetime(2025, 3, 10, 17, 0, tzinfo=UTC),
        promised_delivery_date=date(2025, 3, 12),
        distance_km=152.4,
        shipping_cost=Decimal("6.40"),
        cost=6.4,
        capacity=DayCapacity(day=date(2025, 3, 10), shipments=400),
    )


def _plan_decided() -> PlanDecided:
    return PlanDecided(
        order_id=ORDER_ID,
        plan_id=f"{ORDER_ID}-p1",
        plan_version=1,
        sequence=1,
        order=_order_created(),
        outcome=PlanOutcome.SHIP,
        shipments=(_planned_shipment(),),
        total_cost=6.4,
        policy_version="default-1",
        candidates=(
            CandidateVerdict(node_id=NODE_ID, eligible=True, lines=("1", "2"), best_cost=6.4),
            CandidateVerdict(
                node_id="STORE-LEEDS-01",
                eligible=False,
                reasons=(Reason(code="no_stock", message="no stock of SKU-MUG-WHT"),),
            ),
        ),
        explanation=("All lines ship from DC-MANCHESTER-01 by dhl-parcel-uk, arriving 2025-03-12.",),
        decided_at=_T0,
    )


_PIPELINE_BUILDERS: Mapping[str, Callable[[], EventPayload]] = MappingProxyType(
    {
        "order.ingested.v1": lambda: OrderIngested(
            order_id=ORDER_ID, sequence=1, change=OrderChange.CREATED, order=_order_created()
        ),
        "order.validated.v1": lambda: OrderValidated(
            order_id=ORDER_ID, sequence=1, action="plan", order=_order_created()
        ),
        "order.redecide_requested.v1": lambda: RedecideRequested(
            order_id=ORDER_ID,
            sequence=1,
            attempt=1,
            order=_order_created(),
            excluded_nodes=(NODE_ID,),
            reason=Reason(code="reservation_failed", message="stock at DC-MANCHESTER-01 was taken"),
        ),
        "plan.decided.v1": _plan_decided,
        "plan.cancelled.v1": lambda: PlanCancelled(order_id=ORDER_ID, sequence=2, reason="customer request"),
        "reservation.confirmed.v1": lambda: ReservationConfirmed(
            order_id=ORDER_ID,
            plan_id=f"{ORDER_ID}-p1",
            plan_version=1,
            sequence=1,
            order=_order_created(),
            shipments=(ReservedShipment(shipment=_planned_shipment(), reservation_ids=("r-1", "r-2")),),
        ),
        "reservation.released.v1": lambda: ReservationsReleased(
            order_id=ORDER_ID, plan_id=f"{ORDER_ID}-p1", reason="order cancelled", cancel_order=True
        ),
        "reservation.consumed.v1": lambda: ReservationsConsumed(
            order_id=ORDER_ID,
            shipment_id=f"{ORDER_ID}-p1-{NODE_ID}",
            work_order_id=WORK_ORDER_ID,
            node_id=NODE_ID,
            shipped_at=datetime(2025, 3, 10, 16, 5, tzinfo=UTC),
            # One mug of the two was picked short: it ships from elsewhere, and its hold here ends.
            lines=(
                SkuLine(line_id="1", sku="SKU-KETTLE-BLK", quantity=1),
                SkuLine(line_id="2", sku="SKU-MUG-SET4", quantity=1),
            ),
            released=(SkuLine(line_id="2", sku="SKU-MUG-SET4", quantity=1),),
        ),
        "exception.repair_outcome.v1": lambda: RepairOutcome(
            order_id=ORDER_ID,
            exception_id=f"{ORDER_ID}-short_pick-1",
            action="reroute",
            succeeded=True,
            detail="the missing mug ships from DC-LEEDS-02",
            work_order_ids=("WO-ORD-100234-p2-s1-DC-LEEDS-02",),
            promised_delivery_date=date(2025, 3, 13),
            extra_cost=5.2,
        ),
        "monitor.timer_due.v1": lambda: TimerDue(
            order_id=ORDER_ID,
            work_order_id="WO-ORD-100234-p1-s1-DC-MANCHESTER-01",
            timer="acknowledge",
            due_at=_T0,
        ),
        "monitor.parked_expired.v1": lambda: ParkedEventExpired(
            order_id=ORDER_ID,
            parked_event_id="7d0c5a52-6f0e-4a43-9d8e-0b7f4f7c2e11",
            parked_at=_T0,
            due_at=_T0 + timedelta(hours=1),
        ),
        "supply.release_due.v1": lambda: SupplyReleaseDue(sku="SKU-MUG-01", day=date(2025, 3, 14)),
        "supply.queue_owed.v1": lambda: QueueOwed(sku="SKU-MUG-01", units=3, as_of=_T0),
        "order.stage_status.v1": lambda: StageStatus(
            order_id=ORDER_ID, state=OrderState.RELEASED, stage="release", sequence=1, occurred_at=_T0
        ),
    }
)


# The return: the kettle arrived with a cracked lid; the customer wants the same kettle again.
RETURN_ID = "RMA-5521"
RETURN_ORDER_ID = f"RO-{RETURN_ID}"


def _return_builders() -> Mapping[str, Callable[[], EventPayload]]:
    kettle = (ReturnLine(line_id="1", sku="SKU-KETTLE-BLK", quantity=1),)
    received = (SkuLine(line_id="1", sku="SKU-KETTLE-BLK", quantity=1),)
    return MappingProxyType(
        {
            "return.authorised.v1": lambda: ReturnAuthorised(
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                lines=kettle,
                reason=ReturnReason.DAMAGED,
                reason_detail="The lid arrived cracked",
                resolution=ReturnResolution.EXCHANGE,
                authorised_at=_T0,
            ),
            "return.resolution_changed.v1": lambda: ReturnResolutionChanged(
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                resolution=ReturnResolution.STORE_CREDIT,
                detail="The customer would rather have store credit",
                changed_at=_T0,
            ),
            "return.cancelled.v1": lambda: ReturnCancelled(
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                reason="The customer kept the kettle",
                cancelled_at=_T0,
            ),
            "returnorder.released.v1": lambda: ReturnOrderReleased(
                return_order_id=RETURN_ORDER_ID,
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                node_id=NODE_ID,
                method=ReturnMethod.SHIP_BACK,
                lines=(
                    ReturnOrderLine(
                        line_id="1", sku="SKU-KETTLE-BLK", quantity=1, labels=(ProductLabel.FRAGILE,)
                    ),
                ),
                reason=ReturnReason.DAMAGED,
                label=ReturnLabel(
                    carrier=CarrierAssignment(carrier=CARRIER, service_id="dpd-ground"),
                    from_address=_customer_address(),
                    to_address=_dc_address(),
                ),
            ),
            "returnorder.cancel_requested.v1": lambda: ReturnOrderCancelRequested(
                return_order_id=RETURN_ORDER_ID,
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                node_id=NODE_ID,
                reason=ReturnOrderCancelReason.RETURN_CANCELLED,
                detail="The customer kept the kettle",
            ),
            "return.received.v1": lambda: ReturnReceived(
                return_order_id=RETURN_ORDER_ID,
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                node_id=NODE_ID,
                occurred_at=_T0,
                lines=received,
            ),
            "return.inspected.v1": lambda: ReturnInspected(
                return_order_id=RETURN_ORDER_ID,
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                node_id=NODE_ID,
                occurred_at=_T0,
                lines=(
                    InspectedLine(
                        line_id="1",
                        sku="SKU-KETTLE-BLK",
                        restockable=0,
                        not_restockable=1,
                        note="Lid cracked; not fit to sell",
                    ),
                ),
            ),
            "return.status_changed.v1": lambda: ReturnStatusChanged(
                return_id=RETURN_ID,
                order_id=ORDER_ID,
                state=ReturnState.CREDITED,
                previous_state=ReturnState.RECEIVED,
                sequence=4,
                resolution=ReturnResolution.STORE_CREDIT,
                reasons=(
                    Reason(code="credited", message="store credit of 49.99 GBP: received SKU-KETTLE-BLK x1"),
                ),
                node_id=NODE_ID,
                return_order_id=RETURN_ORDER_ID,
                amount=Decimal("49.99"),
                currency="GBP",
                occurred_at=_T0,
            ),
            "returns.parked_expired.v1": lambda: ReturnParkedExpired(
                order_id=ORDER_ID,
                return_id=RETURN_ID,
                parked_event_id="3e9b1f0c-27d4-4c1e-8a55-6f2d9e0a4b17",
                parked_at=_T0,
                due_at=_T0 + timedelta(hours=1),
            ),
        }
    )


_RETURN_BUILDERS = _return_builders()


def example(event_type: str) -> EventPayload:
    """A realistic, valid instance of `event_type` (a new object on every call)."""
    for builders in (_BUILDERS, _PIPELINE_BUILDERS, _RETURN_BUILDERS):
        if event_type in builders:
            return builders[event_type]()
    raise UnknownEventType(f"no example for event type {event_type!r}")


def missing_examples() -> list[str]:
    """Registered event types without an example (a test keeps this empty)."""
    return sorted(set(EVENT_TYPES) - set(_BUILDERS) - set(_PIPELINE_BUILDERS) - set(_RETURN_BUILDERS))
