"""release on the real PostgreSQL, through its own handler: a shipment reserve gave back by name
before its confirmation arrived is never released.

An undone repair (the work it replaced shipped after all) is given back by reserve while handling a
node's event, on another input partition than the plan whose confirmation releases the repair's
work order. The two reach release in either order; a fault run saw the give-back first, and the
repair's work order went out and shipped the line a second time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import structlog

from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.examples import example
from orchestrator.contract.pipeline import Repair, ReservationConfirmed, ReservationsReleased
from orchestrator.runtime.stage import Emitted, HandlerContext, Stage
from orchestrator.stages import order_path_deps
from orchestrator.stages.common import RESERVATIONS, WORK_ORDERS
from orchestrator.stages.release import release_stage

pytestmark = pytest.mark.integration
LOG = structlog.get_logger("tests.release")


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    tx = c.transaction()
    await tx.start()
    try:
        yield c
    finally:
        await tx.rollback()
        await c.close()


async def handle(stage: Stage, conn: asyncpg.Connection, data: EventPayload) -> list[Emitted]:
    event = Envelope.new(data, source="test/release")
    ctx = HandlerContext(
        stage=stage.name, topic=RESERVATIONS, event=event, db=conn, now=datetime.now(UTC), log=LOG
    )
    await stage.handler(event, ctx)
    return ctx.emitted


def confirmed_repair(order_id: str) -> ReservationConfirmed:
    base = example("reservation.confirmed.v1")
    assert isinstance(base, ReservationConfirmed)
    reserved = base.shipments[0]
    shipment = reserved.shipment.model_copy(update={"shipment_id": f"{order_id}-p2-s1"})
    return base.model_copy(
        update={
            "order_id": order_id,
            "plan_id": f"{order_id}-p2",
            "order": base.order.model_copy(update={"order_id": order_id}),
            "shipments": (reserved.model_copy(update={"shipment": shipment}),),
            "repair": Repair(
                exception_id=f"{order_id}:node_closed",
                action="reroute",
                lines=shipment.lines,
                replaces_work_order_id=f"WO-{order_id}-p1-s1",
                replaces_shipment_id=f"{order_id}-p1-s1",
                cancel_replaced=True,
                dropped_if_shipped=True,
            ),
        }
    )


def work_orders(emitted: list[Emitted]) -> list[str]:
    """The work orders sent to the nodes."""
    return [
        e.envelope.data.work_order_id  # type: ignore[attr-defined]
        for e in emitted
        if e.topic == WORK_ORDERS and e.envelope.type == "workorder.released.v1"
    ]


async def test_a_shipment_given_back_before_its_confirmation_is_never_released(
    conn: asyncpg.Connection,
) -> None:
    stage = release_stage(order_path_deps())
    order_id = f"REL-{uuid.uuid4().hex[:8]}"
    repair = confirmed_repair(order_id)
    moved = repair.shipments[0].shipment.shipment_id
    undone = ReservationsReleased(
        order_id=order_id,
        plan_id=repair.plan_id,
        reason="the work it replaced shipped after all",
        cancel_order=False,
        shipment_ids=(moved,),
    )
    assert await handle(stage, conn, undone) == [], "no work order yet: nothing to cancel"
    assert work_orders(await handle(stage, conn, repair)) == [], "the moved shipment is not released"
    rows = await conn.fetch("SELECT work_order_id FROM release_work_orders WHERE order_id = $1", order_id)
    assert rows == []


async def test_a_shipment_given_back_after_its_release_is_cancelled(conn: asyncpg.Connection) -> None:
    stage = release_stage(order_path_deps())
    order_id = f"REL-{uuid.uuid4().hex[:8]}"
    repair = confirmed_repair(order_id)
    moved = repair.shipments[0].shipment.shipment_id
    [released] = work_orders(await handle(stage, conn, repair))
    emitted = await handle(
        stage,
        conn,
        ReservationsReleased(
            order_id=order_id,
            plan_id=repair.plan_id,
            reason="shipped after all",
            cancel_order=False,
            shipment_ids=(moved,),
        ),
    )
    cancels = [
        e.envelope.data
        for e in emitted
        if e.topic == WORK_ORDERS and e.envelope.type == "workorder.cancel_requested.v1"
    ]
    assert [c.work_order_id for c in cancels] == [released]  # type: ignore[attr-defined]
