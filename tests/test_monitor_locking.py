"""Monitor's batches lock the orders they touch up front, on PostgreSQL: two batches that meet the same
orders in opposite orders (a node's events and a carrier's, on partitions of different topics) wait
for each other instead of deadlocking, which rolled one of them back to be redone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.work import WorkOrderCancelRequested
from orchestrator.stages.monitor import _lock_order, lock_batch_orders
from tests.test_monitor_stage import acked, uid, work_order

pytestmark = pytest.mark.integration

#: Long enough for a lock wait to show; a handler that finds its rows already held returns at once.
WAIT_S = 0.5


@pytest.fixture
async def connections(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def released(db: asyncpg.Connection, order_id: str, node_id: str) -> Envelope:
    """A work order of `order_id` at `node_id` as monitor's release handler records it; its node's ack."""
    wo = work_order(order_id, node_id, [("SKU-1", 1)])
    await db.execute(
        "INSERT INTO monitor_shipments (work_order_id, order_id, shipment_id, node_id, state, lines,"
        " promised_delivery_date, ack_due_at, ship_due_at, correlation_id)"
        " VALUES ($1, $2, $3, $4, 'released', '[]', $5, now(), $6, $1)",
        wo.work_order_id,
        wo.order_id,
        wo.shipment_id,
        wo.node_id,
        wo.promised_delivery_date,
        wo.ship_by,
    )
    return Envelope.new(acked(wo), source="test/wms")


async def blocked(task: asyncio.Task[None]) -> bool:
    await asyncio.sleep(WAIT_S)
    return not task.done()


@asynccontextmanager
async def holding(conn: asyncpg.Connection, events: list[Envelope]) -> AsyncIterator[None]:
    """A batch of `events` that has locked what it is about and is still being handled."""
    async with conn.transaction():
        await lock_batch_orders(events, conn)
        yield


def batch(conn: asyncpg.Connection, events: list[Envelope]) -> asyncio.Task[None]:
    """A whole batch, as the runtime runs it: read_batch, then each handler locks its order as it comes to it."""

    async def run() -> None:
        async with conn.transaction():
            await lock_batch_orders(events, conn)
            for e in events:
                await _lock_order(conn, e.subject)

    return asyncio.create_task(run())


async def test_batches_meeting_two_orders_in_opposite_orders_wait_instead_of_deadlocking(
    db: asyncpg.Connection, connections: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    node = uid("N")
    x, y = await released(db, uid("O"), node), await released(db, uid("O"), node)
    first, second = connections
    async with holding(first, [x, y]):
        crossing = batch(second, [y, x])
        assert await blocked(crossing), "the second batch took an order the first holds"
        # The first batch's handlers now take their orders, the second order first: both held already.
        for order_id in (y.subject, x.subject):
            await asyncio.wait_for(_lock_order(first, order_id), WAIT_S)
    await asyncio.wait_for(crossing, 10)  # no DeadlockDetectedError: it waited, then went ahead


async def test_a_node_closure_waits_for_the_batches_holding_that_nodes_orders(
    db: asyncpg.Connection, connections: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    node = uid("N")
    x = await released(db, uid("O"), node)
    elsewhere = await released(db, uid("O"), uid("N"))
    first, second = connections
    closed = Envelope.new(
        NodeStatusChanged(node_id=node, open=False, reason="storm", changed_at=datetime.now(UTC)),
        source="test/network",
    )
    async with holding(first, [x]):
        closure = batch(second, [closed])
        assert await blocked(closure), "the closure's batch did not wait for an open work order at the node"
    await asyncio.wait_for(closure, 10)

    # Another node's orders are not held up by it.
    async with holding(first, [closed]):
        await asyncio.wait_for(batch(second, [elsewhere]), WAIT_S)


async def test_an_order_with_no_work_known_yet_is_serialised_by_its_parking_lock(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    order_id = uid("O")
    first, second = connections
    cancel = Envelope.new(
        WorkOrderCancelRequested(
            work_order_id=f"WO-{order_id}-1", order_id=order_id, node_id=uid("N"), reason="order_cancelled"
        ),
        source="test/release",
    )
    async with holding(first, [cancel]):
        other = batch(second, [cancel])
        assert await blocked(other), "no row to lock, and the parking lock was not taken"
    await asyncio.wait_for(other, 10)
