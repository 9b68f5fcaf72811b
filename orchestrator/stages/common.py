"""What the order stages share: topic names, the network view, status events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from orchestrator.contract.common import OrderState, Reason
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import StageStatus
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.runtime.stage import HandlerContext
from orchestrator.runtime.views import TopicView

OMS_ORDERS = "oms.orders.v1"
INVENTORY_UPDATES = "inventory.updates.v1"
NETWORK_UPDATES = "network.updates.v1"
WORK_ORDERS = "wms.work-orders.v1"
WMS_EVENTS = "wms.events.v1"
OMS_STATUS = "oms.status.v1"
INGESTED = "orchestrator.orders.ingested.v1"
VALIDATED = "orchestrator.orders.validated.v1"
PLANS = "orchestrator.plans.v1"
RESERVATIONS = "orchestrator.reservations.v1"
RELEASED = "orchestrator.released.v1"
REROUTES = "orchestrator.reroutes.v1"
STATUS = "orchestrator.status.v1"
EXCEPTIONS = "orchestrator.exceptions.v1"
SUPPLY = "orchestrator.supply.v1"
QUEUES = "orchestrator.queues.v1"


#: How long a verdict that the network view's moment of delay could make wrong (a rejection, lines
#: left unplanned) waits for the view to catch up with its topic (`FollowedTopics.catch_up`).
NETWORK_CATCH_UP_S = 5.0

V = TypeVar("V")


async def on_the_latest_network(
    network: TopicView[NetworkView],
    since: datetime,
    judge: Callable[[NetworkView], Awaitable[V]],
    doubtful: Callable[[V], bool],
) -> V:
    """`judge` on the network view; judged again if the verdict is `doubtful` and catching the view
    up with its topic brought anything (a node or service set up just before the event: a rejection
    or a back-order for want of it would be final, or wait for stock already there)."""
    verdict = await judge(network.state)
    if doubtful(verdict) and await network.catch_up(since, NETWORK_CATCH_UP_S):
        verdict = await judge(network.state)
    return verdict


def network_view() -> TopicView[NetworkView]:
    """The network (nodes, carrier services, outages) folded from `network.updates.v1`."""
    return TopicView("network", NETWORK_UPDATES, NetworkView.empty(), lambda view, event: view.apply(event))


@dataclass(frozen=True)
class OrderPathDeps:
    """What the order stages of one process share: one network view, one policy."""

    network: TopicView[NetworkView]
    policy: Policy


def emit_status(
    ctx: HandlerContext,
    order_id: str,
    state: OrderState,
    sequence: int,
    *,
    reasons: tuple[Reason, ...] = (),
    detail: str | None = None,
) -> None:
    ctx.emit(
        STATUS,
        StageStatus(
            order_id=order_id,
            state=state,
            stage=ctx.stage,
            sequence=sequence,
            reasons=reasons,
            detail=detail,
            occurred_at=ctx.now,
        ),
    )


def order_json(order: OrderCreated) -> str:
    return order.model_dump_json()


def order_from_json(raw: str) -> OrderCreated:
    return OrderCreated.model_validate_json(raw)
