"""The exceptions stage end to end on the real Kafka and PostgreSQL.

Only the exceptions stage runs. The tests play the other stages: they put the
order into ingest's table, raise exceptions on `orchestrator.exceptions.v1` as
the monitor would, and answer repair requests there as decide-node would;
then they assert on what the stage published (re-route requests, statuses,
customer messages) and on its tables. Each test uses its own order id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from orchestrator.cli import main as cli_main
from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.examples import example
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RepairOutcome
from orchestrator.contract.status import ExceptionKind, ExceptionRaised
from orchestrator.runtime.process import run_stages
from orchestrator.settings import Settings
from orchestrator.stages import order_path_deps
from orchestrator.stages.exceptions import exceptions_stage, review_queue
from orchestrator.topics import apply_topics, load_catalog
from tests.support import follow, publish_events

pytestmark = pytest.mark.integration

EXCEPTIONS = "orchestrator.exceptions.v1"
WATCHED = ("orchestrator.reroutes.v1", "orchestrator.status.v1", "customer.notifications.v1")


@dataclass
class Seen:
    """What the stage published, by order id: (topic, value) in arrival order."""

    by_order: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    runner: asyncio.Task[None] | None = None

    def on(self, order_id: str, topic: str) -> list[dict[str, Any]]:
        return [value for t, value in self.by_order[order_id] if t == topic]

    def reroutes(self, order_id: str) -> list[dict[str, Any]]:
        return self.on(order_id, "orchestrator.reroutes.v1")

    def statuses(self, order_id: str) -> list[dict[str, Any]]:
        return self.on(order_id, "orchestrator.status.v1")

    def notifications(self, order_id: str) -> list[dict[str, Any]]:
        return self.on(order_id, "customer.notifications.v1")

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.runner is not None and self.runner.done():
                raise AssertionError(
                    f"the stage stopped while waiting for {what}"
                ) from self.runner.exception()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)


async def _collect(bootstrap: str, seen: Seen, stop: asyncio.Event) -> None:
    def record(rec: Any) -> None:
        value = orjson.loads(rec.value)
        seen.by_order[value["order_id"]].append((rec.topic, value))

    await follow(bootstrap, WATCHED, record, stop, poll_ms=100)


@dataclass
class Harness:
    bootstrap: str
    database_url: str
    db: asyncpg.Pool
    seen: Seen

    async def new_order(self, *, known: bool = True) -> OrderCreated:
        """An order of its own; `known`: in ingest's table, as ingest would have left it."""
        base = example("order.created.v1")
        assert isinstance(base, OrderCreated)
        order = base.model_copy(update={"order_id": f"ORD-EXC-{uuid.uuid4().hex[:10]}"})
        if known:
            await self.db.execute(
                "INSERT INTO ingest_orders (order_id, sequence, order_json) VALUES ($1, 1, $2)",
                order.order_id,
                order.model_dump_json(),
            )
        return order

    async def send(self, *payloads: EventPayload) -> None:
        await publish_events(
            self.bootstrap, EXCEPTIONS, [Envelope.new(p, source="test/monitor") for p in payloads]
        )

    async def case(self, exception_id: str) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM exceptions_cases WHERE exception_id = $1", exception_id)

    async def case_state(self, exception_id: str, *states: str, timeout: float = 30) -> asyncpg.Record:
        deadline = time.monotonic() + timeout
        while True:
            row = await self.case(exception_id)
            if row is not None and row["state"] in states:
                return row
            assert time.monotonic() < deadline, f"case {exception_id} never reached {states}: {row}"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def harness(bootstrap: str, database_url: str) -> AsyncIterator[Harness]:
    await apply_topics(bootstrap, load_catalog())
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        instance_id="exceptions-test",
        http_port=0,
        poll_timeout_ms=50,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
    )
    stop = asyncio.Event()
    seen = Seen()
    seen.runner = asyncio.create_task(
        run_stages([exceptions_stage(order_path_deps())], settings, stop, handle_signals=False)
    )
    collector = asyncio.create_task(_collect(bootstrap, seen, stop))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        yield Harness(bootstrap, database_url, pool, seen)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(seen.runner, collector, return_exceptions=True), timeout=60)
        await pool.close()


def raised(order: OrderCreated, kind: ExceptionKind, **fields: Any) -> ExceptionRaised:
    base: dict[str, Any] = {
        "exception_id": f"{order.order_id}-{kind.value}-1",
        "order_id": order.order_id,
        "kind": kind,
        "node_id": "DC-MANCHESTER-01",
        "work_order_id": f"WO-{order.order_id}-p1-s1",
        "shipment_id": f"{order.order_id}-p1-s1",
        "line_ids": ["2"],
        "detail": f"{kind.value} at DC-MANCHESTER-01",
        "raised_at": datetime.now(UTC),
        "unfilled": [{"line_id": "2", "sku": "SKU-MUG-SET4", "quantity": 1}],
    }
    return ExceptionRaised.model_validate({**base, **fields})


def answer(exc: ExceptionRaised, action: str, succeeded: bool, detail: str, **fields: Any) -> RepairOutcome:
    return RepairOutcome(
        order_id=exc.order_id,
        exception_id=exc.exception_id,
        action=action,
        succeeded=succeeded,
        detail=detail,
        **fields,
    )


# --------------------------------------------------------------------------------------------- tests


async def test_a_short_pick_is_rerouted_and_a_failed_reroute_offers_the_customer_options(
    harness: Harness,
) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.SHORT_PICK)
    await harness.send(exc)
    seen = harness.seen
    await seen.wait(lambda: bool(seen.reroutes(order.order_id)), "the re-route request")
    [request] = seen.reroutes(order.order_id)
    assert request["sequence"] == 1 and request["attempt"] == 1
    assert request["excluded_nodes"] == ["DC-MANCHESTER-01"]
    assert request["reason"]["code"] == "short_pick"
    assert request["order"]["order_id"] == order.order_id
    repair = request["repair"]
    assert repair["exception_id"] == exc.exception_id and repair["action"] == "reroute"
    assert repair["lines"] == [{"line_id": "2", "sku": "SKU-MUG-SET4", "quantity": 1}]
    assert repair["cancel_replaced"] is False, "the picked units still ship"
    assert repair["replaces_work_order_id"] == exc.work_order_id
    assert (repair["max_extra_cost"], repair["max_delay_days"]) == (15.0, 2)
    case = await harness.case_state(exc.exception_id, "open")
    assert case["current_action"] == "reroute"

    await harness.send(answer(exc, "reroute", False, "no other node has SKU-MUG-SET4"))
    await seen.wait(lambda: bool(seen.notifications(order.order_id)), "the options offered")
    [note] = seen.notifications(order.order_id)
    assert note["kind"] == "options_offered" and note["customer_id"] == order.customer_id
    assert {o["option_id"] for o in note["options"]} == {"ship_rest_later", "refund_missing"}
    await seen.wait(lambda: bool(seen.statuses(order.order_id)), "the needs-attention status")
    [status] = seen.statuses(order.order_id)
    assert status["state"] == "needs_attention" and status["stage"] == "exceptions"
    case = await harness.case_state(exc.exception_id, "resolved")
    assert [(a["action"], a["succeeded"]) for a in orjson.loads(case["actions_tried"])] == [
        ("reroute", False),
        ("offer_options", True),
    ]
    assert case["current_action"] is None and case["resolved_at"] is not None


async def test_a_closed_node_rerouted_successfully_resolves_the_case_and_nothing_more(
    harness: Harness,
) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.NODE_CLOSED, unfilled=[], line_ids=[])
    # No quantity given: the failing work order's lines are re-planned, here both of the order's.
    await harness.db.execute(
        "INSERT INTO release_work_orders (work_order_id, order_id, plan_id, shipment_id, node_id, status,"
        " payload) VALUES ($1, $2, 'p1', $3, $4, 'released', $5)",
        exc.work_order_id,
        order.order_id,
        exc.shipment_id,
        exc.node_id,
        example("workorder.released.v1")
        .model_copy(update={"work_order_id": exc.work_order_id, "order_id": order.order_id})
        .model_dump_json(),
    )
    await harness.send(exc)
    seen = harness.seen
    await seen.wait(lambda: bool(seen.reroutes(order.order_id)), "the re-route request")
    repair = seen.reroutes(order.order_id)[0]["repair"]
    assert repair["cancel_replaced"] is True, "a closed node's work order is cancelled"
    assert {line["line_id"] for line in repair["lines"]} == {"1", "2"}

    stale = answer(exc, "split", False, "an answer to a request never made")
    unknown = RepairOutcome.model_validate({**stale.model_dump(), "exception_id": "EXC-NOBODY"})
    done = answer(
        exc,
        "reroute",
        True,
        "ships from DC-LEEDS-02",
        work_order_ids=["WO-2"],
        promised_delivery_date=order.promised_delivery_date,
        extra_cost=4.2,
    )
    await harness.send(stale, unknown, done)
    case = await harness.case_state(exc.exception_id, "resolved")
    assert case["resolution"] == "reroute succeeded: ships from DC-LEEDS-02"
    assert [a["action"] for a in orjson.loads(case["actions_tried"])] == ["reroute"], "stale answers ignored"
    await asyncio.sleep(1.5)  # let anything the stage wrongly published arrive
    assert len(seen.reroutes(order.order_id)) == 1
    assert seen.statuses(order.order_id) == [] and seen.notifications(order.order_id) == []
    assert await harness.case("EXC-NOBODY") is None


async def test_a_late_repair_tells_the_customer_the_new_date(harness: Harness) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.NODE_REJECTED)
    await harness.send(exc)
    await harness.case_state(exc.exception_id, "open")
    later = date.fromordinal(order.promised_delivery_date.toordinal() + 2)
    await harness.send(
        answer(exc, "reroute", True, "ships from a node further away", promised_delivery_date=later)
    )
    seen = harness.seen
    await seen.wait(lambda: bool(seen.notifications(order.order_id)), "the new-date message")
    [note] = seen.notifications(order.order_id)
    assert note["kind"] == "delayed_new_date" and note["new_promised_date"] == later.isoformat()


async def test_a_failed_reroute_of_a_rejected_work_order_back_orders_the_quantity(harness: Harness) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.NODE_REJECTED)
    await harness.send(exc, answer(exc, "reroute", False, "no node has it"))
    seen = harness.seen
    await seen.wait(lambda: bool(seen.statuses(order.order_id)), "the back-order status")
    [status] = seen.statuses(order.order_id)
    assert status["state"] == "back_ordered" and status["reasons"][0]["code"] == "node_rejected"
    assert "1 x SKU-MUG-SET4" in status["detail"]
    await harness.case_state(exc.exception_id, "resolved")


async def test_a_carrier_exception_goes_to_the_review_queue(
    harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.CARRIER_EXCEPTION, detail="parcel damaged at the hub")
    await harness.send(exc)
    case = await harness.case_state(exc.exception_id, "in_review")
    assert case["resolution"] == "carrier_exception: parcel damaged at the hub"
    async with harness.db.acquire() as conn:
        queued = [r for r in await review_queue(conn) if r["order_id"] == order.order_id]
    assert [(r["exception_id"], r["kind"], r["reason"]) for r in queued] == [
        (exc.exception_id, "carrier_exception", "carrier_exception: parcel damaged at the hub")
    ]
    seen = harness.seen
    await seen.wait(lambda: bool(seen.statuses(order.order_id)), "the needs-attention status")
    [status] = seen.statuses(order.order_id)
    assert status["state"] == "needs_attention"
    assert status["reasons"] == [
        {"code": "carrier_exception", "message": "carrier_exception: parcel damaged at the hub"}
    ]
    assert seen.reroutes(order.order_id) == []

    # The operator's view of the same queue.
    monkeypatch.setenv("DATABASE_URL", harness.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", harness.bootstrap)
    capsys.readouterr()  # the stage's own log lines so far
    assert await asyncio.to_thread(cli_main, ["review"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(order.order_id))
    assert "carrier_exception" in line and "parcel damaged at the hub" in line and " UTC " in line


async def test_an_exhausted_playbook_and_an_unknown_order_end_in_review(harness: Harness) -> None:
    order = await harness.new_order()
    # Rebooking needs a node; without one the playbook moves on, and with no new date known it is out of actions.
    exc = raised(order, ExceptionKind.PROMISE_AT_RISK, node_id=None)
    stranger = await harness.new_order(known=False)
    lost = raised(stranger, ExceptionKind.LOST_PARCEL)
    await harness.send(exc, lost)
    case = await harness.case_state(exc.exception_id, "in_review")
    assert case["resolution"] == (
        "no playbook action could resolve promise_at_risk: rebook_faster failed (the exception names no node "
        "to re-book at); notify_new_date failed (no new delivery date is known)"
    )
    gone = await harness.case_state(lost.exception_id, "in_review")
    assert "unknown to ingest" in gone["resolution"]


async def test_the_same_exception_twice_opens_one_case_and_asks_once(harness: Harness) -> None:
    order = await harness.new_order()
    exc = raised(order, ExceptionKind.SHORT_PICK)
    # Two events (two ids, as a monitor that raised it twice would send) for one exception.
    await harness.send(exc, exc)
    await harness.case_state(exc.exception_id, "open")
    later = raised(order, ExceptionKind.NODE_CLOSED, exception_id="marker-" + order.order_id)
    await harness.send(later)  # same partition, after both: once it is handled, so are they
    await harness.case_state(later.exception_id, "open")
    seen = harness.seen
    await seen.wait(lambda: len(seen.reroutes(order.order_id)) >= 2, "both re-route requests")
    await asyncio.sleep(1.0)
    repairs = [r["repair"]["exception_id"] for r in seen.reroutes(order.order_id)]
    assert sorted(repairs) == sorted([exc.exception_id, later.exception_id])
    count = await harness.db.fetchval(
        "SELECT count(*) FROM exceptions_cases WHERE order_id = $1", order.order_id
    )
    assert count == 2
