"""release: hands reserved shipments to the nodes as work orders. Reads reservations.

Decides: the work order for each reserved shipment (lines with their handling
labels, ship-to, carrier and service, pick-by and ship-by), with an id derived
from the shipment so a retry can never send a second one; and the cancel
requests for work that a cancellation or a re-plan made obsolete.

Owns `release_work_orders`, `release_given_back`. Reads the network view (store addresses for BOPIS
and ship-to-store), and decide-node's `decide_plans` (never writes them) to tell
an order that waited for stock from one released at once.

Measures the end-to-end latency: the order placed (the OMS's `placed_at`) to its
first work order released, observed when the release commits (`should_time`
says which orders it is fair to time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from orchestrator.contract.common import Address, CarrierAssignment, OrderState
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import (
    RepairOutcome,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
    ReservedShipment,
)
from orchestrator.contract.work import (
    CancelRequestReason,
    WorkOrderCancelRequested,
    WorkOrderLine,
    WorkOrderReleased,
)
from orchestrator.domain.network import NetworkView
from orchestrator.domain.supply import RELEASE_WAITING
from orchestrator.runtime.measures import StageMeasures
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import (
    EXCEPTIONS,
    RELEASED,
    RESERVATIONS,
    STATUS,
    WORK_ORDERS,
    OrderPathDeps,
    emit_status,
)

#: Picking must finish this long before the carrier collects.
PICK_LEAD = timedelta(hours=2)
#: The carrier assignment of a pickup at the store itself: nothing to hand to a carrier.
IN_STORE_PICKUP = "in-store-pickup"


def work_order_id(shipment_id: str) -> str:
    return f"WO-{shipment_id}"


def destination(order: OrderCreated, network: NetworkView) -> Address:
    """Where the shipment goes: the customer, or the store for BOPIS and ship-to-store."""
    delivery = order.delivery
    store_id = (
        delivery.pickup_store_id
        if delivery.kind == "bopis"
        else delivery.store_id
        if delivery.kind == "ship_to_store"
        else None
    )
    if store_id is not None:
        node = network.nodes.get(store_id)
        if node is not None:
            return node.location
    if order.ship_to is None:
        raise RejectEvent(f"order {order.order_id} has no address to ship to")
    return order.ship_to


def work_order(order: OrderCreated, reserved: ReservedShipment, network: NetworkView) -> WorkOrderReleased:
    shipment = reserved.shipment
    labels = {line.line_id: line.labels for line in order.lines}
    carrier: CarrierAssignment | None = (
        None if shipment.carrier.service_id == IN_STORE_PICKUP else shipment.carrier
    )
    return WorkOrderReleased(
        work_order_id=work_order_id(shipment.shipment_id),
        order_id=order.order_id,
        shipment_id=shipment.shipment_id,
        node_id=shipment.node_id,
        lines=tuple(
            WorkOrderLine(
                line_id=line.line_id,
                sku=line.sku,
                quantity=line.quantity,
                labels=labels.get(line.line_id, ()),
            )
            for line in shipment.lines
        ),
        ship_to=destination(order, network),
        delivery=order.delivery,
        carrier=carrier,
        pick_by=shipment.ship_by - PICK_LEAD,
        ship_by=shipment.ship_by,
        promised_delivery_date=shipment.promised_delivery_date,
        priority=order.priority,
    )


async def should_time(ctx: HandlerContext, msg: ReservationConfirmed, first_release: bool) -> bool:
    """Whether this release ends a wait the orchestrator answers for, from the order placed.

    Only the order's first work orders, of a plan of the whole order as created (sequence 1): a
    later sequence means the OMS held it (payment, fraud; or policy's hold, which the OMS releases)
    or amended it before release, and a repair comes after the first release. A plan that is not
    the order's first may follow a lost race (counted: that is the orchestrator's time) or stock
    that came for a back-order or a held ship-complete order (not counted: that wait is for
    supply), which only decide-node's record of earlier plans tells apart.
    """
    if not first_release or msg.repair is not None or msg.sequence != 1:
        return False
    if msg.plan_version == 1:
        return True
    waited = await ctx.db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM decide_plans WHERE order_id = $1 AND plan_version < $2"
        " AND outcome IN ('backorder', 'hold_for_stock'))",
        msg.order_id,
        msg.plan_version,
    )
    return not waited


def observe_latency(m: RuntimeMetrics, placed_at: datetime) -> None:
    """Placed to now (the commit); never negative, should the OMS's clock run ahead of ours."""
    m.release_latency.observe(max(0.0, (datetime.now(UTC) - placed_at).total_seconds()))


def release_stage(deps: OrderPathDeps) -> Stage:
    measures = StageMeasures("release-measures")

    async def cancel_released(
        ctx: HandlerContext,
        order_id: str,
        plan_id: str | None,
        reason: CancelRequestReason,
        detail: str,
        shipment_ids: Sequence[str] | None = None,
    ) -> int:
        """Ask the nodes to cancel the order's released work: all of it, a plan's, or these shipments'."""
        rows = await ctx.db.fetch(
            "UPDATE release_work_orders SET status = 'cancel_requested'"
            " WHERE order_id = $1 AND status = 'released' AND ($2::text IS NULL OR plan_id = $2)"
            " AND ($3::text[] IS NULL OR shipment_id = ANY($3::text[]))"
            " RETURNING work_order_id, node_id",
            order_id,
            plan_id,
            None if shipment_ids is None else list(shipment_ids),
        )
        for r in sorted(rows, key=lambda r: r["work_order_id"]):
            request = WorkOrderCancelRequested(
                work_order_id=r["work_order_id"],
                order_id=order_id,
                node_id=r["node_id"],
                reason=reason,
                detail=detail,
            )
            ctx.emit(WORK_ORDERS, request)
            ctx.emit(RELEASED, request)
        return len(rows)

    async def cancel_one(ctx: HandlerContext, order_id: str, work_order_id: str, detail: str) -> None:
        row = await ctx.db.fetchrow(
            "UPDATE release_work_orders SET status = 'cancel_requested'"
            " WHERE work_order_id = $1 AND status = 'released' RETURNING node_id",
            work_order_id,
        )
        if row is None:
            return
        request = WorkOrderCancelRequested(
            work_order_id=work_order_id,
            order_id=order_id,
            node_id=row["node_id"],
            reason=CancelRequestReason.REROUTED,
            detail=detail,
        )
        ctx.emit(WORK_ORDERS, request)
        ctx.emit(RELEASED, request)

    async def on_confirmed(ctx: HandlerContext, msg: ReservationConfirmed) -> None:
        # Work of an earlier plan of this order that is still out there is obsolete now.
        earlier = await ctx.db.fetch(
            "SELECT 1 FROM release_work_orders WHERE order_id = $1 FOR UPDATE", msg.order_id
        )
        if await should_time(ctx, msg, first_release=not earlier):
            placed_at = msg.order.placed_at
            measures.count(ctx, lambda m: observe_latency(m, placed_at))
        repair = msg.repair
        if repair is None:
            await cancel_released(
                ctx, msg.order_id, None, CancelRequestReason.REROUTED, f"replaced by {msg.plan_id}"
            )
        elif repair.cancel_replaced and repair.replaces_work_order_id is not None:
            # A repair replaces one failing work order; the order's other work goes on.
            await cancel_one(ctx, msg.order_id, repair.replaces_work_order_id, f"replaced by {msg.plan_id}")
        released: list[WorkOrderReleased] = []
        given_back = {
            r["shipment_id"]
            for r in await ctx.db.fetch(
                "SELECT shipment_id FROM release_given_back WHERE shipment_id = ANY($1::text[])",
                [s.shipment.shipment_id for s in msg.shipments],
            )
        }
        for reserved in msg.shipments:
            if reserved.shipment.shipment_id in given_back:
                ctx.log.info("not released: reserve gave it back", shipment_id=reserved.shipment.shipment_id)
                continue
            wo = work_order(msg.order, reserved, deps.network.state)
            await ctx.db.execute(
                "INSERT INTO release_work_orders"
                " (work_order_id, order_id, plan_id, shipment_id, node_id, status,"
                " payload) VALUES ($1, $2, $3, $4, $5, 'released', $6)",
                wo.work_order_id,
                wo.order_id,
                msg.plan_id,
                wo.shipment_id,
                wo.node_id,
                wo.model_dump_json(),
            )
            ctx.emit(WORK_ORDERS, wo)
            ctx.emit(RELEASED, wo)
            released.append(wo)
        # Waiting lines whose supply came are not a playbook's repair: nobody waits for an outcome,
        # and the order, back-ordered until now, is released again.
        if repair is not None and repair.action != RELEASE_WAITING:
            ctx.emit(
                EXCEPTIONS,
                RepairOutcome(
                    order_id=msg.order_id,
                    exception_id=repair.exception_id,
                    action=repair.action,
                    succeeded=True,
                    detail=", ".join(f"{wo.work_order_id} released to {wo.node_id}" for wo in released)
                    or "not needed any more: the work it replaced shipped after all",
                    work_order_ids=tuple(wo.work_order_id for wo in released),
                    promised_delivery_date=max(s.shipment.promised_delivery_date for s in msg.shipments),
                    extra_cost=round(sum(s.shipment.cost for s in msg.shipments), 2),
                ),
            )
            return
        emit_status(
            ctx,
            msg.order_id,
            OrderState.RELEASED,
            msg.sequence,
            detail=f"{len(msg.shipments)} work order(s) released",
        )

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        msg = event.data
        if isinstance(msg, ReservationConfirmed):
            await on_confirmed(ctx, msg)
        elif isinstance(msg, ReservationsReleased):
            if msg.shipment_ids:
                # Remembered: an undone repair's confirmation comes from another of reserve's
                # partitions, and may come after this.
                await ctx.db.execute(
                    "INSERT INTO release_given_back (shipment_id, order_id, reason, given_back_at)"
                    " SELECT s, $2, $3, $4 FROM unnest($1::text[]) AS s ON CONFLICT DO NOTHING",
                    list(msg.shipment_ids),
                    msg.order_id,
                    msg.reason,
                    ctx.now,
                )
                await cancel_released(
                    ctx, msg.order_id, None, CancelRequestReason.REROUTED, msg.reason, msg.shipment_ids
                )
            elif msg.cancel_order:
                await cancel_released(
                    ctx, msg.order_id, None, CancelRequestReason.ORDER_CANCELLED, msg.reason
                )
            elif msg.plan_id is not None:
                await cancel_released(
                    ctx, msg.order_id, msg.plan_id, CancelRequestReason.ORDER_AMENDED, msg.reason
                )
        elif isinstance(msg, ReservationsConsumed):
            return  # the node shipped: its work order is done, there is nothing to release
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"release does not handle {event.type}")

    return Stage(
        name="release",
        inputs=(RESERVATIONS,),
        outputs=(WORK_ORDERS, RELEASED, STATUS, EXCEPTIONS),
        handler=handle,
        uses_database=True,
        accepts=frozenset(
            m.event_type for m in (ReservationConfirmed, ReservationsReleased, ReservationsConsumed)
        ),
        views=(deps.network, measures),
        description="sends one work order per reserved shipment to its node",
    )
