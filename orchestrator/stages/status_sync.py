"""status-sync: keeps the OMS and the customer told, and keeps every order's story.

Reads every stage's status reports and observes the order-keyed topics
(OMS orders and returns, plans, reservations, re-decides, exceptions, work
orders, node, return and carrier events). Publishes the returns stage's
return statuses on `oms.status.v1` as they come (that stage numbers them). Decides:
- which status reports are transitions (legal by the table in
  `orchestrator.domain.order_states`: a state the order is not already in,
  not after it ended, never back to received), numbered 1, 2, 3... per order
  and published once, in order, on `oms.status.v1`;
- which transitions the customer hears about, on `customer.notifications.v1`.

Owns `status_events`, the append-only event store of every event of every
order (with the event in words), and `status_orders`, the current-state
projection folded from the stored status reports, which `rebuild_projection`
can drop and rebuild. Reads the customer id from ingest's `ingest_orders`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from orchestrator.contract.common import OrderState
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.pipeline import StageStatus
from orchestrator.contract.returns import ReturnStatusChanged
from orchestrator.contract.status import CustomerNotification, NotificationKind, OrderStatusChanged
from orchestrator.domain.order_states import is_legal
from orchestrator.domain.timeline import describe
from orchestrator.runtime.stage import HandlerContext, Stage
from orchestrator.stages.common import (
    OMS_ORDERS,
    OMS_STATUS,
    PLANS,
    REROUTES,
    RESERVATIONS,
    STATUS,
    WORK_ORDERS,
)

CUSTOMER_NOTIFICATIONS = "customer.notifications.v1"
#: Order-keyed topics whose events go into the story; other stages own (and dead-letter) them.
OBSERVED = (
    OMS_ORDERS,
    PLANS,
    RESERVATIONS,
    REROUTES,
    "orchestrator.exceptions.v1",
    WORK_ORDERS,
    "wms.events.v1",
    "carrier.events.v1",
    "oms.returns.v1",
    "wms.return-events.v1",
)

#: What the customer is told on reaching a state (states not listed are not the customer's business).
_NOTIFY: dict[OrderState, tuple[NotificationKind, str]] = {
    OrderState.RELEASED: (NotificationKind.ORDER_CONFIRMED, "Your order is confirmed and being prepared."),
    OrderState.BACK_ORDERED: (NotificationKind.BACK_ORDERED, "Part of your order is waiting for stock."),
    OrderState.PARTIALLY_SHIPPED: (NotificationKind.PARTIALLY_SHIPPED, "Part of your order is on its way."),
    OrderState.SHIPPED: (NotificationKind.SHIPPED, "Your order is on its way."),
    OrderState.DELIVERED: (NotificationKind.DELIVERED, "Your order was delivered."),
    OrderState.CANCELLED: (NotificationKind.CANCELLED, "Your order was cancelled."),
}


def is_transition(current: OrderState | None, new: OrderState) -> bool:
    """A report is a transition when `orchestrator.domain.order_states` allows it: not a repeat, not
    after the order ended, never back to `received`."""
    return is_legal(current, new)


APPEND_EVENT = (
    "INSERT INTO status_events (event_id, order_id, event_type, source, topic, occurred_at, causation_id,"
    " correlation_id, summary, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (event_id) DO NOTHING"
)


def event_row(event: Envelope, topic: str) -> tuple[object, ...]:
    """The event store's row for `event`: what `APPEND_EVENT` takes."""
    return (
        event.id,
        event.subject,
        event.type,
        event.source,
        topic,
        event.time,
        event.causation_id,
        event.correlation_id,
        describe(event.data),
        event.data.model_dump_json(),
    )


UPSERT_STATUS = (
    "INSERT INTO status_orders (order_id, state, sequence, reasons, stage) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (order_id) DO UPDATE SET state = $2, sequence = $3, reasons = $4, stage = $5,"
    " updated_at = now()"
)


def fold(
    current: OrderState | None, sequence: int, report: StageStatus
) -> tuple[tuple[OrderState | None, int], tuple[object, ...]] | None:
    """One report folded into an order's (state, sequence): ((previous state, new sequence), the
    projection's new row for `UPSERT_STATUS`) when it is a transition, else None."""
    if not is_transition(current, report.state):
        return None
    row = (
        report.order_id,
        report.state.value,
        sequence + 1,
        orjson.dumps([r.model_dump() for r in report.reasons]).decode(),
        report.stage,
    )
    return (current, sequence + 1), row


async def apply_status(conn: asyncpg.Connection, report: StageStatus) -> tuple[OrderState | None, int] | None:
    """Fold one report into the projection: (previous state, sequence) when it is a transition, else None."""
    row = await conn.fetchrow(
        "SELECT state, sequence FROM status_orders WHERE order_id = $1 FOR UPDATE", report.order_id
    )
    folded = fold(OrderState(row["state"]) if row else None, row["sequence"] if row else 0, report)
    if folded is None:
        return None
    await conn.execute(UPSERT_STATUS, *folded[1])
    return folded[0]


@dataclass
class BatchReads:
    """What a batch's status reports need, read for all of them at once and kept current by them."""

    #: order id -> (state, sequence) as the projection has it, with this batch's transitions applied.
    orders: dict[str, tuple[OrderState | None, int]]
    #: order id -> customer id, for orders ingest has (reports of others notify nobody).
    customers: dict[str, str]


async def read_batch(events: Sequence[Envelope], conn: asyncpg.Connection) -> BatchReads:
    """The projection rows (locked, in one order) and customer ids of every order the batch reports on."""
    order_ids = sorted({e.data.order_id for e in events if isinstance(e.data, StageStatus)})
    if not order_ids:
        return BatchReads({}, {})
    rows = await conn.fetch(
        "SELECT order_id, state, sequence FROM status_orders WHERE order_id = ANY($1::text[])"
        " ORDER BY order_id FOR UPDATE",
        order_ids,
    )
    customers = await conn.fetch(
        "SELECT order_id, order_json ->> 'customer_id' AS customer_id FROM ingest_orders"
        " WHERE order_id = ANY($1::text[])",
        order_ids,
    )
    orders: dict[str, tuple[OrderState | None, int]] = dict.fromkeys(order_ids, (None, 0))
    orders.update({r["order_id"]: (OrderState(r["state"]), r["sequence"]) for r in rows})
    return BatchReads(orders, {r["order_id"]: r["customer_id"] for r in customers if r["customer_id"]})


async def rebuild_projection(conn: asyncpg.Connection) -> int:
    """Drop the projection and fold it again from the event store; returns the orders rebuilt."""
    async with conn.transaction():
        await conn.execute("DELETE FROM status_orders")
        rows = await conn.fetch(
            "SELECT payload FROM status_events WHERE event_type = $1 ORDER BY position",
            StageStatus.event_type,
        )
        for r in rows:
            await apply_status(conn, StageStatus.model_validate_json(r["payload"]))
        return int(await conn.fetchval("SELECT count(*) FROM status_orders"))


def status_sync_stage() -> Stage:
    def notify(ctx: HandlerContext, reads: BatchReads, report: StageStatus) -> None:
        told = _NOTIFY.get(report.state)
        if told is None:
            return
        customer_id = reads.customers.get(report.order_id)
        if customer_id is None:
            return  # not an order the OMS sent us (a test or replay): nobody to tell
        kind, message = told
        ctx.emit(
            CUSTOMER_NOTIFICATIONS,
            CustomerNotification(
                order_id=report.order_id,
                customer_id=customer_id,
                kind=kind,
                message=message,
            ),
        )

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        # The event store is append-only and read by the API, never by this batch: one round trip a batch.
        ctx.defer(APPEND_EVENT, *event_row(event, ctx.topic))
        report = event.data
        if isinstance(report, ReturnStatusChanged):
            # The returns stage owns the return's states and numbers them; this stage publishes them.
            ctx.emit(OMS_STATUS, report)
            return
        if not isinstance(report, StageStatus):
            return
        reads: BatchReads = ctx.batch
        folded = fold(*reads.orders[report.order_id], report)
        if folded is None:
            return
        (previous, sequence), row = folded
        # The batch's later reports of this order fold onto this one; the rows are written in this order.
        reads.orders[report.order_id] = (report.state, sequence)
        ctx.defer(UPSERT_STATUS, *row)
        ctx.emit(
            OMS_STATUS,
            OrderStatusChanged(
                order_id=report.order_id,
                state=report.state,
                previous_state=previous,
                reasons=report.reasons,
                sequence=sequence,
                occurred_at=report.occurred_at,
            ),
        )
        notify(ctx, reads, report)

    return Stage(
        name="status-sync",
        inputs=(STATUS, *OBSERVED),
        outputs=(OMS_STATUS, CUSTOMER_NOTIFICATIONS),
        handler=handle,
        uses_database=True,
        read_batch=read_batch,
        accepts=frozenset({StageStatus.event_type, ReturnStatusChanged.event_type}),
        observes=frozenset(OBSERVED),
        description="keeps the event store, publishes transitions to the OMS and tells the customer",
    )
