"""Back-orders and pre-orders end to end on the real Kafka and PostgreSQL: lines wait in
their SKU's queue, the customer is told the date expected supply gives them, and they are
planned and released through the normal path when the stock arrives or the release day comes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.contract.common import OrderLine
from orchestrator.contract.inventory import DeltaReason, InboundSupplyExpected, InventoryDelta, SupplyKind
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.settings import Settings
from orchestrator.stages.reserve_supply import SupplyTicker
from tests.harness import LONDON, MANCHESTER, Pipeline, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]


def _today() -> date:
    return datetime.now(UTC).date()


def _receipt(node_id: str, sku: str, units: int) -> InventoryDelta:
    return InventoryDelta(
        node_id=node_id,
        sku=sku,
        change=units,
        reason=DeltaReason.RECEIPT,
        reference="GRN-1",
        as_of=datetime.now(UTC),
    )


def _units(work_orders: list[dict[str, Any]], sku: str) -> int:
    return sum(line["quantity"] for wo in work_orders for line in wo["lines"] if line["sku"] == sku)


async def _story(pipeline: Pipeline, order_id: str) -> list[str]:
    rows = await pipeline.db.fetch(
        "SELECT summary FROM status_events WHERE order_id = $1 ORDER BY position", order_id
    )
    return [r["summary"] for r in rows]


async def test_a_back_order_is_told_its_date_and_released_when_the_supply_arrives(pipeline: Pipeline) -> None:
    n = ids("SUP1")
    dc, sku = n("DC"), n("BOOK")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 0})
    due = _today() + timedelta(days=4)
    await pipeline.publish(
        InboundSupplyExpected(
            node_id=dc,
            sku=sku,
            quantity=5,
            expected_date=due,
            supply_kind=SupplyKind.PURCHASE_ORDER,
            reference="PO-881",
            as_of=datetime.now(UTC),
        )
    )
    o = order(n("ORD"), [(sku, 2)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "back_ordered")
    notes = pipeline.out.notifications[o.order_id]
    await pipeline.out.wait(
        lambda: any(x.get("new_promised_date") == due.isoformat() for x in notes),
        "the customer told the date the purchase order brings",
    )
    dated = next(x for x in notes if x.get("new_promised_date") == due.isoformat())
    assert f"2 x {sku}" in dated["message"] and due.isoformat() in dated["message"]
    assert not pipeline.out.released(o.order_id)

    await pipeline.publish(_receipt(dc, sku, 5))
    await pipeline.out.wait(lambda: bool(pipeline.out.released(o.order_id)), "the back-order released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == dc and _units([wo], sku) == 2
    await pipeline.out.final_state(o.order_id, "released")
    story = await _story(pipeline, o.order_id)
    assert any(f"by {due.isoformat()}" in line for line in story), story  # the date is in the timeline
    waiting = await pipeline.db.fetchval(
        "SELECT count(*) FROM reserve_waiting WHERE order_id = $1", o.order_id
    )
    assert waiting == 0


async def test_a_back_order_is_released_when_the_closed_node_holding_its_stock_opens_again(
    pipeline: Pipeline,
) -> None:
    """No stock event comes when a node reopens, yet its stock is routable again: reserve hears the
    node open and plans the lines that waited for what it holds."""
    n = ids("SUP4")
    dc, sku = n("DC"), n("LAMP")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    await pipeline.publish(
        NodeStatusChanged(node_id=dc, open=False, reason="stock-take", changed_at=datetime.now(UTC))
    )
    await pipeline.out.wait(lambda: not pipeline.deps.network.state.nodes[dc].open, "the node closed")
    o = order(n("ORD"), [(sku, 2)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "back_ordered")
    # The line waits in the queue; the closed node's 3 units are not counted for it meanwhile.
    deadline = time.monotonic() + 30
    while (
        await pipeline.db.fetchval(
            "SELECT count(*) FROM reserve_waiting WHERE order_id = $1 AND state = 'waiting'", o.order_id
        )
        != 1
    ):
        assert time.monotonic() < deadline, "the line never waited in its queue"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    assert not pipeline.out.released(o.order_id)

    await pipeline.publish(
        NodeStatusChanged(node_id=dc, open=True, reason="stock-take done", changed_at=datetime.now(UTC))
    )
    await pipeline.out.wait(
        lambda: bool(pipeline.out.released(o.order_id)), "the back-order released when its node opened"
    )
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == dc and _units([wo], sku) == 2


async def test_a_preorder_waits_for_its_day_and_keeps_the_stock_that_came_early(pipeline: Pipeline) -> None:
    n = ids("SUP2")
    dc, other, game, mug = n("DC"), n("DC-B"), n("GAME"), n("MUG")
    await pipeline.setup_network(
        node(dc, LONDON), node(other, MANCHESTER), stock={(dc, mug): 5, (dc, game): 0, (other, game): 0}
    )
    release = _today() + timedelta(days=3)
    pre = order(
        n("PRE"),
        [
            OrderLine(line_id="1", sku=mug, quantity=1, unit_price=Decimal("10.00")),
            OrderLine(line_id="2", sku=game, quantity=2, unit_price=Decimal("10.00"), release_date=release),
        ],
        days=6,
    )
    await pipeline.publish(pre)
    # What is on sale ships now; the game waits.
    await pipeline.out.wait(lambda: bool(pipeline.out.released(pre.order_id)), "the mug released")
    assert _units(pipeline.out.released(pre.order_id), mug) == 1
    assert _units(pipeline.out.released(pre.order_id), game) == 0

    # The game's stock arrives before the release day: it stays the pre-order's.
    await pipeline.publish(_receipt(dc, game, 3))
    notes = pipeline.out.notifications[pre.order_id]
    await pipeline.out.wait(
        lambda: any(x.get("new_promised_date") == release.isoformat() for x in notes),
        "the pre-order customer told the release date",
    )
    later = order(n("LATER"), [(game, 2)])
    await pipeline.publish(later)
    await pipeline.out.final_state(later.order_id, "planned", "released", "back_ordered")
    await pipeline.out.wait(
        lambda: pipeline.out.states(later.order_id)[-1] in ("released", "back_ordered"),
        "the later order decided",
    )
    assert _units(pipeline.out.released(later.order_id), game) <= 1, "only what the pre-order is not owed"
    assert _units(pipeline.out.released(pre.order_id), game) == 0, "not before the release day"

    # The release day comes (the ticker is asked as if it were that day).
    settings = Settings(kafka_bootstrap=pipeline.bootstrap, database_url=pipeline.database_url)
    ticker = SupplyTicker()
    try:
        assert (
            await ticker.tick(
                settings, now=datetime(release.year, release.month, release.day, 12).astimezone()
            )
            >= 1
        )
    finally:
        await ticker.close()
    await pipeline.out.wait(
        lambda: _units(pipeline.out.released(pre.order_id), game) == 2, "the pre-order released on its day"
    )
    wo = next(w for w in pipeline.out.released(pre.order_id) if _units([w], game))
    assert wo["node_id"] == dc
    total_game = _units(pipeline.out.released(pre.order_id), game) + _units(
        pipeline.out.released(later.order_id), game
    )
    assert total_game <= 3, "never more than arrived"


async def test_an_order_of_unreleased_products_is_held_with_the_reason(pipeline: Pipeline) -> None:
    n = ids("SUP3")
    dc, album = n("DC"), n("ALBUM")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, album): 10})
    release = _today() + timedelta(days=9)
    o = order(
        n("ORD"),
        [OrderLine(line_id="1", sku=album, quantity=1, unit_price=Decimal("10.00"), release_date=release)],
        days=12,
    )
    await pipeline.publish(o)
    status = await pipeline.out.final_state(o.order_id, "on_hold")
    assert status["reasons"][0]["code"] == "preorder"
    assert release.isoformat() in status["reasons"][0]["message"]
    assert not pipeline.out.released(o.order_id)
    # decide-node says "on hold" as it emits the plan; reserve queues the line when the plan reaches it.
    row = None
    deadline = time.monotonic() + 60
    while row is None:
        assert time.monotonic() < deadline, "the pre-order line never joined its SKU's queue"
        await asyncio.sleep(0.1)
        row = await pipeline.db.fetchrow(
            "SELECT release_on, expected_date FROM reserve_waiting WHERE order_id = $1", o.order_id
        )
    assert row["release_on"] == release and row["expected_date"] == release  # stock is there: due that day
