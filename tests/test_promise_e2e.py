"""The promise API end to end: its views follow the real topics while every stage runs, and the order
placed after a promise gets the plan it was promised, or says why not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest

from orchestrator.contract.common import Package, SkuLine
from orchestrator.contract.execution import WorkOrderShipped
from orchestrator.contract.inventory import DeltaReason, InventoryDelta, InventorySnapshot
from orchestrator.promise.service import RunningPromise, start_promise
from orchestrator.settings import Settings
from tests.harness import LEEDS, LONDON, MANCHESTER, Pipeline, address, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]


@pytest.fixture(scope="module")
async def promise_api(pipeline: Pipeline) -> AsyncIterator[str]:
    settings = Settings(
        kafka_bootstrap=pipeline.bootstrap,
        database_url=pipeline.database_url,
        instance_id="promise-test",
        http_port=0,
    )
    running: RunningPromise = await start_promise(settings, pipeline.deps.policy, port=0)
    host, port = running.addresses[0]
    url = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while (await http.get(f"{url}/healthz")).status != 200:
                assert time.monotonic() < deadline, "the promise views never caught up"
                await asyncio.sleep(0.1)
        yield url
    finally:
        await running.close()


async def post(url: str, body: object) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/promise", json=body) as resp:
        return resp.status, orjson.loads(await resp.read())


async def available(url: str, sku: str) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/availability", params={"sku": sku}) as resp,
    ):
        assert resp.status == 200
        (answer,) = orjson.loads(await resp.read())["skus"]
        return {n["node_id"]: n["available"] for n in answer["nodes"]}


async def wait_available(url: str, sku: str, want: dict[str, int], timeout: float = 30) -> float:
    """Seconds until the promise API shows `want` for `sku`."""
    started = time.monotonic()
    while (seen := await available(url, sku)) != want:
        assert time.monotonic() - started < timeout, f"availability of {sku} stayed {seen}, wanted {want}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def latest_plan(pipeline: Pipeline, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        raw = await pipeline.db.fetchval(
            "SELECT plan_json FROM decide_plans WHERE order_id = $1 ORDER BY plan_version DESC LIMIT 1",
            order_id,
        )
        if raw is not None:
            return dict(orjson.loads(raw))
        assert time.monotonic() < deadline, f"no plan for {order_id}"
        await asyncio.sleep(0.1)


def cart(*lines: tuple[str, int]) -> dict[str, object]:
    return {
        "cart": [{"sku": sku, "quantity": q} for sku, q in lines],
        "ship_to": address(LEEDS, "Leeds").model_dump(mode="json"),
        "delivery_options": [{"kind": "standard"}, {"kind": "next_day"}],
    }


def placed(order_id: str, lines: list[tuple[str, int]], option: dict[str, Any]) -> Any:
    the_order = order(order_id, lines, to=LEEDS)
    return the_order.model_copy(
        update={
            "promised_delivery_date": date.fromisoformat(option["promised_delivery_date"]),
            "promise_token": option["promise_token"],
        }
    )


def shipments(plan_or_option: dict[str, Any]) -> list[tuple[str, str, str, list[tuple[str, int]]]]:
    return sorted(
        (
            s["node_id"],
            s["carrier"]["service_id"],
            str(s["promised_delivery_date"]),
            sorted((line["sku"], line["quantity"]) for line in s["lines"]),
        )
        for s in plan_or_option["shipments"]
    )


async def test_the_order_gets_the_plan_it_was_promised_and_a_changed_stock_is_seen_within_a_second(
    pipeline: Pipeline, promise_api: str
) -> None:
    n = ids("PR")
    north, south = n("DC-MANCHESTER"), n("DC-LONDON")
    kettle, toaster = n("KETTLE"), n("TOASTER")
    await pipeline.setup_network(
        node(north, MANCHESTER),
        node(south, LONDON),
        stock={(north, kettle): 5, (south, kettle): 5, (north, toaster): 3, (south, toaster): 3},
    )
    await wait_available(promise_api, kettle, {north: 5, south: 5})

    status, promise = await post(promise_api, cart((kettle, 2), (toaster, 1)))
    assert status == 200, promise
    standard, next_day = promise["options"]
    assert standard["outcome"] == "ship" and not standard["split"]
    assert [s["node_id"] for s in standard["shipments"]] == [north]  # Manchester is nearer Leeds
    assert next_day["promised_delivery_date"] <= standard["promised_delivery_date"]
    assert {a["sku"]: a["network"] for a in promise["availability"]} == {kettle: 10, toaster: 6}

    # The order comes with the promise: decide-node makes the same plan, and says so.
    first = n("ORDER-1")
    await pipeline.publish(placed(first, [(kettle, 2), (toaster, 1)], standard))
    plan = await latest_plan(pipeline, first)
    assert shipments(plan) == shipments(standard)
    assert any(s.startswith("As promised at") for s in plan["explanation"]), plan["explanation"]
    # Its reservation reaches the promise view from the reservations topic.
    await wait_available(promise_api, kettle, {north: 3, south: 5})

    # The WMS reports a sale at Manchester: the promise API sees it within a second.
    await pipeline.publish(
        InventoryDelta(
            node_id=north, sku=kettle, change=-3, reason=DeltaReason.SALE, as_of=plan["decided_at"]
        )
    )
    seen_after = await wait_available(promise_api, kettle, {north: 0, south: 5})
    assert seen_after < 1.0, f"the sale took {seen_after:.2f} s to reach the promise API"

    # An order carrying the earlier promise now ships from London, and its explanation says why.
    second = n("ORDER-2")
    await pipeline.publish(placed(second, [(kettle, 2), (toaster, 1)], standard))
    plan = await latest_plan(pipeline, second)
    assert north not in {
        s["node_id"] for s in plan["shipments"] if any(line["sku"] == kettle for line in s["lines"])
    }
    (sentence,) = [
        s for s in plan["explanation"] if s.startswith(("As promised", "Differs from the promise"))
    ]
    assert sentence.startswith("Differs from the promise made at")
    assert f"{north} was to send 2 of {kettle}" in sentence

    # A fresh promise on the same state is the plan that order got.
    _, again = await post(promise_api, cart((kettle, 2), (toaster, 1)))
    assert shipments(again["options"][0]) == shipments(plan)


async def test_a_bad_request_gets_the_reason_and_the_api_keeps_answering(promise_api: str) -> None:
    status, body = await post(promise_api, {"cart": [{"sku": "A", "quantity": 0}]})
    assert status == 400 and "quantity" in body["detail"]
    status, body = await post(
        promise_api, {"cart": [{"sku": "A", "quantity": 1, "labels": ["fragile", "fragile"]}]}
    )
    assert status == 400 and "labels must not repeat: fragile" in body["detail"]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{promise_api}/v1/promise", data=b"{not json") as resp:
            assert resp.status == 400 and "not JSON" in (await resp.json())["title"]
        async with http.get(f"{promise_api}/v1/availability") as resp:
            assert resp.status == 400
        async with http.get(f"{promise_api}/openapi.json") as resp:
            assert (await resp.json())["paths"]["/v1/promise"]["post"]["operationId"] == "promise"
        async with http.get(f"{promise_api}/metrics") as resp:
            text = await resp.text()
            assert 'orchestrator_promise_requests_total{endpoint="/v1/promise",status="400"}' in text
    status, _ = await post(promise_api, cart(("ANY-SKU", 1)))
    assert status == 200


async def test_a_shipped_order_and_the_count_after_it_leave_what_can_be_promised_unchanged(
    pipeline: Pipeline, promise_api: str
) -> None:
    """Before the goods leave, the reservation holds them; after, the node's count lacks them. The
    shipment consumes the reservation, so they are never taken off availability twice."""
    n = ids("PS")
    dc, kettle = n("DC"), n("KETTLE")
    await pipeline.setup_network(node(dc, MANCHESTER), stock={(dc, kettle): 5})
    await wait_available(promise_api, kettle, {dc: 5})
    the_order = order(n("ORDER"), [(kettle, 2)], to=LEEDS)
    await pipeline.publish(the_order)
    await pipeline.out.final_state(the_order.order_id, "released")
    [wo] = pipeline.out.released(the_order.order_id)
    await wait_available(promise_api, kettle, {dc: 3})

    await pipeline.publish(
        WorkOrderShipped(
            work_order_id=wo["work_order_id"],
            order_id=the_order.order_id,
            node_id=dc,
            occurred_at=datetime.now(UTC),
            shipment_id=wo["shipment_id"],
            carrier=wo["carrier"]["carrier"],
            service_id=wo["carrier"]["service_id"],
            tracking_number=n("TRK"),
            packages=(Package(package_id=n("P")),),
            lines=tuple(
                SkuLine(line_id=x["line_id"], sku=x["sku"], quantity=x["quantity"]) for x in wo["lines"]
            ),
        )
    )
    deadline = time.monotonic() + 30
    while (
        ledger := await pipeline.db.fetchrow(
            "SELECT on_hand, reserved FROM reserve_ledger WHERE node_id = $1 AND sku = $2", dc, kettle
        )
    )["reserved"] != 0:
        assert time.monotonic() < deadline, f"the shipment never consumed the reservation: {dict(ledger)}"
        await asyncio.sleep(0.05)
    assert ledger["on_hand"] == 3
    # The node's next count finds one more than the 3 left: all 4 can be promised (were the shipped
    # 2 still reserved, 2 could).
    await pipeline.publish(InventorySnapshot(node_id=dc, sku=kettle, on_hand=4, as_of=datetime.now(UTC)))
    await wait_available(promise_api, kettle, {dc: 4})
    _, again = await post(promise_api, cart((kettle, 4)))
    assert again["options"][0]["outcome"] == "ship", again["options"][0]["explanation"]


async def test_a_promise_does_not_offer_the_stock_a_pre_order_is_waiting_for(
    pipeline: Pipeline, promise_api: str
) -> None:
    """Stock that came in before a pre-order's release day stays the pre-order's: decide-node plans a
    new order behind it, and so must the promise."""
    n = ids("PQ")
    dc, game = n("DC"), n("GAME")
    await pipeline.setup_network(node(dc, MANCHESTER), stock={(dc, game): 3})
    release = datetime.now(UTC).date() + timedelta(days=3)
    pre = order(n("PRE"), [(game, 2)], to=LEEDS, days=6)
    pre = pre.model_copy(update={"lines": (pre.lines[0].model_copy(update={"release_date": release}),)})
    await pipeline.publish(pre)
    # Reserve's queue owes the pre-order 2 of the 3: the promise can offer 1.
    await wait_available(promise_api, game, {dc: 1})
    status, promise = await post(promise_api, cart((game, 2)))
    assert status == 200, promise
    standard = promise["options"][0]
    assert standard["outcome"] != "ship" and standard["short"] == [{"sku": game, "quantity": 1}], standard

    # An order placed now gets what the promise said: 1 ships, 1 waits behind the pre-order.
    later = order(n("LATER"), [(game, 2)], to=LEEDS)
    await pipeline.publish(later)
    plan = await latest_plan(pipeline, later.order_id)
    assert plan["outcome"] == standard["outcome"]
    assert shipments(plan) == shipments(standard)


async def test_a_warehouse_on_holiday_is_promised_and_planned_from_its_next_working_day(
    pipeline: Pipeline, promise_api: str
) -> None:
    n = ids("HOL")
    north, kettle = n("DC-MANCHESTER"), n("KETTLE")
    # The warehouse rests for the next four days of its calendar, whatever today is.
    london = ZoneInfo("Europe/London")
    today = datetime.now(london).date()
    rest = tuple(today + timedelta(days=d) for d in range(4))
    resting = node(north, MANCHESTER).model_copy(update={"non_working_days": rest})
    await pipeline.setup_network(resting, stock={(north, kettle): 5})
    await wait_available(promise_api, kettle, {north: 5})

    status, promise = await post(promise_api, cart((kettle, 1)))
    assert status == 200, promise
    standard = promise["options"][0]
    [shipment] = standard["shipments"]
    ships_on = datetime.fromisoformat(shipment["ship_by"]).astimezone(london).date()
    # Its first working day after the holidays: Monday to Friday, past the last of them.
    first = rest[-1] + timedelta(days=1)
    while first.weekday() > 4:
        first += timedelta(days=1)
    assert ships_on == first

    # The order placed with that promise gets that plan, and takes a slot of that day, not today's.
    placed_order = n("ORDER")
    await pipeline.publish(placed(placed_order, [(kettle, 1)], standard))
    plan = await latest_plan(pipeline, placed_order)
    assert shipments(plan) == shipments(standard)
    assert [s["capacity"]["day"] for s in plan["shipments"]] == [ships_on.isoformat()]
    # Reserve holds it after decide-node planned it: wait for its slot.
    deadline = time.monotonic() + 60
    while not (
        slots := await pipeline.db.fetch(
            "SELECT day, shipments FROM reserve_node_load WHERE node_id = $1 ORDER BY day", north
        )
    ):
        assert time.monotonic() < deadline, f"reserve never held a slot at {north}"
        await asyncio.sleep(0.1)
    assert [(r["day"], r["shipments"]) for r in slots] == [(ships_on, 1)]
