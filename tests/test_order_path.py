"""The order path end to end on the real Kafka and PostgreSQL: an OMS order in on
`oms.orders.v1`, work orders out on `wms.work-orders.v1`, statuses on `oms.status.v1`.

The tests publish to the public topics as an OMS, an ERP/WMS and a network
admin would, and assert on what comes out. Each test uses its own node ids,
SKUs and order ids, so tests share the running stages but not their data.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.contract.common import (
    HoldReason,
    NodeCapability,
    NodeKind,
    OrderLine,
    ProductLabel,
    StorePickup,
)
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.orders import OrderAmended, OrderCancelled, OrderHoldReleased
from tests.harness import (
    BIRMINGHAM,
    BRISTOL,
    LEEDS,
    LONDON,
    MANCHESTER,
    Pipeline,
    address,
    ids,
    node,
    order,
    pipeline,
)
from tests.support import publish_events, read_all

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]  # the module-scoped fixture, imported so pytest finds it


# --------------------------------------------------------------------------------------------- tests


async def test_a_one_line_order_ships_from_the_cheapest_node_that_meets_the_promise(
    pipeline: Pipeline,
) -> None:
    n = ids("T1")
    near, far = n("DC-LONDON"), n("DC-MANCHESTER")
    sku = n("KETTLE")
    await pipeline.setup_network(
        node(near, LONDON), node(far, MANCHESTER), stock={(near, sku): 5, (far, sku): 5}
    )
    o = order(n("ORD"), [(sku, 1)], to=LONDON)
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == near
    assert wo["carrier"]["service_id"] == "t-ground", "standard delivery on the cheapest service"
    assert wo["lines"] == [{"line_id": "1", "sku": sku, "quantity": 1, "labels": []}]
    assert pipeline.out.states(o.order_id) == ["received", "validated", "planned", "reserved", "released"]
    assert [s["sequence"] for s in pipeline.out.statuses[o.order_id]] == [1, 2, 3, 4, 5]


async def test_lines_no_single_node_has_split_into_the_fewest_shipments(pipeline: Pipeline) -> None:
    n = ids("T2")
    a, b, c = n("DC-A"), n("DC-B"), n("DC-C")
    s1, s2, s3 = n("S1"), n("S2"), n("S3")
    await pipeline.setup_network(
        node(a, MANCHESTER),
        node(b, LEEDS),
        node(c, BRISTOL),
        stock={(a, s1): 3, (a, s2): 3, (b, s3): 3, (c, s1): 3, (c, s3): 3},
    )
    o = order(n("ORD"), [(s1, 1), (s2, 1), (s3, 1)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    shipments = pipeline.out.released(o.order_id)
    assert len(shipments) == 2, "no node has all three, but two nodes do"
    assert sorted(sku for wo in shipments for sku in [line["sku"] for line in wo["lines"]]) == sorted(
        [s1, s2, s3]
    )


async def test_ship_complete_with_no_single_node_able_is_held_for_stock(pipeline: Pipeline) -> None:
    n = ids("T3")
    a, b = n("DC-A"), n("DC-B")
    s1, s2 = n("S1"), n("S2")
    await pipeline.setup_network(node(a, MANCHESTER), node(b, LEEDS), stock={(a, s1): 3, (b, s2): 3})
    o = order(n("ORD"), [(s1, 1), (s2, 1)], ship_complete=True)
    await pipeline.publish(o)
    status = await pipeline.out.final_state(o.order_id, "on_hold", "back_ordered")
    assert status["state"] == "on_hold" and status["reasons"][0]["code"] == "hold_for_stock"
    # Reserve then dates the waiting lines (the stock is there, split over two nodes): the order
    # stays on hold, it is not back-ordered (it was, depending on timing, before).
    await asyncio.sleep(3)
    assert "back_ordered" not in pipeline.out.states(o.order_id)
    assert pipeline.out.released(o.order_id) == []
    reserved = await pipeline.db.fetchval(
        "SELECT coalesce(sum(reserved), 0) FROM reserve_ledger WHERE sku = ANY($1::text[])", [s1, s2]
    )
    assert reserved == 0, "nothing is held back for an order that waits"


async def test_bopis_is_reserved_at_the_pickup_store(pipeline: Pipeline) -> None:
    n = ids("T4")
    dc, store = n("DC"), n("STORE")
    sku = n("S")
    await pipeline.setup_network(
        node(dc, BIRMINGHAM),
        node(store, LEEDS, NodeKind.STORE, NodeCapability.BOPIS_PICKUP),
        stock={(dc, sku): 10, (store, sku): 2},
    )
    o = order(n("ORD"), [(sku, 2)], to=LEEDS, delivery=StorePickup(kind="bopis", pickup_store_id=store))
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == store and wo["carrier"] is None and wo["delivery"]["kind"] == "bopis"
    row = await pipeline.db.fetchrow(
        "SELECT reserved FROM reserve_ledger WHERE node_id = $1 AND sku = $2", store, sku
    )
    assert row["reserved"] == 2


async def test_ship_from_store_when_the_dcs_are_out(pipeline: Pipeline) -> None:
    n = ids("T5")
    dc, store = n("DC"), n("STORE")
    sku = n("S")
    await pipeline.setup_network(
        node(dc, LONDON),
        node(store, BIRMINGHAM, NodeKind.STORE, NodeCapability.SHIP_FROM_STORE),
        stock={(dc, sku): 0, (store, sku): 4},
    )
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == store


async def test_drop_ship_goes_to_its_vendor_and_hazmat_only_to_a_capable_node(pipeline: Pipeline) -> None:
    n = ids("T6")
    dc, hazmat_dc, vendor = n("DC"), n("DC-HAZ"), n("VENDOR")
    plain, haz, shipped_by_vendor = n("PLAIN"), n("HAZ"), n("DS")
    await pipeline.setup_network(
        node(dc, LONDON),
        node(hazmat_dc, MANCHESTER, NodeKind.DC, NodeCapability.HAZMAT),
        node(vendor, BRISTOL, NodeKind.DROP_SHIP_VENDOR),
        stock={
            (dc, plain): 5,
            (dc, haz): 5,
            (hazmat_dc, haz): 5,
            (hazmat_dc, plain): 5,
            (vendor, shipped_by_vendor): 5,
        },
    )
    lines = [
        OrderLine(line_id="1", sku=plain, quantity=1, unit_price=Decimal("10")),
        OrderLine(line_id="2", sku=haz, quantity=1, unit_price=Decimal("10"), labels=(ProductLabel.HAZMAT,)),
        OrderLine(
            line_id="3",
            sku=shipped_by_vendor,
            quantity=1,
            unit_price=Decimal("10"),
            drop_ship_vendor_id=vendor,
        ),
    ]
    o = order(n("ORD"), lines)
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    by_line = {line["line_id"]: wo for wo in pipeline.out.released(o.order_id) for line in wo["lines"]}
    assert by_line["3"]["node_id"] == vendor
    assert by_line["2"]["node_id"] == hazmat_dc, "the nearer DC cannot handle hazmat"
    assert by_line["2"]["carrier"]["service_id"] == "t-ground", "hazmat travels by ground"
    hazmat_line = next(line for line in by_line["2"]["lines"] if line["line_id"] == "2")
    assert hazmat_line["labels"] == ["hazmat"], "the node is told how to handle it"


async def test_a_closed_node_is_never_chosen(pipeline: Pipeline) -> None:
    n = ids("T7")
    near, far = n("DC-NEAR"), n("DC-FAR")
    sku = n("S")
    await pipeline.setup_network(node(near, LONDON), node(far, LEEDS), stock={(near, sku): 5, (far, sku): 5})
    await pipeline.publish(
        NodeStatusChanged(node_id=near, open=False, reason="flood", changed_at=datetime.now(UTC))
    )
    await pipeline.out.wait(
        lambda: not pipeline.deps.network.state.node_open(near), "the closure in the view"
    )
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == far


@pytest.mark.parametrize(
    "pickup", [False, True], ids=["home-delivery-from-a-new-dc", "pickup-at-a-new-store"]
)
async def test_an_order_right_behind_its_nodes_setup_ships_from_it_though_the_view_lags(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, pickup: bool
) -> None:
    # A busy process: the network view of validate and decide-node folds what it fetches three
    # seconds late. The node and its stock are published, then at once the order, as the integration
    # guide does.
    view = pipeline.deps.network
    follow = view._poll

    async def behind(consumer: Any) -> None:
        await asyncio.sleep(3.0)
        await follow(consumer)

    monkeypatch.setattr(view, "_poll", behind)
    await asyncio.sleep(0.5)  # the fetch already under way (200 ms at most) ends first
    n = ids("T7B")
    new, sku = n("NODE"), n("S")
    if pickup:
        await pipeline.publish(node(new, LEEDS, NodeKind.STORE, NodeCapability.BOPIS_PICKUP))
    else:
        await pipeline.publish(node(new, LEEDS))
    await pipeline.publish(
        InventorySnapshot(node_id=new, sku=sku, on_hand=4, safety_stock=0, as_of=datetime.now(UTC))
    )
    delivery = StorePickup(kind="bopis", pickup_store_id=new) if pickup else None
    o = order(n("ORD"), [(sku, 1)], to=LEEDS, delivery=delivery)
    await pipeline.publish(o)
    # Not rejected for an unknown pickup store, nor "cannot be fulfilled" or back-ordered for want of
    # a node the view had not folded yet (the stock is there and would never come again to release it).
    await pipeline.out.final_state(o.order_id, "released", "back_ordered", "needs_attention", "rejected")
    assert pipeline.out.states(o.order_id)[-1] == "released", pipeline.out.statuses[o.order_id][-1]
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == new


async def test_200_orders_for_50_units_reserve_exactly_50(pipeline: Pipeline) -> None:
    n = ids("T8")
    a, b = n("DC-A"), n("DC-B")
    sku = n("HOT")
    await pipeline.setup_network(node(a, LONDON), node(b, MANCHESTER), stock={(a, sku): 30, (b, sku): 20})
    orders = [order(n(f"ORD{i:03d}"), [(sku, 1)]) for i in range(200)]
    await pipeline.publish(*orders)
    for o in orders:
        await pipeline.out.final_state(o.order_id, "released", "back_ordered", timeout=180)
    released = [o.order_id for o in orders if pipeline.out.states(o.order_id)[-1] == "released"]
    backordered = [o.order_id for o in orders if pipeline.out.states(o.order_id)[-1] == "back_ordered"]
    assert len(released) == 50 and len(backordered) == 150
    units = sum(
        line["quantity"] for oid in released for wo in pipeline.out.released(oid) for line in wo["lines"]
    )
    assert units == 50
    rows = await pipeline.db.fetch(
        "SELECT node_id, on_hand, reserved FROM reserve_ledger WHERE sku = $1", sku
    )
    assert {r["node_id"]: (r["on_hand"], r["reserved"]) for r in rows} == {a: (30, 30), b: (20, 20)}


async def test_orders_racing_for_a_nodes_last_slots_never_take_it_past_its_capacity(
    pipeline: Pipeline,
) -> None:
    # 30 orders at once, all cheapest from a DC that takes 5 shipments a day: decisions made side
    # by side see the same count, so reserve re-checks it; the rest go from the other DC.
    n = ids("T8C")
    near, far = n("DC-NEAR"), n("DC-FAR")
    sku = n("S")
    await pipeline.setup_network(
        node(near, LONDON).model_copy(update={"daily_capacity": 5}),
        node(far, MANCHESTER),
        stock={(near, sku): 50, (far, sku): 50},
    )
    orders = [order(n(f"ORD{i:02d}"), [(sku, 1)], to=LONDON) for i in range(30)]
    await pipeline.publish(*orders)
    for o in orders:
        await pipeline.out.final_state(o.order_id, "released", timeout=120)
    sources = [wo["node_id"] for o in orders for wo in pipeline.out.released(o.order_id)]
    assert len(sources) == 30
    assert 1 <= sources.count(near) <= 5, sources
    assert sources.count(far) == 30 - sources.count(near)
    rows = await pipeline.db.fetch("SELECT shipments FROM reserve_node_load WHERE node_id = $1", near)
    assert [r["shipments"] for r in rows] == [sources.count(near)]


async def test_an_address_change_re_decides(pipeline: Pipeline) -> None:
    n = ids("T9")
    south, north = n("DC-SOUTH"), n("DC-NORTH")
    sku = n("S")
    await pipeline.setup_network(
        node(south, LONDON), node(north, LEEDS), stock={(south, sku): 5, (north, sku): 5}
    )
    # Held for payment, so the change lands before anything is released.
    o = order(n("ORD"), [(sku, 1)], to=LONDON, holds=(HoldReason.PAYMENT_PENDING,))
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "on_hold")
    await pipeline.publish(OrderAmended(order_id=o.order_id, ship_to=address(LEEDS, "Leeds")))
    await asyncio.sleep(1)
    await pipeline.publish(OrderHoldReleased(order_id=o.order_id, hold=HoldReason.PAYMENT_PENDING))
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == north and wo["ship_to"]["postal_code"] == "LS1 1UR"

    # After release, another change re-decides too: the old work order is cancelled, a new one released.
    await pipeline.publish(OrderAmended(order_id=o.order_id, ship_to=address(LONDON, "London")))
    await pipeline.out.wait(lambda: len(pipeline.out.released(o.order_id)) == 2, "a second work order")
    assert pipeline.out.released(o.order_id)[-1]["node_id"] == south
    # The cancel request and the order's state come on different topics, in no set order.
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    [cancel] = pipeline.out.cancel_requests(o.order_id)
    assert cancel["work_order_id"] == wo["work_order_id"] and cancel["reason"] == "order_amended"
    rows = await pipeline.db.fetch("SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1", sku)
    assert {r["node_id"]: r["reserved"] for r in rows} == {south: 1, north: 0}


async def test_a_cancellation_frees_the_stock(pipeline: Pipeline) -> None:
    n = ids("T10")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    o = order(n("ORD"), [(sku, 2)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    assert await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE sku = $1", sku) == 2
    await pipeline.publish(OrderCancelled(order_id=o.order_id, reason="customer_request"))
    await pipeline.out.final_state(o.order_id, "cancelled")
    assert await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE sku = $1", sku) == 0
    # The cancel request and the order's state come on different topics, in no set order.
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    [cancel] = pipeline.out.cancel_requests(o.order_id)
    assert cancel["reason"] == "order_cancelled"
    # The freed units serve the next order.
    again = order(n("ORD2"), [(sku, 3)])
    await pipeline.publish(again)
    await pipeline.out.final_state(again.order_id, "released")


async def test_an_order_amended_and_cancelled_at_once_keeps_its_plans_in_order(pipeline: Pipeline) -> None:
    """Placed, amended and cancelled in one breath, so decide-node reads them in one batch (one locked
    read of the order's row for all three, its writes at the end): the row follows them in order."""
    n = ids("T16")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 2)], to=LONDON)
    await pipeline.publish(
        o,
        OrderAmended(order_id=o.order_id, ship_to=address(LEEDS, "Leeds")),
        OrderCancelled(order_id=o.order_id, reason="customer_request"),
    )
    await pipeline.out.final_state(o.order_id, "cancelled")
    row = await pipeline.db.fetchrow(
        "SELECT latest_version, sequence, cancelled FROM decide_orders WHERE order_id = $1", o.order_id
    )
    plans = await pipeline.db.fetch(
        "SELECT plan_version, sequence FROM decide_plans WHERE order_id = $1 ORDER BY plan_version",
        o.order_id,
    )
    assert row["cancelled"]
    assert [p["plan_version"] for p in plans] == list(range(1, row["latest_version"] + 1))
    assert [p["sequence"] for p in plans] == sorted(p["sequence"] for p in plans)
    assert row["sequence"] > plans[-1]["sequence"]  # the cancel came after the last plan
    deadline = asyncio.get_running_loop().time() + 30
    while await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE sku = $1", sku):
        assert asyncio.get_running_loop().time() < deadline, "the cancelled order's units were never freed"
        await asyncio.sleep(0.1)


async def test_an_invalid_order_is_rejected_with_all_its_reasons(pipeline: Pipeline) -> None:
    n = ids("T11")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    lines = [
        OrderLine(line_id="1", sku=sku, quantity=0, unit_price=Decimal("10")),
        OrderLine(line_id="2", sku=n("NOPE"), quantity=1, unit_price=Decimal("10")),
    ]
    bad = order(n("ORD"), lines).model_copy(
        update={"ship_to": address((51.5, -0.1, "NOT A CODE")), "order_total": Decimal("1.00")}
    )
    await pipeline.publish(bad)
    status = await pipeline.out.final_state(bad.order_id, "rejected")
    codes = sorted(r["code"] for r in status["reasons"])
    assert codes == ["non_positive_quantity", "price_mismatch", "unknown_sku", "unroutable_postal_code"]
    assert all(r["message"] for r in status["reasons"])
    assert pipeline.out.released(bad.order_id) == []


async def test_an_oms_redelivery_has_one_effect_and_a_change_for_an_unknown_order_is_dead_lettered(
    pipeline: Pipeline,
) -> None:
    n = ids("T12")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    created = Envelope.new(o, source="test/oms")
    await publish_events(pipeline.bootstrap, "oms.orders.v1", [created, created, created])
    stray = Envelope.new(OrderCancelled(order_id=n("GHOST"), reason="customer_request"), source="test/oms")
    await publish_events(pipeline.bootstrap, "oms.orders.v1", [stray])
    await pipeline.out.final_state(o.order_id, "released")
    await asyncio.sleep(1)
    assert len(pipeline.out.released(o.order_id)) == 1, "the same OMS event three times: one work order"
    assert pipeline.out.states(o.order_id).count("received") == 1
    assert await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE sku = $1", sku) == 1
    dead = await read_all(pipeline.bootstrap, "oms.orders.v1.dlq", expect=1, timeout=30)
    reasons = [dict((k, v.decode()) for k, v in d.headers) for d in dead]
    mine = [r for r in reasons if r.get("ce_id") == stray.id]
    assert mine and mine[0]["dlq_reason"].startswith(f"order.cancelled.v1 for unknown order {stray.subject}")


async def test_an_order_whose_cancellation_came_first_is_cancelled_on_arrival_not_fulfilled(
    pipeline: Pipeline,
) -> None:
    n = ids("T12B")
    dc, sku = n("DC"), n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    # The OMS's events out of order: the cancellation, then the order it cancels.
    cancel = Envelope.new(OrderCancelled(order_id=o.order_id, reason="customer_request"), source="test/oms")
    await publish_events(pipeline.bootstrap, "oms.orders.v1", [cancel])
    # An operator hears of it: the cancel is dead-lettered too (the topic holds other tests' as well).
    deadline = time.monotonic() + 60
    while not any(
        dict(d.headers).get("ce_id") == cancel.id.encode()
        for d in await read_all(pipeline.bootstrap, "oms.orders.v1.dlq", expect=1, timeout=30, settle=0.5)
    ):
        assert time.monotonic() < deadline, "the early cancellation was never dead-lettered"
    await pipeline.publish(o)
    status = await pipeline.out.final_state(o.order_id, "cancelled")
    assert pipeline.out.states(o.order_id) == ["received", "cancelled"]
    assert status["reasons"][0]["code"] == "cancelled_before_created"
    await asyncio.sleep(2)
    assert pipeline.out.released(o.order_id) == [], "a cancelled order is never fulfilled"
    assert await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE sku = $1", sku) == 0
    assert (
        await pipeline.db.fetchval(
            "SELECT count(*) FROM ingest_early_cancels WHERE order_id = $1", o.order_id
        )
        == 0
    )
    # The same create again is the duplicate it always was; the order stays cancelled.
    await pipeline.publish(o)
    await asyncio.sleep(1)
    assert pipeline.out.states(o.order_id) == ["received", "cancelled"]


async def test_explain_says_why_an_order_ships_from_where_it_does(
    pipeline: Pipeline, database_url: str
) -> None:
    n = ids("T13")
    near, empty = n("DC-NEAR"), n("DC-EMPTY")
    far = n("DC-FAR")
    sku = n("S")
    await pipeline.setup_network(
        node(near, LONDON),
        node(far, LEEDS),
        node(empty, BIRMINGHAM),
        stock={(near, sku): 2, (far, sku): 2, (empty, sku): 0},
    )
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "explain",
        o.order_id,
        env={**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert near in text and "t-ground" in text, text
    assert empty in text and "stock" in text.lower(), "the rejected node is named with its reason"
    assert "policy" in text.lower()
