"""Returns and exchanges end to end, on the real Kafka and PostgreSQL with every stage running.

Driven only through the public topics, as the OMS and the nodes would: the OMS authorises a
return on `oms.returns.v1`; the orchestrator releases a return work order on `wms.work-orders.v1`;
the node reports on `wms.return-events.v1`; the OMS hears the return's states on `oms.status.v1`;
an exchange's replacement comes out as an ordinary work order; the ledger shows what was restocked.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.contract.common import OrderLine, SkuLine
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import CancelReason, OrderCancelled, OrderCreated
from orchestrator.contract.returns import (
    InspectedLine,
    Replacement,
    ReturnAuthorised,
    ReturnInspected,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
)
from tests.harness import BIRMINGHAM, LONDON, MANCHESTER, Pipeline, ids, node, order, pipeline
from tests.support import publish_events, read_all
from tests.test_execution import ack, shipped

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]


def now() -> datetime:
    return datetime.now(UTC)


async def released(p: Pipeline, order_id: str) -> dict[str, Any]:
    await p.out.final_state(order_id, "released")
    await p.out.wait(lambda: bool(p.out.released(order_id)), f"the work order of {order_id}")
    return p.out.released(order_id)[0]


def return_orders(p: Pipeline, order_id: str, kind: str = "returnorder.released.v1") -> list[dict[str, Any]]:
    return [wo for k, wo in p.out.work_orders[order_id] if k == kind]


def states(p: Pipeline, return_id: str) -> list[str]:
    return [s["state"] for s in p.out.returns[return_id]]


async def until_state(p: Pipeline, return_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    await p.out.wait(
        lambda: state in states(p, return_id),
        f"return {return_id} to reach {state} (so far {states(p, return_id)})",
        timeout,
    )
    return next(s for s in p.out.returns[return_id] if s["state"] == state)


def authorise(
    return_id: str,
    order_id: str,
    sku: str,
    quantity: int = 1,
    *,
    resolution: ReturnResolution = ReturnResolution.REFUND,
    reason: ReturnReason = ReturnReason.CHANGED_MIND,
    replacements: tuple[Replacement, ...] = (),
) -> ReturnAuthorised:
    return ReturnAuthorised(
        return_id=return_id,
        order_id=order_id,
        lines=(ReturnLine(line_id="1", sku=sku, quantity=quantity),),
        reason=reason,
        resolution=resolution,
        replacements=replacements,
        authorised_at=now(),
    )


def receipt(ro: dict[str, Any], quantity: int = 1) -> ReturnReceived:
    line = ro["lines"][0]
    return ReturnReceived(
        return_order_id=ro["return_order_id"],
        return_id=ro["return_id"],
        order_id=ro["order_id"],
        node_id=ro["node_id"],
        occurred_at=now(),
        lines=(SkuLine(line_id=line["line_id"], sku=line["sku"], quantity=quantity),),
    )


def inspection(ro: dict[str, Any], restockable: int, not_restockable: int = 0) -> ReturnInspected:
    line = ro["lines"][0]
    return ReturnInspected(
        return_order_id=ro["return_order_id"],
        return_id=ro["return_id"],
        order_id=ro["order_id"],
        node_id=ro["node_id"],
        occurred_at=now(),
        lines=(
            InspectedLine(
                line_id=line["line_id"],
                sku=line["sku"],
                restockable=restockable,
                not_restockable=not_restockable,
            ),
        ),
    )


def change(return_id: str, order_id: str, resolution: ReturnResolution) -> ReturnResolutionChanged:
    return ReturnResolutionChanged(
        return_id=return_id,
        order_id=order_id,
        resolution=resolution,
        changed_at=now(),
        detail="customer asked",
    )


async def on_hand(p: Pipeline, node_id: str, sku: str) -> int:
    value = await p.db.fetchval(
        "SELECT on_hand FROM reserve_ledger WHERE node_id = $1 AND sku = $2", node_id, sku
    )
    return int(value)


async def until_on_hand(p: Pipeline, node_id: str, sku: str, units: int) -> None:
    for _ in range(300):
        if await on_hand(p, node_id, sku) == units:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{node_id} never had {units} x {sku} on hand (has {await on_hand(p, node_id, sku)})"
    )


async def timeline(p: Pipeline, order_id: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "timeline",
        order_id,
        env={**os.environ, "DATABASE_URL": p.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def shipped_from_london(
    p: Pipeline, prefix: str
) -> tuple[OrderCreated, str, str, Callable[[str], str]]:
    """An order of 2 units shipped from London to a customer in Manchester, whose DC sells the SKU too
    (out of stock today): (the order, the Manchester DC, the SKU, the test's id maker)."""
    n = ids(prefix)
    shipper, returns_dc = n("DC-LONDON"), n("DC-MANCHESTER")
    sku = n("S")
    await p.setup_network(
        node(shipper, LONDON), node(returns_dc, MANCHESTER), stock={(shipper, sku): 5, (returns_dc, sku): 0}
    )
    o = order(n("ORD"), [(sku, 2)], to=MANCHESTER)
    await p.publish(o)
    await released(p, o.order_id)
    return o, returns_dc, sku, n


async def test_a_return_received_and_restockable_goes_back_into_stock_and_is_refunded(
    pipeline: Pipeline,
) -> None:
    o, returns_dc, sku, n = await shipped_from_london(pipeline, "R1")

    rid = n("RMA")
    request = Envelope.new(authorise(rid, o.order_id, sku), source="test/oms")
    # The OMS sends it twice: one return work order, one refund.
    await publish_events(pipeline.bootstrap, "oms.returns.v1", [request, request])
    await until_state(pipeline, rid, "awaiting_return")
    [ro] = return_orders(pipeline, o.order_id)
    assert ro["node_id"] == returns_dc, "the nearest node that sells the SKU"
    assert ro["label"]["carrier"] == {"carrier": "tcarrier", "service_id": "t-ground"}
    assert ro["label"]["from_address"]["postal_code"] == o.ship_to.postal_code  # type: ignore[union-attr]
    assert ro["lines"] == [{"line_id": "1", "sku": sku, "quantity": 1, "labels": []}]

    got = Envelope.new(receipt(ro), source="test/wms")
    await publish_events(pipeline.bootstrap, "wms.return-events.v1", [got, got])
    refunded = await until_state(pipeline, rid, "refunded")
    assert (refunded["amount"], refunded["currency"]) == ("10.00", "GBP")

    await pipeline.publish(inspection(ro, restockable=1))
    done = await until_state(pipeline, rid, "completed")
    assert done["restocked"] == [{"line_id": "1", "sku": sku, "quantity": 1}]
    await until_on_hand(pipeline, returns_dc, sku, 1)
    assert states(pipeline, rid) == [
        "authorised",
        "awaiting_return",
        "received",
        "refunded",
        "inspected",
        "completed",
    ]
    assert [s["sequence"] for s in pipeline.out.returns[rid]] == [1, 2, 3, 4, 5, 6]
    assert len(return_orders(pipeline, o.order_id)) == 1

    text = await timeline(pipeline, o.order_id)
    for expected in (
        "return.authorised.v1",
        f"return work order RO-{rid} released to {returns_dc}",
        "return.received.v1",
        f"{returns_dc} inspected return {rid}: {sku} 1 restockable",
        f"return {rid} refunded 10.00 GBP",
        f"return {rid} completed",
    ):
        assert expected in text, (expected, text)


async def test_a_return_not_fit_to_sell_is_credited_and_not_restocked(pipeline: Pipeline) -> None:
    n = ids("R2")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, BIRMINGHAM), stock={(dc, sku): 3})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await released(pipeline, o.order_id)
    rid = n("RMA")
    await pipeline.publish(authorise(rid, o.order_id, sku, resolution=ReturnResolution.STORE_CREDIT))
    await until_state(pipeline, rid, "awaiting_return")
    [ro] = return_orders(pipeline, o.order_id)
    before = await on_hand(pipeline, dc, sku)
    # The node's inspection arrives before its receipt: the receipt is implied, the late one changes nothing.
    await pipeline.publish(inspection(ro, restockable=0, not_restockable=1))
    await until_state(pipeline, rid, "completed")
    await pipeline.publish(receipt(ro))
    await asyncio.sleep(1)
    assert states(pipeline, rid) == [
        "authorised",
        "awaiting_return",
        "received",
        "credited",
        "inspected",
        "completed",
    ]
    credited = pipeline.out.returns[rid][3]
    assert (credited["amount"], credited["resolution"]) == ("10.00", "store_credit")
    assert pipeline.out.returns[rid][-1]["not_restocked"] == [{"line_id": "1", "sku": sku, "quantity": 1}]
    assert await on_hand(pipeline, dc, sku) == before, "nothing fit to sell: nothing back into stock"


async def test_a_refund_without_return_below_the_threshold(pipeline: Pipeline) -> None:
    n = ids("R3")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    cheap = OrderLine(line_id="1", sku=sku, quantity=2, unit_price=Decimal("4.00"))
    o = order(n("ORD"), [cheap])
    await pipeline.publish(o)
    await released(pipeline, o.order_id)
    rid = n("RMA")
    await pipeline.publish(authorise(rid, o.order_id, sku, 2))
    done = await until_state(pipeline, rid, "completed")
    assert states(pipeline, rid) == ["authorised", "refunded", "completed"]
    assert (done["amount"], done["node_id"], done["return_order_id"]) == ("8.00", None, None)
    assert return_orders(pipeline, o.order_id) == [], "no label, no return work order: the customer keeps it"


async def test_an_exchange_at_once_ships_the_replacement_before_the_goods_come_back(
    pipeline: Pipeline,
) -> None:
    n = ids("R4")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    [first] = [await released(pipeline, o.order_id)]
    rid = n("RMA")
    # Damaged: by policy the replacement ships at once.
    await pipeline.publish(
        authorise(rid, o.order_id, sku, resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DAMAGED)
    )
    exchanged = await until_state(pipeline, rid, "exchanged")
    assert "received" not in states(pipeline, rid)
    replacement = [
        wo for wo in pipeline.out.released(o.order_id) if wo["work_order_id"] != first["work_order_id"]
    ]
    assert [wo["work_order_id"] for wo in replacement] == exchanged["replacement_work_order_ids"]
    assert replacement[0]["lines"] == [{"line_id": f"{rid}.1", "sku": sku, "quantity": 1, "labels": []}]
    assert replacement[0]["node_id"] == dc
    assert (
        await pipeline.db.fetchval(
            "SELECT reserved FROM reserve_ledger WHERE node_id = $1 AND sku = $2", dc, sku
        )
        == 2
    )
    [ro] = return_orders(pipeline, o.order_id)
    await pipeline.publish(receipt(ro))
    await until_state(pipeline, rid, "received")
    await pipeline.publish(inspection(ro, restockable=1))
    await until_state(pipeline, rid, "completed")
    await until_on_hand(pipeline, dc, sku, 6)
    assert states(pipeline, rid) == [
        "authorised",
        "awaiting_return",
        "exchanged",
        "received",
        "inspected",
        "completed",
    ]
    assert all(s["amount"] is None for s in pipeline.out.returns[rid]), "an exchange refunds nothing"
    assert pipeline.out.cancel_requests(o.order_id) == [], "the original shipment goes on"


async def test_an_exchange_after_receipt_ships_another_size_once_the_goods_are_back(
    pipeline: Pipeline,
) -> None:
    n = ids("R5")
    dc = n("DC")
    small, large = n("S"), n("L")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, small): 5, (dc, large): 5})
    o = order(n("ORD"), [(small, 1)])
    await pipeline.publish(o)
    await released(pipeline, o.order_id)
    rid = n("RMA")
    swap = Replacement(line_id="1", sku=large, quantity=1)
    await pipeline.publish(
        authorise(
            rid,
            o.order_id,
            small,
            resolution=ReturnResolution.EXCHANGE,
            reason=ReturnReason.SIZE_OR_FIT,
            replacements=(swap,),
        )
    )
    await until_state(pipeline, rid, "awaiting_return")
    await asyncio.sleep(1.5)
    assert len(pipeline.out.released(o.order_id)) == 1, (
        "after receipt: nothing ships before the goods are back"
    )
    [ro] = return_orders(pipeline, o.order_id)
    await pipeline.publish(receipt(ro))
    exchanged = await until_state(pipeline, rid, "exchanged")
    [replacement] = [
        wo
        for wo in pipeline.out.released(o.order_id)
        if wo["work_order_id"] in exchanged["replacement_work_order_ids"]
    ]
    assert replacement["lines"] == [{"line_id": f"{rid}.1", "sku": large, "quantity": 1, "labels": []}]
    assert states(pipeline, rid) == ["authorised", "awaiting_return", "received", "exchanged"]


async def test_a_resolution_change_mid_way_stops_what_no_longer_applies_and_starts_the_new(
    pipeline: Pipeline,
) -> None:
    n = ids("R6")
    dc = n("DC")
    sku, cheap_sku = n("S"), n("C")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5, (dc, cheap_sku): 5})
    o = order(
        n("ORD"), [(sku, 1), OrderLine(line_id="2", sku=cheap_sku, quantity=1, unit_price=Decimal("4.00"))]
    )
    await pipeline.publish(o)
    await released(pipeline, o.order_id)

    # Return and replace becomes return for credit, then back: the replacement waits for the goods
    # (after receipt), so it is never sent for credit, and is sent once it is an exchange again.
    rid = n("RMA")
    await pipeline.publish(
        authorise(rid, o.order_id, sku, resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.SIZE_OR_FIT)
    )
    await until_state(pipeline, rid, "awaiting_return")
    await pipeline.publish(change(rid, o.order_id, ReturnResolution.STORE_CREDIT))
    await pipeline.out.wait(lambda: len(pipeline.out.returns[rid]) == 3, "the change to credit")
    to_credit = pipeline.out.returns[rid][2]
    assert (to_credit["resolution"], to_credit["reasons"][0]["code"]) == (
        "store_credit",
        "resolution_changed",
    )
    assert "not sent" in to_credit["reasons"][0]["message"]
    await pipeline.publish(change(rid, o.order_id, ReturnResolution.EXCHANGE))
    await pipeline.out.wait(lambda: len(pipeline.out.returns[rid]) == 4, "the change back to exchange")
    [ro] = return_orders(pipeline, o.order_id)
    await pipeline.publish(receipt(ro))
    exchanged = await until_state(pipeline, rid, "exchanged")
    assert len(exchanged["replacement_work_order_ids"]) == 1
    assert [s["resolution"] for s in pipeline.out.returns[rid]][-1] == "exchange"
    assert "credited" not in states(pipeline, rid)

    # An exchange of the cheap line becomes a refund: below the threshold the customer keeps it,
    # so the return work order already out is cancelled and the refund is due at once.
    cheap = n("RMA-C")
    await pipeline.publish(
        ReturnAuthorised(
            return_id=cheap,
            order_id=o.order_id,
            lines=(ReturnLine(line_id="2", sku=cheap_sku, quantity=1),),
            reason=ReturnReason.SIZE_OR_FIT,
            resolution=ReturnResolution.EXCHANGE,
            authorised_at=now(),
        )
    )
    await until_state(pipeline, cheap, "awaiting_return")
    await pipeline.publish(change(cheap, o.order_id, ReturnResolution.REFUND))
    refunded = await until_state(pipeline, cheap, "completed")
    assert refunded["amount"] == "4.00"
    await pipeline.out.wait(
        lambda: bool(return_orders(pipeline, o.order_id, "returnorder.cancel_requested.v1")),
        "the cancel request",
    )
    [cancelled] = return_orders(pipeline, o.order_id, "returnorder.cancel_requested.v1")
    assert (cancelled["return_order_id"], cancelled["reason"]) == (f"RO-{cheap}", "resolution_changed")

    text = await timeline(pipeline, o.order_id)
    for expected in (
        f"OMS changed return {rid} to store credit",
        f"OMS changed return {rid} to exchange",
        f"exchange for return {rid}",
        f"asked to cancel return work order RO-{cheap} (resolution_changed)",
        f"return {cheap} refunded 4.00 GBP",
    ):
        assert expected in text, (expected, text)


async def test_a_return_the_order_cannot_have_sent_is_dead_lettered_with_the_reason(
    pipeline: Pipeline,
) -> None:
    n = ids("R7")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await released(pipeline, o.order_id)
    too_many = Envelope.new(authorise(n("RMA"), o.order_id, sku, 2), source="test/oms")
    await publish_events(pipeline.bootstrap, "oms.returns.v1", [too_many])
    dead = await read_all(pipeline.bootstrap, "oms.returns.v1.dlq", expect=1, timeout=30)
    mine = [dict((k, v.decode()) for k, v in d.headers) for d in dead]
    [reason] = [h["dlq_reason"] for h in mine if h.get("ce_id") == too_many.id]
    assert reason == f"return of 2 x {sku} on line 1: the order has 1, 1 not already in another return"
    # The stage goes on: a good return of the same order is handled.
    good = n("RMA-OK")
    await pipeline.publish(authorise(good, o.order_id, sku, 1))
    await until_state(pipeline, good, "awaiting_return")


async def test_goods_of_a_cancelled_order_that_shipped_anyway_can_come_back(pipeline: Pipeline) -> None:
    """The cancellation reached the node after its work left: the OMS authorises the return of what
    the customer received, and it is taken. (A return authorised before monitor has seen the
    shipment waits for it: `test_returns_parking`.)"""
    n = ids("R8")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    sent = order(n("ORD-SENT"), [(sku, 1)])
    await pipeline.publish(sent)
    wo = await released(pipeline, sent.order_id)
    await pipeline.publish(ack(wo), shipped(wo, n("TRK")))
    await pipeline.out.final_state(sent.order_id, "shipped")
    await pipeline.publish(OrderCancelled(order_id=sent.order_id, reason=CancelReason.CUSTOMER_REQUEST))
    back = n("RMA-SENT")
    await pipeline.publish(authorise(back, sent.order_id, sku, 1))
    await until_state(pipeline, back, "awaiting_return")
