"""ingest: the door from the OMS. Reads `oms.orders.v1`.

Decides: whether an OMS event is new (a redelivery with the same `ce_id` has
one effect: the runtime's idempotency record), whether it fits the order's
story (an amendment for an unknown or cancelled order is dead-lettered with
the reason), whether it is small enough to travel (an order of more than
`MAX_ORDER_LINES` lines is rejected), and the order's sequence. Normalises
every change into the whole current order, so later stages never merge
partial updates.

A cancellation that comes before its order (the OMS published them out of
order) is dead-lettered too, so someone sees it, but it is also kept: when
the order's create arrives, the order is cancelled there and then (received,
then cancelled, on `oms.status.v1`) and goes no further. Fulfilling an order
the customer had already cancelled would be the worse mistake.

Owns `ingest_orders` (each order's current shape and sequence, and the lines amendments removed) and
`ingest_early_cancels` (cancellations waiting for their order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from orchestrator.contract.common import OrderState, Reason
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderAmended, OrderCancelled, OrderCreated, OrderHoldReleased
from orchestrator.contract.pipeline import OrderChange, OrderIngested
from orchestrator.domain.validation import normalise_postal_code
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import INGESTED, OMS_ORDERS, STATUS, emit_status, order_from_json, order_json

#: The most lines an order may have. Every event downstream (the ingested order, the plan with its
#: candidates and explanation, the work orders) carries all of its lines, and each must fit in one
#: Kafka record (~1 MiB by default): a larger order cannot travel, so it is rejected at the door.
MAX_ORDER_LINES = 1000


def normalise(order: OrderCreated) -> OrderCreated:
    """One shape whatever the channel: postal codes in their canonical spelling."""
    if order.ship_to is None:
        return order
    address = order.ship_to.model_copy(
        update={"postal_code": normalise_postal_code(order.ship_to.postal_code)}
    )
    return order.model_copy(update={"ship_to": address})


def apply_amendment(order: OrderCreated, amendment: OrderAmended) -> tuple[OrderCreated, tuple[str, ...]]:
    """The order after `amendment`, and the names of what changed; RejectEvent if it cannot apply."""
    data: dict[str, Any] = order.model_dump(mode="json")
    changed: list[str] = []
    if amendment.ship_to is not None:
        data["ship_to"] = amendment.ship_to.model_dump(mode="json")
        changed.append("ship_to")
    if amendment.priority is not None:
        data["priority"] = amendment.priority
        changed.append("priority")
    if amendment.line_quantities is not None:
        lines = {line["line_id"]: line for line in data["lines"]}
        for change in amendment.line_quantities:
            if change.line_id not in lines:
                raise RejectEvent(
                    f"amendment names line {change.line_id}, which order {order.order_id} lacks",
                    "bad_amendment",
                )
            lines[change.line_id]["quantity"] = change.quantity
        data["lines"] = [line for line in data["lines"] if line["quantity"] != 0]
        if not data["lines"]:
            raise RejectEvent(
                f"amendment removes every line of order {order.order_id}; cancel it instead", "bad_amendment"
            )
        changed.append("line_quantities")
    if amendment.order_total is not None:
        data["order_total"] = str(amendment.order_total)
        changed.append("order_total")
    return normalise(OrderCreated.model_validate(data)), tuple(changed)


async def cancelled_on_arrival(
    ctx: HandlerContext, order: OrderCreated, reason: str, since: datetime
) -> None:
    """The order whose cancellation came first: kept as cancelled, and the OMS told so; nothing more."""
    await ctx.db.execute(
        "INSERT INTO ingest_orders (order_id, sequence, cancelled, order_json) VALUES ($1, 2, true, $2)",
        order.order_id,
        order_json(order),
    )
    emit_status(ctx, order.order_id, OrderState.RECEIVED, 1)
    message = f"the OMS cancelled it ({reason}) at {since:%Y-%m-%d %H:%M:%S} UTC, before the order arrived"
    emit_status(
        ctx,
        order.order_id,
        OrderState.CANCELLED,
        2,
        reasons=(Reason(code="cancelled_before_created", message=message),),
        detail=message,
    )


def ingest_stage() -> Stage:
    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        data = event.data
        row = await ctx.db.fetchrow(
            "SELECT sequence, cancelled, order_json FROM ingest_orders WHERE order_id = $1 FOR UPDATE",
            event.subject,
        )
        if isinstance(data, OrderCreated):
            if row is not None:
                raise RejectEvent(
                    f"order {data.order_id} already exists (created by an earlier event)", "duplicate_order"
                )
            if len(data.lines) > MAX_ORDER_LINES:
                # Not stored: the OMS hears why, and the order goes no further.
                reason = Reason(
                    code="too_many_lines",
                    message=f"the order has {len(data.lines)} lines; at most {MAX_ORDER_LINES} are accepted",
                )
                emit_status(
                    ctx, data.order_id, OrderState.REJECTED, 1, reasons=(reason,), detail=reason.message
                )
                return
            order = normalise(data)
            early = await ctx.db.fetchrow(
                "DELETE FROM ingest_early_cancels WHERE order_id = $1 RETURNING reason, received_at",
                order.order_id,
            )
            if early is not None:
                await cancelled_on_arrival(ctx, order, early["reason"], early["received_at"])
                return
            await ctx.db.execute(
                "INSERT INTO ingest_orders (order_id, sequence, order_json) VALUES ($1, 1, $2)",
                order.order_id,
                order_json(order),
            )
            ctx.emit(
                INGESTED,
                OrderIngested(order_id=order.order_id, sequence=1, change=OrderChange.CREATED, order=order),
            )
            emit_status(ctx, order.order_id, OrderState.RECEIVED, 1)
            return
        if row is None and isinstance(data, OrderCancelled) and ctx.record is not None:
            await ctx.db.execute(
                "INSERT INTO ingest_early_cancels (order_id, reason, event_id, received_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
                data.order_id,
                data.reason,
                event.id,
                ctx.now,
            )
            ctx.dead_letter(
                ctx.record,
                "unknown_order",
                f"{event.type} for unknown order {event.subject}: kept, so the order is cancelled "
                "the moment it is created",
            )
            return
        if row is None:
            raise RejectEvent(f"{event.type} for unknown order {event.subject}", "unknown_order")
        if row["cancelled"]:
            raise RejectEvent(
                f"{event.type} for order {event.subject}, which is cancelled", "order_cancelled"
            )
        order = previous = order_from_json(row["order_json"])
        sequence = row["sequence"] + 1
        ingested: OrderIngested
        if isinstance(data, OrderAmended):
            order, changed = apply_amendment(order, data)
            ingested = OrderIngested(
                order_id=order.order_id,
                sequence=sequence,
                change=OrderChange.AMENDED,
                order=order,
                amended_fields=changed,
            )
        elif isinstance(data, OrderCancelled):
            ingested = OrderIngested(
                order_id=order.order_id,
                sequence=sequence,
                change=OrderChange.CANCELLED,
                order=order,
                cancel_reason=data.reason,
            )
        elif isinstance(data, OrderHoldReleased):
            order = order.model_copy(update={"holds": tuple(h for h in order.holds if h != data.hold)})
            ingested = OrderIngested(
                order_id=order.order_id,
                sequence=sequence,
                change=OrderChange.HOLD_RELEASED,
                order=order,
                released_hold=data.hold,
            )
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"ingest does not handle {event.type}")
        # Kept for returns: the node may have shipped a line before its removal reached it.
        kept = {line.line_id for line in order.lines}
        removed = [line.model_dump(mode="json") for line in previous.lines if line.line_id not in kept]
        await ctx.db.execute(
            "UPDATE ingest_orders SET sequence = $2, cancelled = $3, order_json = $4, updated_at = now(),"
            " removed_lines = removed_lines || $5::jsonb WHERE order_id = $1",
            order.order_id,
            sequence,
            ingested.change is OrderChange.CANCELLED,
            order_json(order),
            orjson.dumps(removed).decode(),
        )
        ctx.emit(INGESTED, ingested)

    return Stage(
        name="ingest",
        inputs=(OMS_ORDERS,),
        outputs=(INGESTED, STATUS),
        handler=handle,
        uses_database=True,
        accepts=frozenset(
            t.event_type for t in (OrderCreated, OrderAmended, OrderCancelled, OrderHoldReleased)
        ),
        description="deduplicates, sequences and normalises OMS order events",
    )
