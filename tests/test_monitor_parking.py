"""Parking on the real Kafka and PostgreSQL: events about work monitor has not seen released yet.

A node's or carrier's event can reach monitor before the release of its work
order (they travel on different topics: a burst, a restart with a backlog on
both). Monitor keeps such an event in `monitor_parked_events`, commits its
offset and goes on; the release replays it. The park limit here is long
(15 s) so that nothing in these tests expires; dead-lettering after the limit
is tested in test_monitor_stage.py, where it is 2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import structlog

from orchestrator.api.queries import parked_events, timeline_text
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.execution import ShipmentPickedUp
from orchestrator.contract.pipeline import ParkedEventExpired
from orchestrator.contract.work import WorkOrderReleased
from orchestrator.runtime.dead_letter import OutgoingRecord, dead_letter_origin
from orchestrator.runtime.idempotency import _decode_outputs, _encode_outputs
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.parking import ParkedRecord
from orchestrator.runtime.stage import HandlerContext
from orchestrator.stages.monitor import (
    EARLY_EVENT_WAIT_ENV,
    PARK_LIMIT_ENV,
    MonitorTimers,
    TimerTicker,
)
from tests.test_monitor_stage import (
    Monitor,
    _carrier,
    acked,
    packed,
    picked,
    running_monitor,
    shipped,
    uid,
    work_order,
)

pytestmark = pytest.mark.integration

PARKING = MonitorTimers(
    # Far off: no deadline of these work orders passes during a test.
    acknowledge_within=timedelta(minutes=30),
    carrier_scan_within=timedelta(minutes=30),
    tick_s=0.2,
    park_limit=timedelta(seconds=15),
)


@pytest.fixture(scope="module")
async def parking(bootstrap: str, database_url: str) -> AsyncIterator[Monitor]:
    async with running_monitor(bootstrap, database_url, PARKING) as m:
        yield m


async def parked(m: Monitor, order_id: str) -> list[asyncpg.Record]:
    return list(
        await m.db.fetch(
            "SELECT event_id, event_type, work_order_id, source_topic FROM monitor_parked_events"
            " WHERE order_id = $1 ORDER BY arrival",
            order_id,
        )
    )


async def until_parked(m: Monitor, order_id: str, count: int, timeout: float = 30) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while len(rows := await parked(m, order_id)) < count:
        assert time.monotonic() < deadline, f"only {len(rows)} of {count} events of {order_id} parked"
        await asyncio.sleep(0.1)
    return rows


async def until_state(m: Monitor, wo: WorkOrderReleased, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := await m.state_of(wo.work_order_id)) != state:
        assert time.monotonic() < deadline, f"{wo.work_order_id} is {now}, never {state}"
        await asyncio.sleep(0.1)


async def ticker_sees_them_waiting(m: Monitor, event_ids: set[str]) -> None:
    """The ticker counts the parked events, and asks to dead-letter them only past the park limit."""
    ticker = TimerTicker(PARKING)
    metrics = RuntimeMetrics()
    ticker.bind_metrics(metrics)
    now = datetime.now(UTC)

    def asked_for(requests: list[Envelope]) -> set[str]:
        return {e.data.parked_event_id for e in requests if isinstance(e.data, ParkedEventExpired)}

    async with m.db.acquire() as conn:
        assert asked_for(await ticker._expired_parkings(conn, now)) & event_ids == set()
        an_hour_on = await ticker._expired_parkings(conn, now + timedelta(hours=1))
    assert asked_for(an_hour_on) >= event_ids
    assert {e.id for e in an_hour_on} >= {f"parked-expired:{i}" for i in event_ids}, "one id per event"
    sample = metrics.registry.get_sample_value
    assert (sample("orchestrator_monitor_parked_events") or 0) >= len(event_ids)
    assert (sample("orchestrator_monitor_parked_oldest_seconds") or 0) > 0


async def test_events_before_their_release_are_replayed_once_when_it_comes(parking: Monitor) -> None:
    order_id, node_id = uid("O-early"), uid("N-early")
    wo = work_order(order_id, node_id, [("SKU-A", 1)])
    node_events = await parking.publish(acked(wo), picked(wo), packed(wo), shipped(wo))
    await parking.republish(node_events[0])  # delivered twice: parked once
    rows = await until_parked(parking, order_id, 4)
    # The carrier's scan after the node's events, so the arrival order to replay in is known.
    [scan] = await parking.publish(ShipmentPickedUp(**_carrier(wo)))
    rows = await until_parked(parking, order_id, 5)
    assert [r["event_id"] for r in rows] == [e.id for e in (*node_events, scan)]
    assert [r["work_order_id"] for r in rows] == [wo.work_order_id] * 4 + [None]
    assert await parking.state_of(wo.work_order_id) == "None", "nothing applied before the release"
    await ticker_sees_them_waiting(parking, {r["event_id"] for r in rows})

    await parking.release(wo)
    await until_state(parking, wo, "in_transit")
    assert await parked(parking, order_id) == []
    await asyncio.sleep(1)
    assert parking.seen.states(order_id) == ["shipped"], "the order's transition reported once"
    assert parking.seen.dead[order_id] == []
    # Learning counted each of the node's steps once: at the replay, not at the parking.
    counted = await parking.db.fetchrow(
        "SELECT sum(acknowledged) AS acknowledged, sum(picked) AS picked, sum(shipped) AS shipped"
        " FROM learning_buckets WHERE subject = $1",
        f"node:{node_id}",
    )
    assert counted is not None
    assert dict(counted) == {"acknowledged": 1, "picked": 1, "shipped": 1}

    # The same events delivered again after the replay (a producer retry) change nothing.
    await parking.republish(*node_events, scan)
    await asyncio.sleep(2)
    assert await parked(parking, order_id) == []
    assert parking.seen.states(order_id) == ["shipped"]
    assert await parking.state_of(wo.work_order_id) == "in_transit"


async def test_a_parked_event_does_not_hold_up_its_partition(parking: Monitor) -> None:
    order_id, node_id = uid("O-behind"), uid("N")
    known = work_order(order_id, node_id, [("SKU-A", 1)], n=1)
    later = work_order(order_id, node_id, [("SKU-B", 1)], n=2)
    await parking.release(known)
    # One order, so one partition: the event about the work not released yet comes first.
    early, good = await parking.publish(acked(later), acked(known))
    started = time.monotonic()
    await until_state(parking, known, "acknowledged")
    assert time.monotonic() - started < PARKING.park_limit.total_seconds()
    # Applied while the early one still waits: the partition went on past it.
    assert [r["event_id"] for r in await parked(parking, order_id)] == [early.id]
    assert good.id != early.id
    [waiting] = await parked_events(parking.db, order_id)
    assert waiting["awaited"] == f"work order {later.work_order_id} of order {order_id}"

    await parking.release(later)
    await until_state(parking, later, "acknowledged")
    assert await parked(parking, order_id) == []
    assert parking.seen.dead[order_id] == []


async def test_a_scan_naming_only_its_tracking_number_waits_for_the_node_to_ship(parking: Monitor) -> None:
    """A carrier that does not know the planned shipment id: only the node's `shipped` ties them."""
    order_id = uid("O-scan")
    wo = work_order(order_id, uid("N"), [("SKU-A", 1)])
    await parking.release(wo)
    [scan] = await parking.publish(ShipmentPickedUp(**{**_carrier(wo), "shipment_id": "CARRIER-OWN-ID"}))
    [row] = await until_parked(parking, order_id, 1)
    assert row["event_id"] == scan.id and row["work_order_id"] is None
    await parking.publish(acked(wo), shipped(wo))
    await until_state(parking, wo, "in_transit")
    assert await parked(parking, order_id) == []
    assert parking.seen.dead[order_id] == []


async def test_a_backlog_of_node_events_and_releases_after_a_restart_is_applied(parking: Monitor) -> None:
    """The monitor was down; the node answered on one topic before the release was read on the other."""
    await parking.stop()
    work = [work_order(uid("O-backlog"), uid("N"), [("SKU-A", 1)]) for _ in range(6)]
    await parking.publish(*(acked(wo) for wo in work), *(shipped(wo) for wo in work))
    await parking.publish(*work)
    parking.start()
    for wo in work:
        await until_state(parking, wo, "shipped", timeout=60)
    await asyncio.sleep(1)
    for wo in work:
        assert await parked(parking, wo.order_id) == []
        assert parking.seen.states(wo.order_id) == ["shipped"]
        assert parking.seen.dead[wo.order_id] == []


def test_the_timeline_names_what_waits_in_monitor() -> None:
    waiting = {
        "parked_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        "event_type": "wms.acknowledged.v1",
        "event_id": "e-1",
        "awaited": "work order WO-1 of order O-1",
        "source_topic": "wms.events.v1",
    }
    assert timeline_text("O-1", None, [], [waiting]).splitlines() == [
        "Order O-1: 0 event(s)",
        "Current state: none reported yet",
        "Parked until what they wait for comes: 1 event(s)",
        "  2025-03-01T12:00:00.000Z  wms.acknowledged.v1  waits for work order WO-1 of order O-1",
    ]
    assert timeline_text("O-1", None, []) == timeline_text("O-1", None, [], [])


def test_a_kept_record_a_handler_gives_up_leaves_unchanged_for_its_dead_letter_topic() -> None:
    kept = ParkedRecord(
        topic="wms.events.v1",
        partition=3,
        offset=41,
        timestamp=1_700_000_000_000,
        key=b"O-1",
        value=b'{"order_id": "O-1"}',
        headers=[("ce_id", b"e-1"), ("ce_type", b"wms.acknowledged.v1")],
    )
    ctx = HandlerContext(
        stage="monitor",
        topic="orchestrator.timers.v1",
        event=Envelope.new(
            ParkedEventExpired(
                order_id="O-1", parked_event_id="e-1", parked_at=datetime.now(UTC), due_at=datetime.now(UTC)
            ),
            source="test",
        ),
        db=None,
        now=datetime.now(UTC),
        log=structlog.get_logger("test"),
    )
    ctx.dead_letter(kept, "never_released", "work order WO-1 of order O-1 was never released")
    [letter] = ctx.dead_letters
    assert (letter.topic, letter.key, letter.value) == ("wms.events.v1.dlq", kept.key, kept.value)
    assert letter.headers[:2] == kept.headers
    headers = dict(letter.headers)
    assert headers["dlq_source_offset"] == b"41" and headers["dlq_stage"] == b"monitor"
    # The runtime counts it as a dead letter of the topic it came from.
    assert dead_letter_origin(letter) == ("wms.events.v1", "never_released")
    assert dead_letter_origin(OutgoingRecord("t", None, b"{}", [], "wms.acknowledged.v1")) is None


def test_the_idempotency_record_keeps_an_upstream_record_that_is_not_utf8() -> None:
    # A dead letter a handler sends is stored with the batch's outputs, bytes as they came.
    letter = OutgoingRecord(
        "wms.events.v1.dlq",
        b"O-1",
        b'{"note": "caf\xc3',
        [("x-bin", b"\xff\x00"), ("ce_id", b"e")],
        "dead_letter",
    )
    assert _decode_outputs(_encode_outputs([letter])) == [letter]


def test_the_park_limit_is_an_hour_unless_configured() -> None:
    assert MonitorTimers.from_env({}).park_limit == timedelta(hours=1)
    assert MonitorTimers.from_env({PARK_LIMIT_ENV: "90"}).park_limit == timedelta(seconds=90)
    # The old wait was sized to hold a partition a few seconds: too short to park by.
    assert MonitorTimers.from_env({EARLY_EVENT_WAIT_ENV: "20"}).park_limit == timedelta(hours=1)
    with pytest.raises(ValueError, match=PARK_LIMIT_ENV):
        MonitorTimers.from_env({PARK_LIMIT_ENV: "soon"})
