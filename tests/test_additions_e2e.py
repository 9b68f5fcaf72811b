"""Automatic additions end to end on the real Kafka and PostgreSQL, under the packaged policy:
a free sample for gold and platinum customers, a protective sleeve per fragile unit.

What a user checks: the work order a node receives carries the added lines,
the ledger holds their stock, `explain` and the timeline say why, an order no
rule applies to gets nothing, an amendment does not add twice, and an
addition the shipping node lacks is left out rather than splitting or holding
up the order.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from orchestrator.api.queries import order_explanation, order_timeline, timeline_text
from orchestrator.contract.common import CustomerTier, OrderLine, ProductLabel
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.orders import LineQuantityChange, OrderAmended, OrderCreated
from orchestrator.domain.additions import AdditionRule
from orchestrator.domain.policy import load_policy
from orchestrator.domain.sourcing import TIMES
from tests.harness import LEEDS, LONDON, Pipeline, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]  # the module-scoped fixture, imported so pytest finds it


def _rule(name: str) -> AdditionRule:
    return next(r for r in load_policy().additions if r.name == name)


SAMPLE = _rule("free-sample").add.sku
SLEEVE = _rule("fragile-packaging").add.sku


async def stock_shared(pipeline: Pipeline, stock: dict[tuple[str, str], int]) -> None:
    """Stock of SKUs every test of the module shares (the additions' own): wait for these rows only,
    since other tests' nodes hold the same SKUs."""
    await pipeline.publish(
        *(
            InventorySnapshot(node_id=n, sku=s, on_hand=q, safety_stock=0, as_of=datetime.now(UTC))
            for (n, s), q in stock.items()
        )
    )
    deadline = time.monotonic() + 60
    while True:
        rows = await pipeline.db.fetch(
            "SELECT node_id, sku, on_hand FROM reserve_ledger WHERE node_id = ANY($1::text[])",
            sorted({n for n, _ in stock}),
        )
        have = {(r["node_id"], r["sku"]): r["on_hand"] for r in rows}
        if all(have.get(key) == units for key, units in stock.items()):
            return
        assert time.monotonic() < deadline, "the additions' stock never reached the ledger"
        await asyncio.sleep(0.1)


async def reserved(pipeline: Pipeline, node_id: str, sku: str) -> int:
    value = await pipeline.db.fetchval(
        "SELECT reserved FROM reserve_ledger WHERE node_id = $1 AND sku = $2", node_id, sku
    )
    return int(value or 0)


async def timeline(pipeline: Pipeline, order_id: str, expected: str) -> str:
    """The order's timeline as `orchestrator timeline` prints it, once it says `expected`."""
    deadline = time.monotonic() + 30
    while True:
        text = timeline_text(order_id, None, await order_timeline(pipeline.db, order_id))
        if expected in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


def gold(o: OrderCreated) -> OrderCreated:
    return o.model_copy(update={"customer_tier": CustomerTier.GOLD})


def lines_of(work_order: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(x["line_id"], x["sku"], x["quantity"]) for x in work_order["lines"]]


async def test_a_gold_customers_parcel_carries_the_free_sample_and_says_why(pipeline: Pipeline) -> None:
    n = ids("AD1")
    dc = n("DC")
    kettle = n("KETTLE")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, kettle): 5})
    await stock_shared(pipeline, {(dc, SAMPLE): 10})
    o = gold(order(n("ORD"), [(kettle, 1)]))
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert lines_of(wo) == [("1", kettle, 1), ("add-free-sample", SAMPLE, 1)]
    assert await reserved(pipeline, dc, SAMPLE) == 1, "the sample's unit is held like any other"
    explanation = await order_explanation(pipeline.db, o.order_id)
    assert explanation is not None
    assert (
        f"Added line add-free-sample ({SAMPLE} {TIMES}1) ships from {dc} in shipment 1 (policy rule "
        "free-sample: Gold and platinum customers get a free sample with their order.)"
    ) in explanation["text"]
    text = await timeline(pipeline, o.order_id, "additions shipping")
    assert (
        f"validate: validated - policy added add-free-sample ({SAMPLE} x1): Gold and platinum customers "
        "get a free sample with their order."
    ) in text, text
    assert f"additions shipping: add-free-sample ({SAMPLE} x1)" in text, text


async def test_an_order_no_rule_applies_to_gets_nothing_added(pipeline: Pipeline) -> None:
    n = ids("AD2")
    dc = n("DC")
    kettle = n("KETTLE")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, kettle): 5})
    await stock_shared(pipeline, {(dc, SAMPLE): 10, (dc, SLEEVE): 10})
    o = order(n("ORD"), [(kettle, 2)])  # a standard customer, nothing fragile, a small web order
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert lines_of(wo) == [("1", kettle, 2)]
    assert (await reserved(pipeline, dc, SAMPLE), await reserved(pipeline, dc, SLEEVE)) == (0, 0)
    explanation = await order_explanation(pipeline.db, o.order_id)
    assert explanation is not None
    assert [line["line_id"] for line in explanation["plan"]["order"]["lines"]] == ["1"]
    assert "Added line" not in explanation["text"]
    text = await timeline(pipeline, o.order_id, "plan.decided.v1")
    assert "plan.decided.v1" in text and "addition" not in text and "policy added" not in text, text


async def test_an_amendment_re_plans_the_additions_without_adding_them_twice(pipeline: Pipeline) -> None:
    n = ids("AD3")
    dc = n("DC")
    vase = n("VASE")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, vase): 5})
    await stock_shared(pipeline, {(dc, SAMPLE): 10, (dc, SLEEVE): 10})
    fragile = OrderLine(
        line_id="1", sku=vase, quantity=1, unit_price=Decimal("10.00"), labels=(ProductLabel.FRAGILE,)
    )
    o = gold(order(n("ORD"), [fragile]))
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [first] = pipeline.out.released(o.order_id)
    assert lines_of(first) == [
        ("1", vase, 1),
        ("add-free-sample", SAMPLE, 1),
        ("add-fragile-packaging", SLEEVE, 1),
    ]

    await pipeline.publish(
        OrderAmended(
            order_id=o.order_id,
            line_quantities=(LineQuantityChange(line_id="1", quantity=3),),
            order_total=Decimal("34.99"),
        )
    )
    await pipeline.out.wait(lambda: len(pipeline.out.released(o.order_id)) == 2, "the re-planned work order")
    second = pipeline.out.released(o.order_id)[-1]
    assert lines_of(second) == [
        ("1", vase, 3),
        ("add-free-sample", SAMPLE, 1),
        ("add-fragile-packaging", SLEEVE, 3),
    ], "one sample still, a sleeve for each of the three vases"
    # The cancel request and the order's state come on different topics, in no set order.
    await pipeline.out.wait(lambda: bool(pipeline.out.cancel_requests(o.order_id)), "a cancel request")
    [cancel] = pipeline.out.cancel_requests(o.order_id)
    assert cancel["work_order_id"] == first["work_order_id"]
    # The first plan's units went back: the ledger holds exactly what the new work order carries.
    assert (await reserved(pipeline, dc, SAMPLE), await reserved(pipeline, dc, SLEEVE)) == (1, 3)
    explanation = await order_explanation(pipeline.db, o.order_id)
    assert explanation is not None and explanation["plan_version"] == 2
    assert [line["line_id"] for line in explanation["plan"]["order"]["lines"]] == [
        "1",
        "add-free-sample",
        "add-fragile-packaging",
    ]


async def test_a_sample_the_shipping_node_lacks_is_left_out_and_the_order_ships_whole(
    pipeline: Pipeline,
) -> None:
    n = ids("AD4")
    near, far = n("DC-NEAR"), n("DC-FAR")
    kettle = n("KETTLE")
    await pipeline.setup_network(node(near, LONDON), node(far, LEEDS), stock={(near, kettle): 5})
    # Only the far DC has samples: fetching one from there would mean a second parcel.
    await stock_shared(pipeline, {(far, SAMPLE): 10})
    o = gold(order(n("ORD"), [(kettle, 1)]))
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    [wo] = pipeline.out.released(o.order_id)
    assert wo["node_id"] == near and lines_of(wo) == [("1", kettle, 1)]
    assert pipeline.out.states(o.order_id) == ["received", "validated", "planned", "reserved", "released"]
    assert await reserved(pipeline, far, SAMPLE) == 0
    explanation = await order_explanation(pipeline.db, o.order_id)
    assert explanation is not None
    assert explanation["plan"]["outcome"] == "ship" and explanation["plan"]["backordered"] == []
    assert (
        f"Added line add-free-sample ({SAMPLE} {TIMES}1) is left out: no node shipping the order ({near}) "
        f"has 1 {SAMPLE} to spare"
    ) in explanation["text"]
    text = await timeline(pipeline, o.order_id, "additions left out")
    assert f"additions left out: add-free-sample ({SAMPLE} x1)" in text, text
