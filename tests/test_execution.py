"""Execution end to end: after release, the orchestrator watches the nodes and the
carriers, repairs what goes wrong with its playbooks, and keeps the OMS and the
customer told. Driven only through the public topics, on the real Kafka and
PostgreSQL, with every stage running.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.contract.common import Package, SkuLine
from orchestrator.contract.execution import (
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentException,
    ShipmentInTransit,
    ShipmentPickedUp,
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.orders import LineQuantityChange, OrderAmended, OrderCreated
from orchestrator.stages.status_sync import rebuild_projection
from tests.harness import BRISTOL, LEEDS, LONDON, MANCHESTER, Pipeline, address, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]

#: Nodes in these tests acknowledge within seconds, or the timer fires.
PIPELINE_ENV = {
    "ORCHESTRATOR_ACK_TIMEOUT_S": "4",
    "ORCHESTRATOR_SCAN_TIMEOUT_S": "3600",
    "ORCHESTRATOR_EARLY_EVENT_WAIT_S": "20",
}


def now() -> datetime:
    return datetime.now(UTC)


async def released(p: Pipeline, order_id: str, count: int = 1) -> list[dict[str, Any]]:
    await p.out.final_state(order_id, "released")
    await p.out.wait(lambda: len(p.out.released(order_id)) >= count, f"{count} work order(s) for {order_id}")
    return p.out.released(order_id)


def ack(wo: dict[str, Any]) -> WorkOrderAcknowledged:
    return WorkOrderAcknowledged(
        work_order_id=wo["work_order_id"], order_id=wo["order_id"], node_id=wo["node_id"], occurred_at=now()
    )


def shipped(wo: dict[str, Any], tracking: str) -> WorkOrderShipped:
    return WorkOrderShipped(
        work_order_id=wo["work_order_id"],
        order_id=wo["order_id"],
        node_id=wo["node_id"],
        occurred_at=now(),
        shipment_id=wo["shipment_id"],
        carrier=wo["carrier"]["carrier"],
        service_id=wo["carrier"]["service_id"],
        tracking_number=tracking,
        packages=(Package(package_id=f"{tracking}-1"),),
        lines=tuple(SkuLine(line_id=x["line_id"], sku=x["sku"], quantity=x["quantity"]) for x in wo["lines"]),
    )


def short_picked(wo: dict[str, Any], line_id: str, sku: str, picked: int, short: int) -> WorkOrderShortPicked:
    return WorkOrderShortPicked(
        work_order_id=wo["work_order_id"],
        order_id=wo["order_id"],
        node_id=wo["node_id"],
        occurred_at=now(),
        lines=(ShortLine(line_id=line_id, sku=sku, quantity_picked=picked, quantity_short=short),),
    )


def notified(p: Pipeline, order_id: str, kind: str) -> list[dict[str, Any]]:
    return [n for n in p.out.notifications[order_id] if n["kind"] == kind]


async def short_until_options(
    p: Pipeline, wo: dict[str, Any], line_id: str, sku: str, picked: int, short: int
) -> None:
    """The node acknowledges, then picks `line_id` short, and no node can fill it: the customer is
    offered options."""
    await p.publish(ack(wo), short_picked(wo, line_id, sku, picked=picked, short=short))
    await p.out.wait(lambda: bool(notified(p, wo["order_id"], "options_offered")), "options offered")


async def test_a_short_pick_is_re_routed_when_within_cost_and_delivery(pipeline: Pipeline) -> None:
    n = ids("X1")
    main, backup = n("DC-MAIN"), n("DC-BACKUP")
    a, b, c = n("A"), n("B"), n("C")
    await pipeline.setup_network(
        node(main, LONDON),
        node(backup, MANCHESTER),
        stock={(main, a): 5, (main, b): 5, (main, c): 5, (backup, c): 5},
    )
    o = order(n("ORD"), [(a, 1), (b, 1), (c, 2)], days=6)
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    assert wo["node_id"] == main
    await pipeline.publish(
        ack(wo),
        short_picked(wo, "3", c, picked=1, short=1),
    )
    await pipeline.out.wait(lambda: len(pipeline.out.released(o.order_id)) == 2, "the re-routed work order")
    rerouted = pipeline.out.released(o.order_id)[1]
    assert rerouted["node_id"] == backup
    assert rerouted["lines"] == [{"line_id": "3", "sku": c, "quantity": 1, "labels": []}]
    assert pipeline.out.cancel_requests(o.order_id) == [], "the main DC still ships what it picked"
    rows = await pipeline.db.fetch(
        "SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1 ORDER BY node_id", c
    )
    assert {r["node_id"]: r["reserved"] for r in rows} == {main: 1, backup: 1}


async def test_a_short_pick_nobody_can_fill_offers_the_customer_options(pipeline: Pipeline) -> None:
    n = ids("X2")
    main = n("DC-MAIN")
    a, b = n("A"), n("B")
    await pipeline.setup_network(node(main, LONDON), stock={(main, a): 5, (main, b): 1})
    o = order(n("ORD"), [(a, 1), (b, 1)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    await short_until_options(pipeline, wo, "2", b, picked=0, short=1)
    [offer] = notified(pipeline, o.order_id, "options_offered")
    assert offer["options"], "the customer is given the choices"
    await pipeline.out.final_state(o.order_id, "needs_attention")
    assert len(pipeline.out.released(o.order_id)) == 1


async def close_with_work(
    p: Pipeline, prefix: str, second_stock: int
) -> tuple[str, str, str, OrderCreated, dict[str, Any]]:
    """Two nodes, the first with 5 units and the second with `second_stock`; an order of 2 released to
    the first, which acknowledges and then closes: (first, second, sku, the order, its work order)."""
    n = ids(prefix)
    first, second = n("DC-FIRST"), n("DC-SECOND")
    sku = n("S")
    await p.setup_network(
        node(first, LONDON), node(second, LEEDS), stock={(first, sku): 5, (second, sku): second_stock}
    )
    o = order(n("ORD"), [(sku, 2)])
    await p.publish(o)
    [wo] = await released(p, o.order_id)
    assert wo["node_id"] == first
    await p.publish(ack(wo))
    await p.publish(NodeStatusChanged(node_id=first, open=False, reason="power cut", changed_at=now()))
    return first, second, sku, o, wo


async def test_a_closed_node_with_open_work_is_re_routed(pipeline: Pipeline) -> None:
    first, second, sku, o, wo = await close_with_work(pipeline, "X3", second_stock=5)
    await pipeline.out.wait(
        lambda: len(pipeline.out.released(o.order_id)) == 2, "work moved off the closed node"
    )
    assert pipeline.out.released(o.order_id)[1]["node_id"] == second
    # The cancel request and the order's state come on different topics, in no set order.
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    [cancel] = pipeline.out.cancel_requests(o.order_id)
    assert cancel["work_order_id"] == wo["work_order_id"]
    rows = await pipeline.db.fetch("SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1", sku)
    assert {r["node_id"]: r["reserved"] for r in rows} == {first: 0, second: 2}
    # The second node takes the work: else its own timer re-routes it, and so on for the rest of the
    # module, under the projection test's feet.
    await pipeline.publish(ack(pipeline.out.released(o.order_id)[1]))


async def test_a_closed_node_that_ships_its_work_after_all_gets_the_repair_undone(pipeline: Pipeline) -> None:
    """The node closes with work in hand, the work moves to another node, and the first node ships it
    anyway: the second node's work order is called back, so the line does not ship twice."""
    _, second, sku, o, wo = await close_with_work(pipeline, "X3C", second_stock=5)
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    await pipeline.out.wait(lambda: len(pipeline.out.released(o.order_id)) == 2, "the work moved")
    moved = pipeline.out.released(o.order_id)[1]
    assert moved["node_id"] == second
    await ships_late_and_the_new_work_is_called_back(pipeline, o, wo, moved, sku)


async def ships_late_and_the_new_work_is_called_back(
    p: Pipeline, o: OrderCreated, wo: dict[str, Any], new: dict[str, Any], sku: str
) -> None:
    """The old work order `wo` ships although its node was asked to cancel it (the request came too
    late): the work order that replaced it, `new`, is called back, and neither node keeps stock."""
    await p.publish(ack(new), shipped(wo, f"TRK-{o.order_id}"))
    await p.out.wait(lambda: len(p.out.cancel_requests(o.order_id)) == 2, "the new work order called back")
    assert [c["work_order_id"] for c in p.out.cancel_requests(o.order_id)] == [
        wo["work_order_id"],
        new["work_order_id"],
    ]
    rows = await p.db.fetch("SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1", sku)
    assert {r["node_id"]: r["reserved"] for r in rows} == {wo["node_id"]: 0, new["node_id"]: 0}
    await p.out.final_state(o.order_id, "shipped")


async def london_and_leeds(p: Pipeline, n: Callable[[str], str]) -> tuple[str, str, str]:
    """A node in London and one in Leeds, each with 5 units of one SKU: (london, leeds, sku)."""
    london, leeds, sku = n("DC-LONDON"), n("DC-LEEDS"), n("S")
    await p.setup_network(node(london, LONDON), node(leeds, LEEDS), stock={(london, sku): 5, (leeds, sku): 5})
    return london, leeds, sku


async def test_an_amended_order_whose_old_work_order_ships_after_all_ships_once(pipeline: Pipeline) -> None:
    """The customer moves the delivery to Leeds, so the order is planned again at the Leeds node, and
    the London node, too late for the cancel request, ships the old work order: the Leeds work order
    is called back, so the line does not ship twice."""
    n = ids("X3A")
    london, leeds, sku = await london_and_leeds(pipeline, n)
    o = order(n("ORD"), [(sku, 2)], to=LONDON)
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    assert wo["node_id"] == london
    await pipeline.publish(ack(wo), OrderAmended(order_id=o.order_id, ship_to=address(LEEDS, "Leeds")))
    await pipeline.out.wait(lambda: len(pipeline.out.released(o.order_id)) == 2, "the order planned again")
    replanned = pipeline.out.released(o.order_id)[1]
    assert replanned["node_id"] == leeds
    await ships_late_and_the_new_work_is_called_back(pipeline, o, wo, replanned, sku)


async def test_an_amendment_that_comes_after_the_old_work_order_shipped_plans_only_the_rest(
    pipeline: Pipeline,
) -> None:
    """London has shipped the order's two units when the customer raises the line to three and moves
    the delivery to Leeds. The re-plan asks for three units at Leeds; reserve holds one, as two
    have left: the Leeds work order carries one unit, and the line ships three in all, not five."""
    n = ids("X3C")
    london, leeds, sku = await london_and_leeds(pipeline, n)
    o = order(n("ORD"), [(sku, 2)], to=LONDON)
    line_id = o.lines[0].line_id
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    await pipeline.publish(ack(wo), shipped(wo, f"TRK-{o.order_id}"))
    await pipeline.out.final_state(o.order_id, "shipped")
    for _ in range(300):  # reserve reads the shipment on its own partition: wait until it has
        if await pipeline.db.fetchval(
            "SELECT sum(consumed) FROM reserve_reservations WHERE shipment_id = $1", wo["shipment_id"]
        ):
            break
        await asyncio.sleep(0.1)
    await pipeline.publish(
        OrderAmended(
            order_id=o.order_id,
            ship_to=address(LEEDS, "Leeds"),
            line_quantities=(LineQuantityChange(line_id=line_id, quantity=3),),
            order_total=o.lines[0].unit_price * 3 + Decimal("4.99"),
        )
    )
    await pipeline.out.wait(
        lambda: len(pipeline.out.released(o.order_id)) == 2,
        lambda: f"the rest released (so far {pipeline.out.statuses[o.order_id]})",
    )
    rest = pipeline.out.released(o.order_id)[1]
    assert rest["node_id"] == leeds
    assert [(x["line_id"], x["quantity"]) for x in rest["lines"]] == [(line_id, 1)]
    rows = await pipeline.db.fetch("SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1", sku)
    assert {r["node_id"]: r["reserved"] for r in rows} == {london: 0, leeds: 1}
    await pipeline.publish(ack(rest), shipped(rest, f"TRK-{o.order_id}-2"))
    await pipeline.out.final_state(o.order_id, "shipped")
    assert len(pipeline.out.released(o.order_id)) == 2


async def test_a_closed_node_whose_work_no_one_can_take_is_asked_to_cancel_it_and_the_lines_wait(
    pipeline: Pipeline,
) -> None:
    """The reroute finds no stock, so the playbook back-orders the lines. The closed node is still
    asked to cancel its work order and its stock given back: it used to keep both, and a node that
    shipped later sent the lines a second time when stock came for the back-order."""
    closing, empty, sku, o, wo = await close_with_work(pipeline, "X3B", second_stock=0)
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    [cancel] = pipeline.out.cancel_requests(o.order_id)
    assert cancel["work_order_id"] == wo["work_order_id"]
    assert len(pipeline.out.released(o.order_id)) == 1, "no other node had the stock"
    rows = await pipeline.db.fetch("SELECT node_id, reserved FROM reserve_ledger WHERE sku = $1", sku)
    assert {r["node_id"]: r["reserved"] for r in rows} == {closing: 0, empty: 0}
    waiting = await pipeline.db.fetch(
        "SELECT line_id, quantity FROM reserve_waiting WHERE order_id = $1", o.order_id
    )
    assert [(r["line_id"], r["quantity"]) for r in waiting] == [(o.lines[0].line_id, 2)]
    await pipeline.out.final_state(o.order_id, "back_ordered")


async def test_a_carrier_delay_past_the_promise_tells_the_customer_the_new_date(pipeline: Pipeline) -> None:
    n = ids("X4")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)], days=3)
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    tracking = n("TRK")
    await pipeline.publish(ack(wo), shipped(wo, tracking))
    new_date = o.promised_delivery_date + timedelta(days=3)
    await pipeline.publish(
        ShipmentDelayed(
            tracking_number=tracking,
            carrier="tcarrier",
            order_id=o.order_id,
            shipment_id=wo["shipment_id"],
            occurred_at=now(),
            new_estimated_delivery=new_date,
            reason="vehicle breakdown",
        )
    )
    await pipeline.out.wait(
        lambda: bool(notified(pipeline, o.order_id, "delayed_new_date")),
        f"the customer told of the delay (exceptions {pipeline.out.exceptions[o.order_id]}, "
        f"notifications {pipeline.out.notifications[o.order_id]})",
    )
    [told] = notified(pipeline, o.order_id, "delayed_new_date")
    assert told["new_promised_date"] == new_date.isoformat()


async def test_a_node_that_never_acknowledges_loses_the_work_when_the_timer_fires(pipeline: Pipeline) -> None:
    n = ids("X5")
    silent, other = n("DC-SILENT"), n("DC-OTHER")
    sku = n("S")
    await pipeline.setup_network(
        node(silent, LONDON), node(other, BRISTOL), stock={(silent, sku): 5, (other, sku): 5}
    )
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    assert wo["node_id"] == silent
    await pipeline.out.wait(
        lambda: len(pipeline.out.released(o.order_id)) == 2, "the work re-routed after the timer", timeout=60
    )
    assert pipeline.out.released(o.order_id)[1]["node_id"] == other
    kinds = [e["kind"] for t, e in pipeline.out.exceptions[o.order_id] if t == "exception.raised.v1"]
    assert kinds == ["not_acknowledged"]
    await pipeline.publish(ack(pipeline.out.released(o.order_id)[1]))  # the other node takes it


async def test_a_delivered_order_ends_delivered_with_its_full_timeline(pipeline: Pipeline) -> None:
    n = ids("X6")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, MANCHESTER), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    tracking = n("TRK")
    lines = (SkuLine(line_id="1", sku=sku, quantity=1),)
    carrier = dict(
        tracking_number=tracking, carrier="tcarrier", order_id=o.order_id, shipment_id=wo["shipment_id"]
    )
    await pipeline.publish(
        ack(wo),
        WorkOrderPicked(
            work_order_id=wo["work_order_id"], order_id=o.order_id, node_id=dc, occurred_at=now(), lines=lines
        ),
        WorkOrderPacked(
            work_order_id=wo["work_order_id"],
            order_id=o.order_id,
            node_id=dc,
            occurred_at=now(),
            packages=(Package(package_id="P1"),),
        ),
        shipped(wo, tracking),
        ShipmentPickedUp(**carrier, occurred_at=now()),
        ShipmentInTransit(**carrier, occurred_at=now(), location="Hub"),
        ShipmentDelivered(**carrier, occurred_at=now()),
    )
    await pipeline.out.final_state(o.order_id, "delivered")
    assert pipeline.out.states(o.order_id) == [
        "received",
        "validated",
        "planned",
        "reserved",
        "released",
        "shipped",
        "delivered",
    ]
    assert [x["kind"] for x in pipeline.out.notifications[o.order_id]] == [
        "order_confirmed",
        "shipped",
        "delivered",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "timeline",
        o.order_id,
        env={**os.environ, "DATABASE_URL": pipeline.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    for expected in (
        "order.created.v1",
        "plan.decided.v1",
        "workorder.released.v1",
        "wms.shipped.v1",
        "carrier.delivered.v1",
        "delivered",
    ):
        assert expected in text, (expected, text)


async def position(p: Pipeline, node_id: str, sku: str) -> tuple[int, int, datetime | None]:
    row = await p.db.fetchrow(
        "SELECT on_hand, reserved, counted_at FROM reserve_ledger WHERE node_id = $1 AND sku = $2",
        node_id,
        sku,
    )
    return (row["on_hand"], row["reserved"], row["counted_at"])


async def until_position(
    p: Pipeline, node_id: str, sku: str, want: tuple[int, int], at: datetime | None
) -> None:
    """Wait until reserve's ledger holds (on_hand, reserved) for the position, counted at `at` (if given)."""
    seen: list[tuple[int, int, datetime | None]] = []

    async def there() -> bool:
        seen.append(await position(p, node_id, sku))
        return seen[-1][:2] == want and (at is None or seen[-1][2] == at)

    deadline = asyncio.get_running_loop().time() + 30
    while not await there():
        assert asyncio.get_running_loop().time() < deadline, (
            f"{node_id}/{sku} stayed {seen[-1]}, wanted {want}"
        )
        await asyncio.sleep(0.05)


async def test_a_shipment_consumes_its_reservation_and_a_count_from_before_it_does_not_undo_that(
    pipeline: Pipeline,
) -> None:
    """Availability is taken once: by the reservation until the goods leave, then by on-hand. A count
    the node took before the shipment left, heard after it, does not put the shipped units back."""
    n = ids("X8")
    dc, sku = n("DC"), n("S")
    await pipeline.setup_network(node(dc, MANCHESTER), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 2)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    counted_before = now()
    assert (await position(pipeline, dc, sku))[:2] == (5, 2)

    await pipeline.publish(ack(wo), shipped(wo, n("TRK")))
    await until_position(pipeline, dc, sku, (3, 0), None)
    consumed = await pipeline.db.fetch(
        "SELECT status, consumed FROM reserve_reservations WHERE order_id = $1", o.order_id
    )
    assert [(r["status"], r["consumed"]) for r in consumed] == [("consumed", 2)]

    # The node's count from before the shipment (5 there then) comes in late: still 3.
    await pipeline.publish(InventorySnapshot(node_id=dc, sku=sku, on_hand=5, as_of=counted_before))
    await until_position(pipeline, dc, sku, (3, 0), counted_before)
    # Its next count, after the shipment, has the 2 gone already: 3 on hand, all 3 can be promised.
    counted_after = now()
    await pipeline.publish(InventorySnapshot(node_id=dc, sku=sku, on_hand=3, as_of=counted_after))
    await until_position(pipeline, dc, sku, (3, 0), counted_after)
    log = await pipeline.db.fetchval("SELECT count(*) FROM reserve_shipped WHERE node_id = $1", dc)
    assert log == 0, "a count after the shipment has seen it"


async def test_a_shipment_that_left_short_holds_nothing_of_what_it_lacked(pipeline: Pipeline) -> None:
    """No node can fill the unit picked short, so no repair moves it: when the shipment leaves with
    what was picked, the missing unit's reservation ends too (it used to stay reserved for good)."""
    n = ids("X9")
    dc = n("DC")
    a, b = n("A"), n("B")
    await pipeline.setup_network(node(dc, LEEDS), stock={(dc, a): 5, (dc, b): 2})
    o = order(n("ORD"), [(a, 1), (b, 2)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    await short_until_options(pipeline, wo, "2", b, picked=1, short=1)
    assert (await position(pipeline, dc, b))[:2] == (2, 2), "until it leaves, the shipment holds both units"
    left = shipped(wo, n("TRK"))
    left = left.model_copy(
        update={"lines": (left.lines[0], left.lines[1].model_copy(update={"quantity": 1}))}
    )
    await pipeline.publish(left)
    # 1 of b left (off on-hand), the missing one is no longer held; the node's count will correct on-hand.
    await until_position(pipeline, dc, b, (1, 0), None)
    await until_position(pipeline, dc, a, (4, 0), None)
    rows = await pipeline.db.fetch(
        "SELECT line_id, status, consumed FROM reserve_reservations WHERE order_id = $1 ORDER BY line_id",
        o.order_id,
    )
    assert [(r["line_id"], r["status"], r["consumed"]) for r in rows] == [
        ("1", "consumed", 1),
        ("2", "consumed", 1),
    ]


async def test_an_exception_no_playbook_resolves_waits_in_the_review_queue(pipeline: Pipeline) -> None:
    n = ids("X7")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    tracking = n("TRK")
    await pipeline.publish(ack(wo), shipped(wo, tracking))
    await pipeline.publish(
        ShipmentException(
            tracking_number=tracking,
            carrier="tcarrier",
            order_id=o.order_id,
            shipment_id=wo["shipment_id"],
            occurred_at=now(),
            code="ADDR-UNKNOWN",
            description="address not found",
        )
    )
    status = await pipeline.out.final_state(o.order_id, "needs_attention")
    assert status["reasons"], "the OMS is told why"
    rows = await pipeline.db.fetch(
        "SELECT kind, reason FROM exceptions_review_queue WHERE order_id = $1", o.order_id
    )
    assert [r["kind"] for r in rows] == ["carrier_exception"] and rows[0]["reason"]


async def test_duplicate_and_out_of_order_events_change_nothing_twice(pipeline: Pipeline) -> None:
    n = ids("X8")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LEEDS), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    [wo] = await released(pipeline, o.order_id)
    tracking = n("TRK")
    carrier = dict(
        tracking_number=tracking, carrier="tcarrier", order_id=o.order_id, shipment_id=wo["shipment_id"]
    )
    delivered = ShipmentDelivered(**carrier, occurred_at=now())
    # The same shipped event twice (new ids: a WMS that resends), the delivery twice, and an acknowledgement late.
    await pipeline.publish(shipped(wo, tracking), shipped(wo, tracking), delivered, delivered, ack(wo))
    await pipeline.out.final_state(o.order_id, "delivered")
    await asyncio.sleep(2)
    states = pipeline.out.states(o.order_id)
    assert states.count("shipped") == 1 and states.count("delivered") == 1 and states[-1] == "delivered"
    assert [x["kind"] for x in pipeline.out.notifications[o.order_id]].count("delivered") == 1
    assert pipeline.out.exceptions[o.order_id] == []


async def test_the_projection_rebuilds_from_the_event_store_to_the_same_result(pipeline: Pipeline) -> None:
    before = [
        dict(r)
        for r in await pipeline.db.fetch(
            "SELECT order_id, state, sequence, reasons FROM status_orders ORDER BY order_id"
        )
    ]
    assert before, "earlier tests left orders behind"
    async with pipeline.db.acquire() as conn:
        rebuilt = await rebuild_projection(conn)
    after = [
        dict(r)
        for r in await pipeline.db.fetch(
            "SELECT order_id, state, sequence, reasons FROM status_orders ORDER BY order_id"
        )
    ]
    assert rebuilt == len(before) and after == before
