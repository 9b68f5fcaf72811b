"""A node's return event before the OMS's authorisation, on the real Kafka and PostgreSQL.

A store can take goods back the moment the customer walks in, so its `return.received.v1` may
reach returns before `return.authorised.v1` (another topic). returns parks it, commits its offset
and goes on; the authorisation replays it; one never authorised is dead-lettered after the park
limit. The limit here is 8 s: long enough for the replay test (about 2 s), short enough to watch one expire.
The early-event wait is 30 s, so a partition held for it (as before parking) fails the first test.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.api.queries import parked_events
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import CancelReason, LineQuantityChange, OrderAmended, OrderCancelled
from orchestrator.contract.returns import ReturnParkedExpired
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.stages.returns import ParkingTicker
from tests.harness import LONDON, Pipeline, ids, node, order, pipeline
from tests.support import publish_events, read_all
from tests.test_execution import ack, shipped
from tests.test_returns_e2e import (
    authorise,
    receipt,
    released,
    return_orders,
    shipped_from_london,
    states,
    until_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.pollutes_dead_letters]
__all__ = ["pipeline"]

PARK_LIMIT_S = 8
PIPELINE_ENV = {
    "ORCHESTRATOR_RETURNS_PARK_LIMIT_S": str(PARK_LIMIT_S),
    "ORCHESTRATOR_EARLY_EVENT_WAIT_S": "30",
}


async def parked_rows(p: Pipeline, return_id: str) -> list[str]:
    rows = await p.db.fetch(
        "SELECT event_type FROM returns_parked_events WHERE return_id = $1 ORDER BY arrival", return_id
    )
    return [r["event_type"] for r in rows]


async def until_parked(p: Pipeline, return_id: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(await parked_rows(p, return_id)) < count:
        assert time.monotonic() < deadline, f"no {count} event(s) of return {return_id} parked"
        await asyncio.sleep(0.1)


async def dead_letter_of(
    p: Pipeline, event: Envelope, timeout: float = 60, topic: str = "wms.return-events.v1"
) -> dict[str, str]:
    """The headers of `event`'s record on `topic`'s dead-letter topic (other tests' letters skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = await read_all(p.bootstrap, f"{topic}.dlq", expect=1, timeout=3, settle=0.2)
        for d in dead:
            headers = {k: v.decode(errors="replace") for k, v in d.headers}
            if headers.get("ce_id") == event.id:
                return headers
        await asyncio.sleep(0.5)
    raise AssertionError(f"{event.type} {event.id} never reached {topic}.dlq")


def early_receipt(return_id: str, order_id: str, node_id: str, sku: str) -> dict[str, Any]:
    """What a store that took the goods back would report: the return work order returns will release
    for this return (its id is RO- and the return's), before returns has seen the authorisation."""
    return {
        "return_order_id": f"RO-{return_id}",
        "return_id": return_id,
        "order_id": order_id,
        "node_id": node_id,
        "lines": [{"line_id": "1", "sku": sku, "quantity": 1}],
    }


async def test_a_receipt_before_the_authorisation_waits_without_holding_the_partition_and_settles_once(
    pipeline: Pipeline,
) -> None:
    o, returns_dc, sku, n = await shipped_from_london(pipeline, "RP1")

    # Return A of one unit is authorised as usual.
    first, early = n("RMA-A"), n("RMA-B")
    await pipeline.publish(authorise(first, o.order_id, sku))
    await until_state(pipeline, first, "awaiting_return")
    [ro_first] = return_orders(pipeline, o.order_id)

    # The store reports return B's goods (twice) before the OMS's authorisation of B reaches us: parked once.
    got_early = Envelope.new(receipt(early_receipt(early, o.order_id, returns_dc, sku)), source="test/wms")
    await publish_events(pipeline.bootstrap, "wms.return-events.v1", [got_early, got_early])
    await until_parked(pipeline, early, 1)
    waiting = await parked_events(pipeline.db, o.order_id)
    assert [(w["event_type"], w["awaited"]) for w in waiting] == [
        ("return.received.v1", f"the authorisation of return {early} of order {o.order_id}")
    ]

    # The same order's next event, on the same partition, is not held up behind it.
    started = time.monotonic()
    await pipeline.publish(receipt(ro_first))
    await until_state(pipeline, first, "refunded", timeout=20)
    assert time.monotonic() - started < 20
    assert await parked_rows(pipeline, early) == ["return.received.v1"], "still waiting, not dropped"

    # The ticker counts it, and asks to dead-letter it only once the park limit has passed.
    ticker = ParkingTicker(timedelta(seconds=PARK_LIMIT_S))
    metrics = RuntimeMetrics()
    ticker.bind_metrics(metrics)
    now = datetime.now(UTC)
    async with pipeline.db.acquire() as conn:
        asked_now = await ticker.scan(conn, now)
        asked_later = await ticker.scan(conn, now + timedelta(seconds=PARK_LIMIT_S + 1))
    assert got_early.id not in {e.data.parked_event_id for e in asked_now}  # type: ignore[attr-defined]
    [later] = [e for e in asked_later if e.data.parked_event_id == got_early.id]  # type: ignore[attr-defined]
    assert isinstance(later.data, ReturnParkedExpired) and later.data.return_id == early
    assert later.id == f"returns-parked-expired:{got_early.id}", "one request id per parked event"
    assert (metrics.registry.get_sample_value("orchestrator_returns_parked_events") or 0) >= 1

    # The authorisation comes: the parked receipt is replayed, once, and settles the refund.
    await pipeline.publish(authorise(early, o.order_id, sku))
    refunded = await until_state(pipeline, early, "refunded")
    assert (refunded["amount"], refunded["currency"]) == ("10.00", "GBP")
    assert states(pipeline, early) == ["authorised", "awaiting_return", "received", "refunded"]
    [ro_early] = [ro for ro in return_orders(pipeline, o.order_id) if ro["return_id"] == early]
    assert (ro_early["return_order_id"], ro_early["node_id"]) == (f"RO-{early}", returns_dc)
    assert await parked_rows(pipeline, early) == []
    await asyncio.sleep(1)
    assert states(pipeline, early) == ["authorised", "awaiting_return", "received", "refunded"]


async def test_a_node_event_for_a_return_never_authorised_is_dead_lettered_after_the_park_limit(
    pipeline: Pipeline,
) -> None:
    n = ids("RP2")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    o = order(n("ORD"), [(sku, 1)])
    await pipeline.publish(o)
    await released(pipeline, o.order_id)
    never = n("RMA-NEVER")
    stray = Envelope.new(receipt(early_receipt(never, o.order_id, dc, sku)), source="test/wms")
    await publish_events(pipeline.bootstrap, "wms.return-events.v1", [stray])
    await until_parked(pipeline, never, 1)
    parked_at = time.monotonic()

    letter = await dead_letter_of(pipeline, stray)
    assert time.monotonic() - parked_at >= PARK_LIMIT_S - 1, "kept until the park limit"
    assert letter["dlq_category"] == "unknown_return"
    reason = letter["dlq_reason"]
    assert reason.startswith(f"unknown return {never} of order {o.order_id}: it was never authorised"), reason
    assert f"(park limit 0:00:{PARK_LIMIT_S:02d})" in reason, reason
    assert await parked_rows(pipeline, never) == []
    assert never not in pipeline.out.returns, "nothing published for a return that does not exist"


async def test_a_return_of_a_cancelled_order_waits_until_its_shipment_is_seen_or_the_park_limit(
    pipeline: Pipeline,
) -> None:
    """The 20,000-order fault run lost 3 returns this way: the OMS authorised the return of a
    cancelled order whose work had shipped anyway, before monitor (minutes behind) had seen the
    shipment, and returns dead-lettered it after a 10 s wait. Now it is parked: handled once the
    shipment is seen, dead-lettered only when none is seen by the park limit."""
    n = ids("RP3")
    dc = n("DC")
    sku = n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
    late, held = order(n("ORD-LATE"), [(sku, 1)]), order(n("ORD-HELD"), [(sku, 1)])
    await pipeline.publish(late, held)
    wo = await released(pipeline, late.order_id)
    await released(pipeline, held.order_id)
    for o in (late, held):
        await pipeline.publish(OrderCancelled(order_id=o.order_id, reason=CancelReason.CUSTOMER_REQUEST))
    await pipeline.out.wait(
        lambda: all(len(pipeline.out.cancel_requests(o.order_id)) == 1 for o in (late, held)),
        "both orders stopped",
    )
    back, nothing = n("RMA-LATE"), n("RMA-HELD")
    never = Envelope.new(authorise(nothing, held.order_id, sku, 1), source="test/oms")
    await pipeline.publish(authorise(back, late.order_id, sku, 1))
    await publish_events(pipeline.bootstrap, "oms.returns.v1", [never])
    await until_parked(pipeline, back, 1)
    await until_parked(pipeline, nothing, 1)
    parked_at = time.monotonic()
    waiting = await parked_events(pipeline.db, late.order_id)
    assert [(w["event_type"], w["awaited"]) for w in waiting] == [
        ("return.authorised.v1", f"a shipment of order {late.order_id} (return {back})")
    ]

    # The node ships the cancelled order's work anyway: the return goes ahead.
    await pipeline.publish(ack(wo), shipped(wo, n("TRK")))
    await until_state(pipeline, back, "awaiting_return", timeout=30)
    assert await parked_rows(pipeline, back) == []

    # Nothing of the other order ever ships: its return is dead-lettered at the park limit, saying why.
    letter = await dead_letter_of(pipeline, never, topic="oms.returns.v1")
    assert time.monotonic() - parked_at >= PARK_LIMIT_S - 1, "kept until the park limit"
    assert letter["dlq_category"] == "order_cancelled"
    reason = letter["dlq_reason"]
    assert reason.startswith(
        f"order {held.order_id} was cancelled and nothing of it has shipped: nothing to return"
    ), reason
    assert f"park limit 0:00:{PARK_LIMIT_S:02d}" in reason, reason
    assert await parked_rows(pipeline, nothing) == []
    assert states(pipeline, nothing) == []


async def test_a_return_of_a_line_an_amendment_removed_is_taken_if_the_line_shipped(
    pipeline: Pipeline,
) -> None:
    """The 20,000-order fault run lost 2 returns this way: the node shipped line 1 before the
    amendment removing it reached it, the customer sent it back, and returns refused it ("order O
    has no line 1"), as it checked the order as amended. The line that shipped is taken back; one
    that never shipped waits for a shipment of it until the park limit, then is dead-lettered."""
    n = ids("RP4")
    dc = n("DC")
    kept_sku, removed_sku = n("S-KEPT"), n("S-REMOVED")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, kept_sku): 5, (dc, removed_sku): 5})
    # Line 1 is the one the amendment removes (the helpers return line 1).
    sent, stopped = (
        order(n(name), [(removed_sku, 1), (kept_sku, 1)]) for name in ("ORD-SENT", "ORD-STOPPED")
    )
    await pipeline.publish(sent, stopped)
    wo = await released(pipeline, sent.order_id)
    await released(pipeline, stopped.order_id)
    await pipeline.publish(ack(wo), shipped(wo, n("TRK")))
    await pipeline.out.final_state(sent.order_id, "shipped")
    for o in (sent, stopped):
        await pipeline.publish(
            OrderAmended(order_id=o.order_id, line_quantities=(LineQuantityChange(line_id="1", quantity=0),))
        )
    for o in (sent, stopped):
        for _ in range(300):
            if await pipeline.db.fetchval(
                "SELECT jsonb_array_length(removed_lines) FROM ingest_orders WHERE order_id = $1", o.order_id
            ):
                break
            await asyncio.sleep(0.1)

    # The shipped order's removed line comes back: taken, at its price.
    back = n("RMA-SENT")
    await pipeline.publish(authorise(back, sent.order_id, removed_sku))
    await until_state(pipeline, back, "awaiting_return", timeout=30)
    [ro] = [r for r in return_orders(pipeline, sent.order_id) if r["return_id"] == back]
    assert [(x["line_id"], x["sku"], x["quantity"]) for x in ro["lines"]] == [("1", removed_sku, 1)]

    # The other order's line 1 never left: its return waits (the kept line shipping does not
    # settle it), and is dead-lettered at the park limit, saying why.
    never = Envelope.new(authorise(n("RMA-STOPPED"), stopped.order_id, removed_sku), source="test/oms")
    await publish_events(pipeline.bootstrap, "oms.returns.v1", [never])
    await until_parked(pipeline, never.data.return_id, 1)  # type: ignore[attr-defined]
    parked_at = time.monotonic()
    await pipeline.out.wait(lambda: len(pipeline.out.released(stopped.order_id)) == 2, "the re-plan released")
    rest = pipeline.out.released(stopped.order_id)[1]
    assert [x["sku"] for x in rest["lines"]] == [kept_sku]
    await pipeline.publish(ack(rest), shipped(rest, n("TRK-2")))
    letter = await dead_letter_of(pipeline, never, topic="oms.returns.v1")
    assert time.monotonic() - parked_at >= PARK_LIMIT_S - 1, "kept until the park limit"
    assert letter["dlq_category"] == "return_refused"
    reason = letter["dlq_reason"]
    assert reason.startswith(
        f"return {never.data.return_id} names lines an amendment removed from order {stopped.order_id}"  # type: ignore[attr-defined]
    ), reason
    assert f"park limit 0:00:{PARK_LIMIT_S:02d}" in reason, reason
