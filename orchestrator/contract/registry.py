"""Every event type the orchestrator knows, and the lookup from `ce_type` to model.

Adding an event type: write the model in its domain module and list it in
`ALL_EVENT_TYPES`; then run `orchestrator schemas export` and name the type
in `topics.yaml` on the topic that carries it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from orchestrator.contract.base import EventPayload, UnknownEventType
from orchestrator.contract.execution import (
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentException,
    ShipmentInTransit,
    ShipmentLost,
    ShipmentPickedUp,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.inventory import InboundSupplyExpected, InventoryDelta, InventorySnapshot
from orchestrator.contract.network import (
    CarrierOutage,
    CarrierServiceUpserted,
    NodeCapacityChanged,
    NodeStatusChanged,
    NodeUpserted,
)
from orchestrator.contract.orders import OrderAmended, OrderCancelled, OrderCreated, OrderHoldReleased
from orchestrator.contract.pipeline import (
    OrderIngested,
    OrderValidated,
    ParkedEventExpired,
    PlanCancelled,
    PlanDecided,
    QueueOwed,
    RedecideRequested,
    RepairOutcome,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
    StageStatus,
    SupplyReleaseDue,
    TimerDue,
)
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
from orchestrator.contract.status import CustomerNotification, ExceptionRaised, OrderStatusChanged
from orchestrator.contract.work import WorkOrderCancelRequested, WorkOrderReleased

#: `domain.event_name.vN`: lower case, dot-separated, ending in the major version.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\.v[1-9][0-9]*$")

ALL_EVENT_TYPES: tuple[type[EventPayload], ...] = (
    # oms.orders.v1
    OrderCreated,
    OrderAmended,
    OrderCancelled,
    OrderHoldReleased,
    # inventory.updates.v1
    InventorySnapshot,
    InventoryDelta,
    InboundSupplyExpected,
    # network.updates.v1
    NodeUpserted,
    NodeStatusChanged,
    NodeCapacityChanged,
    CarrierServiceUpserted,
    CarrierOutage,
    # wms.work-orders.v1
    WorkOrderReleased,
    WorkOrderCancelRequested,
    # wms.events.v1
    WorkOrderAcknowledged,
    WorkOrderPicked,
    WorkOrderShortPicked,
    WorkOrderPacked,
    WorkOrderShipped,
    WorkOrderRejected,
    WorkOrderCancelledByNode,
    # carrier.events.v1
    ShipmentPickedUp,
    ShipmentInTransit,
    ShipmentDelayed,
    ShipmentException,
    ShipmentDelivered,
    ShipmentLost,
    # oms.status.v1, orchestrator.exceptions.v1, customer.notifications.v1
    OrderStatusChanged,
    ExceptionRaised,
    CustomerNotification,
    # internal: the order path (orchestrator.* topics)
    OrderIngested,
    OrderValidated,
    RedecideRequested,
    PlanDecided,
    PlanCancelled,
    ReservationConfirmed,
    ReservationsReleased,
    ReservationsConsumed,
    StageStatus,
    # internal: execution (orchestrator.exceptions.v1, orchestrator.timers.v1)
    RepairOutcome,
    TimerDue,
    ParkedEventExpired,
    # internal: supply (orchestrator.supply.v1, orchestrator.queues.v1)
    SupplyReleaseDue,
    QueueOwed,
    # oms.returns.v1, wms.work-orders.v1, wms.return-events.v1, oms.status.v1: returns and exchanges
    ReturnAuthorised,
    ReturnResolutionChanged,
    ReturnCancelled,
    ReturnOrderReleased,
    ReturnOrderCancelRequested,
    ReturnReceived,
    ReturnInspected,
    ReturnStatusChanged,
    # internal: returns' ticker (orchestrator.returns.timers.v1)
    ReturnParkedExpired,
)


def build_index(models: Iterable[type[EventPayload]]) -> Mapping[str, type[EventPayload]]:
    """A read-only map from event type to model; refuses bad or repeated type names.

    Public so that a test (or a plugin) can check its own list the same way.
    """
    index: dict[str, type[EventPayload]] = {}
    for model in models:
        name = getattr(model, "event_type", None)
        if not isinstance(name, str) or not EVENT_TYPE_PATTERN.fullmatch(name):
            raise ValueError(
                f"{model.__qualname__}.event_type {name!r} is not a valid event type "
                "(lower case, dotted, ending in .vN, e.g. order.created.v1)"
            )
        if name in index:
            raise ValueError(
                f"event type {name!r} is declared by both {index[name].__qualname__} and {model.__qualname__}"
            )
        if model.subject_field not in model.model_fields and not isinstance(
            getattr(model, model.subject_field, None), property
        ):
            raise ValueError(f"{model.__qualname__}.subject_field {model.subject_field!r} is not a field")
        index[name] = model
    return MappingProxyType(index)


EVENT_TYPES: Mapping[str, type[EventPayload]] = build_index(ALL_EVENT_TYPES)


def model_for(event_type: str) -> type[EventPayload]:
    """The payload model of `event_type`, or `UnknownEventType`."""
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}") from None
