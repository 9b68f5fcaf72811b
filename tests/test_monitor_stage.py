"""The monitor stage end to end on the real Kafka and PostgreSQL.

Only the monitor runs. The tests publish work orders on `orchestrator.released.v1`
as release would, then node, carrier and network events on the public topics as
a WMS, a carrier and a network admin would, and read what comes out on the
exceptions and status topics (read_committed). Timers are 2 s so deadlines pass
within a test, and so is the park limit of events about work never released.
Every test uses its own order, work order and node ids. Parking and replaying
events that come before their release: test_monitor_parking.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    CarrierAssignment,
    HomeDelivery,
    Package,
    SkuLine,
    StorePickup,
)
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.execution import (
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentInTransit,
    ShipmentPickedUp,
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.work import WorkOrderLine, WorkOrderReleased
from orchestrator.runtime.process import run_stages
from orchestrator.settings import Settings
from orchestrator.stages import order_path_deps
from orchestrator.stages.monitor import MonitorTimers, monitor_stage
from orchestrator.topics import apply_topics, load_catalog
from tests.support import follow, publish_events

pytestmark = pytest.mark.integration

TIMERS = MonitorTimers(
    acknowledge_within=timedelta(seconds=2),
    carrier_scan_within=timedelta(seconds=2),
    collection_within=timedelta(seconds=6),
    tick_s=0.2,
    park_limit=timedelta(seconds=2),
)
EXCEPTIONS = "orchestrator.exceptions.v1"
STATUS = "orchestrator.status.v1"
TIMER_KINDS = frozenset({"not_acknowledged", "not_shipped_by_cutoff", "no_carrier_scan"})
DLQS = ("wms.events.v1.dlq", "carrier.events.v1.dlq")
TOPIC_OF = {
    "workorder.": "orchestrator.released.v1",
    "wms.": "wms.events.v1",
    "carrier.": "carrier.events.v1",
}
PROMISED = date.today() + timedelta(days=4)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Seen:
    """What came out, by order id: exceptions, monitor's status reports, dead letters (value, headers)."""

    exceptions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def kinds(self, order_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.exceptions[order_id] if kind is None or e["kind"] == kind]

    def event_kinds(self, order_id: str) -> list[str]:
        """Kinds of the exceptions events raised (a 2 s deadline may pass too on a slow machine)."""
        return [e["kind"] for e in self.exceptions[order_id] if e["kind"] not in TIMER_KINDS]

    def states(self, order_id: str) -> list[str]:
        return [s["state"] for s in self.statuses[order_id]]


async def _collect(bootstrap: str, seen: Seen, stop: asyncio.Event) -> None:
    def record(rec: Any) -> None:
        value = orjson.loads(rec.value)
        if rec.topic == EXCEPTIONS:
            seen.exceptions[value["order_id"]].append(value)
        elif rec.topic == STATUS:
            if value.get("stage") == "monitor":
                seen.statuses[value["order_id"]].append(value)
        else:
            headers = {k: v.decode() for k, v in rec.headers}
            seen.dead[rec.key.decode()].append((value, headers))

    await follow(bootstrap, (EXCEPTIONS, STATUS, *DLQS), record, stop)


@dataclass
class Monitor:
    """The monitor stage running in this process, which a test may stop and start again."""

    bootstrap: str
    settings: Settings
    db: asyncpg.Pool
    seen: Seen
    timers: MonitorTimers = TIMERS
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        stage = monitor_stage(order_path_deps(), self.timers)
        self._task = asyncio.create_task(run_stages([stage], self.settings, self._stop, handle_signals=False))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=60)
            self._task = None

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self._task is not None and self._task.done():
                raise AssertionError(
                    f"the monitor stopped while waiting for {what}"
                ) from self._task.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def publish(self, *payloads: EventPayload) -> list[Envelope]:
        envelopes = [Envelope.new(p, source="test/upstream") for p in payloads]
        await self.republish(*envelopes)
        return envelopes

    async def republish(self, *envelopes: Envelope) -> None:
        """Publish in the given order, each on its topic (a run of one topic goes in one go)."""
        run: list[Envelope] = []
        for env in envelopes:
            if run and _topic(run[0]) != _topic(env):
                await publish_events(self.bootstrap, _topic(run[0]), run)
                run = []
            run.append(env)
        if run:
            await publish_events(self.bootstrap, _topic(run[0]), run)

    async def release(self, *work_orders: WorkOrderReleased) -> None:
        """Publish work orders as release does, and wait until monitor has them (the WMS answers later)."""
        await self.publish(*work_orders)
        ids = [wo.work_order_id for wo in work_orders]

        async def known() -> int:
            return int(
                await self.db.fetchval(
                    "SELECT count(*) FROM monitor_shipments WHERE work_order_id = ANY($1::text[])", ids
                )
            )

        deadline = time.monotonic() + 30
        while await known() < len(ids):
            assert time.monotonic() < deadline, f"monitor never recorded {ids}"
            await asyncio.sleep(0.1)

    async def warm_up(self) -> None:
        """Have the stage claim its partitions (a transactional producer each) before the timed tests:
        on a fresh broker the first claims take seconds, longer than a 2 s deadline."""
        warm = [work_order(uid("O-warm"), "N-warm", [("SKU-W", 1)]) for _ in range(12)]
        await self.release(*warm)
        await self.publish(*(acked(wo) for wo in warm))
        deadline = time.monotonic() + 60
        for wo in warm:
            while await self.state_of(wo.work_order_id) != "acknowledged":
                assert time.monotonic() < deadline, "the monitor never warmed up"
                await asyncio.sleep(0.1)

    async def state_of(self, work_order_id: str) -> str:
        return str(
            await self.db.fetchval(
                "SELECT state FROM monitor_shipments WHERE work_order_id = $1", work_order_id
            )
        )


def _topic(env: Envelope) -> str:
    if env.type.startswith("network."):
        return "network.updates.v1"
    return next(topic for prefix, topic in TOPIC_OF.items() if env.type.startswith(prefix))


@asynccontextmanager
async def running_monitor(bootstrap: str, database_url: str, timers: MonitorTimers) -> AsyncIterator[Monitor]:
    """The monitor stage started with `timers` and warmed up, with a collector of what it publishes."""
    await apply_topics(bootstrap, load_catalog())
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        instance_id="monitor-test",
        http_port=0,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
    )
    seen = Seen()
    stop_collector = asyncio.Event()
    collector = asyncio.create_task(_collect(bootstrap, seen, stop_collector))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    m = Monitor(bootstrap, settings, pool, seen, timers)
    m.start()
    try:
        await m.warm_up()
        yield m
    finally:
        stop_collector.set()
        await m.stop()
        await asyncio.wait_for(collector, timeout=30)
        await pool.close()


@pytest.fixture(scope="module")
async def monitor(bootstrap: str, database_url: str) -> AsyncIterator[Monitor]:
    async with running_monitor(bootstrap, database_url, TIMERS) as m:
        yield m


# ---------------------------------------------------------------- events


def work_order(
    order_id: str,
    node_id: str,
    lines: list[tuple[str, int]],
    *,
    n: int = 1,
    ship_in: timedelta = timedelta(days=1),
) -> WorkOrderReleased:
    now = datetime.now(UTC)
    return WorkOrderReleased(
        work_order_id=f"WO-{order_id}-{n}",
        order_id=order_id,
        shipment_id=f"{order_id}-{n}",
        node_id=node_id,
        lines=tuple(
            WorkOrderLine(line_id=f"L{i}", sku=sku, quantity=q) for i, (sku, q) in enumerate(lines, start=1)
        ),
        ship_to=Address(
            line1="1 High Street",
            city="London",
            postal_code="EC1A 1BB",
            country="GB",
            latitude=51.5,
            longitude=-0.1,
        ),
        delivery=HomeDelivery(kind="standard"),
        carrier=CarrierAssignment(carrier="tcarrier", service_id="t-ground"),
        pick_by=now + ship_in - timedelta(hours=2),
        ship_by=now + ship_in,
        promised_delivery_date=PROMISED,
    )


def _node(wo: WorkOrderReleased) -> dict[str, Any]:
    return {
        "work_order_id": wo.work_order_id,
        "order_id": wo.order_id,
        "node_id": wo.node_id,
        "occurred_at": datetime.now(UTC),
    }


def acked(wo: WorkOrderReleased) -> WorkOrderAcknowledged:
    return WorkOrderAcknowledged(**_node(wo))


def picked(wo: WorkOrderReleased) -> WorkOrderPicked:
    return WorkOrderPicked(
        lines=tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in wo.lines), **_node(wo)
    )


def packed(wo: WorkOrderReleased) -> WorkOrderPacked:
    return WorkOrderPacked(packages=(Package(package_id=f"P-{wo.work_order_id}"),), **_node(wo))


def tracking(wo: WorkOrderReleased) -> str:
    return f"TRK-{wo.shipment_id}"


def shipped(wo: WorkOrderReleased) -> WorkOrderShipped:
    return WorkOrderShipped(
        shipment_id=wo.shipment_id,
        carrier="tcarrier",
        service_id="t-ground",
        tracking_number=tracking(wo),
        packages=(Package(package_id=f"P-{wo.work_order_id}"),),
        lines=tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in wo.lines),
        **_node(wo),
    )


def _carrier(wo: WorkOrderReleased) -> dict[str, Any]:
    return {
        "tracking_number": tracking(wo),
        "carrier": "tcarrier",
        "order_id": wo.order_id,
        "shipment_id": wo.shipment_id,
        "occurred_at": datetime.now(UTC),
    }


def short(wo: WorkOrderReleased, line_id: str, picked_qty: int, short_qty: int) -> WorkOrderShortPicked:
    line = next(x for x in wo.lines if x.line_id == line_id)
    return WorkOrderShortPicked(
        lines=(
            ShortLine(line_id=line_id, sku=line.sku, quantity_picked=picked_qty, quantity_short=short_qty),
        ),
        **_node(wo),
    )


# ------------------------------------------------------------------ tests


async def test_short_pick_raises_one_exception_with_the_missing_quantity(monitor: Monitor) -> None:
    order_id, node_id = uid("O-short"), uid("N")
    wo = work_order(order_id, node_id, [("SKU-A", 2), ("SKU-B", 1)])
    await monitor.release(wo)
    await monitor.publish(acked(wo), short(wo, "L1", 1, 1))
    await monitor.wait(lambda: bool(monitor.seen.kinds(order_id, "short_pick")), "the short pick exception")
    await asyncio.sleep(1)
    assert monitor.seen.event_kinds(order_id) == ["short_pick"]
    [exc] = monitor.seen.kinds(order_id, "short_pick")
    assert exc["exception_id"] == f"{wo.work_order_id}:short_pick"
    assert (exc["node_id"], exc["work_order_id"], exc["shipment_id"]) == (
        node_id,
        wo.work_order_id,
        wo.shipment_id,
    )
    assert exc["unfilled"] == [{"line_id": "L1", "sku": "SKU-A", "quantity": 1}]
    assert exc["line_ids"] == ["L1"]
    assert exc["detail"] == f"node {node_id} picked 1 of 2 SKU-A"
    assert await monitor.state_of(wo.work_order_id) == "picked"


async def test_not_acknowledged_fires_once_across_restarts_and_not_when_acknowledged(
    monitor: Monitor,
) -> None:
    silent = work_order(uid("O-silent"), uid("N"), [("SKU-A", 1), ("SKU-B", 2)])
    prompt = work_order(uid("O-prompt"), uid("N"), [("SKU-A", 1)])
    await monitor.release(silent, prompt)
    await monitor.publish(acked(prompt))
    await monitor.wait(lambda: bool(monitor.seen.kinds(silent.order_id)), "not_acknowledged", timeout=15)
    [exc] = monitor.seen.kinds(silent.order_id)
    assert exc["kind"] == "not_acknowledged"
    assert exc["exception_id"] == f"{silent.work_order_id}:not_acknowledged"
    assert exc["unfilled"] == [
        {"line_id": "L1", "sku": "SKU-A", "quantity": 1},
        {"line_id": "L2", "sku": "SKU-B", "quantity": 2},
    ]

    # A work order whose deadline passes while the stage is down fires once it is back.
    while_down = work_order(uid("O-down"), uid("N"), [("SKU-C", 1)])
    await monitor.release(while_down)
    await monitor.stop()
    await asyncio.sleep(2.5)
    monitor.start()
    await monitor.wait(
        lambda: bool(monitor.seen.kinds(while_down.order_id)), "not_acknowledged after restart"
    )
    await asyncio.sleep(2)  # several ticks of the new process
    assert [e["kind"] for e in monitor.seen.kinds(silent.order_id)] == ["not_acknowledged"]
    assert [e["kind"] for e in monitor.seen.kinds(while_down.order_id)] == ["not_acknowledged"]
    assert monitor.seen.kinds(prompt.order_id) == []


async def test_a_closed_node_strands_its_open_work(monitor: Monitor) -> None:
    node_id = uid("N-closing")
    open_1 = work_order(uid("O-close"), node_id, [("SKU-A", 1)])
    open_2 = work_order(uid("O-close"), node_id, [("SKU-B", 3)])
    gone = work_order(uid("O-close"), node_id, [("SKU-C", 1)])
    elsewhere = work_order(uid("O-close"), uid("N-other"), [("SKU-D", 1)])
    await monitor.release(open_1, open_2, gone, elsewhere)
    await monitor.publish(acked(open_1), acked(open_2), acked(gone), acked(elsewhere), shipped(gone))
    deadline = time.monotonic() + 15
    while await monitor.state_of(gone.work_order_id) != "shipped":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await monitor.publish(
        NodeStatusChanged(node_id=node_id, open=False, reason="flooded", changed_at=datetime.now(UTC))
    )
    for wo in (open_1, open_2):
        await monitor.wait(lambda wo=wo: bool(monitor.seen.kinds(wo.order_id, "node_closed")), "node_closed")
    await asyncio.sleep(1)
    for wo, lines in ((open_1, [("SKU-A", 1)]), (open_2, [("SKU-B", 3)])):
        [exc] = monitor.seen.kinds(wo.order_id, "node_closed")
        assert exc["work_order_id"] == wo.work_order_id and exc["node_id"] == node_id
        assert exc["unfilled"] == [{"line_id": "L1", "sku": s, "quantity": q} for s, q in lines]
        assert "flooded" in exc["detail"]
    assert monitor.seen.kinds(gone.order_id, "node_closed") == []
    assert monitor.seen.kinds(elsewhere.order_id, "node_closed") == []


async def test_a_carrier_delay_past_the_promise_puts_it_at_risk(monitor: Monitor) -> None:
    wo = work_order(uid("O-delay"), uid("N"), [("SKU-A", 1)])
    await monitor.release(wo)
    late = PROMISED + timedelta(days=2)
    await monitor.publish(
        acked(wo),
        shipped(wo),
        ShipmentPickedUp(**_carrier(wo)),
        ShipmentDelayed(new_estimated_delivery=PROMISED, reason="weather", **_carrier(wo)),  # still in time
        ShipmentDelayed(new_estimated_delivery=late, reason="weather", **_carrier(wo)),
        ShipmentDelayed(new_estimated_delivery=late, reason="weather", **_carrier(wo)),  # said again
    )
    await monitor.wait(lambda: bool(monitor.seen.kinds(wo.order_id, "carrier_delay")), "carrier_delay")
    await asyncio.sleep(1)
    [exc] = monitor.seen.kinds(wo.order_id, "carrier_delay")
    assert exc["new_estimate"] == late.isoformat()
    assert exc["exception_id"] == f"{wo.work_order_id}:carrier_delay:{late.isoformat()}"
    assert exc["shipment_id"] == wo.shipment_id
    # And the carrier then goes quiet: past the 2 s scan deadline, one no_carrier_scan.
    await monitor.wait(lambda: bool(monitor.seen.kinds(wo.order_id, "no_carrier_scan")), "no_carrier_scan")
    await asyncio.sleep(1)
    [quiet] = monitor.seen.kinds(wo.order_id, "no_carrier_scan")
    assert quiet["exception_id"].startswith(f"{wo.work_order_id}:no_carrier_scan:")
    assert tracking(wo) in quiet["detail"]


async def test_a_collect_in_store_order_waits_for_its_customer_not_for_a_carrier_scan(
    monitor: Monitor,
) -> None:
    # The same store has a parcel to ship and a collect-in-store order ready, both "shipped" at once.
    node_id = uid("STORE")
    parcel = work_order(uid("O-parcel"), node_id, [("SKU-A", 1)])
    pickup = work_order(uid("O-bopis"), node_id, [("SKU-A", 1)]).model_copy(
        update={"delivery": StorePickup(kind="bopis", pickup_store_id=node_id), "carrier": None}
    )
    await monitor.release(parcel, pickup)
    await monitor.publish(acked(parcel), acked(pickup), shipped(parcel), shipped(pickup))
    await monitor.wait(
        lambda: bool(monitor.seen.kinds(parcel.order_id, "no_carrier_scan")), "no_carrier_scan"
    )
    due = {
        r["work_order_id"]: r["scan_due_at"]
        for r in await monitor.db.fetch(
            "SELECT work_order_id, scan_due_at FROM monitor_shipments WHERE work_order_id = ANY($1::text[])",
            [parcel.work_order_id, pickup.work_order_id],
        )
    }
    # The parcel's carrier owed a scan 2 s after it shipped; the customer has 6 s to collect.
    assert due[pickup.work_order_id] - due[parcel.work_order_id] > timedelta(seconds=3)
    assert monitor.seen.kinds(pickup.order_id) == []
    # Past the collection window: one exception, saying what is missing.
    await monitor.wait(lambda: bool(monitor.seen.kinds(pickup.order_id, "no_carrier_scan")), "not collected")
    [uncollected] = monitor.seen.kinds(pickup.order_id, "no_carrier_scan")
    assert f"collect-in-store order ready at {node_id}" in uncollected["detail"]
    assert "not collected by" in uncollected["detail"]


async def test_an_order_is_partially_shipped_then_shipped_then_delivered(monitor: Monitor) -> None:
    order_id, node_id = uid("O-deliver"), uid("N")
    first = work_order(order_id, node_id, [("SKU-A", 1)], n=1)
    second = work_order(order_id, node_id, [("SKU-B", 1)], n=2)
    await monitor.release(first, second)
    await monitor.publish(acked(first), acked(second), shipped(first))
    await monitor.wait(lambda: monitor.seen.states(order_id) == ["partially_shipped"], "partially_shipped")
    await monitor.publish(shipped(second), ShipmentDelivered(**_carrier(first)))
    await monitor.wait(lambda: monitor.seen.states(order_id) == ["partially_shipped", "shipped"], "shipped")
    await monitor.publish(ShipmentDelivered(received_by="J. Smith", **_carrier(second)))
    await monitor.wait(lambda: "delivered" in monitor.seen.states(order_id), "delivered")
    await asyncio.sleep(1)
    assert monitor.seen.states(order_id) == ["partially_shipped", "shipped", "delivered"]
    assert all(s["sequence"] == 1 for s in monitor.seen.statuses[order_id])
    assert monitor.seen.statuses[order_id][-1]["detail"] == "all 2 shipment(s) delivered"


async def test_repeated_and_late_events_change_nothing_twice(monitor: Monitor) -> None:
    order_id = uid("O-dup")
    wo = work_order(order_id, uid("N"), [("SKU-A", 2)])
    await monitor.release(wo)
    first = await monitor.publish(acked(wo), picked(wo), packed(wo), short(wo, "L1", 1, 1), shipped(wo))
    ship = first[-1]
    # The same records again (a producer retry), the same facts under new ids (a WMS resend),
    # and milestones already passed arriving late.
    await monitor.republish(*first)
    await monitor.publish(short(wo, "L1", 1, 1), shipped(wo), packed(wo), acked(wo))
    await monitor.publish(ShipmentPickedUp(**_carrier(wo)), ShipmentDelivered(**_carrier(wo)))
    await monitor.wait(lambda: "delivered" in monitor.seen.states(order_id), "delivered")
    await monitor.publish(
        ShipmentDelivered(**_carrier(wo)), ShipmentInTransit(location="Leeds", **_carrier(wo))
    )
    await monitor.republish(ship)
    await asyncio.sleep(2)
    assert monitor.seen.states(order_id) == ["shipped", "delivered"]
    assert monitor.seen.event_kinds(order_id) == ["short_pick"]
    assert await monitor.state_of(wo.work_order_id) == "delivered"


async def test_events_for_work_never_released_are_dead_lettered_after_the_park_limit(
    monitor: Monitor,
) -> None:
    order_id = uid("O-unknown")
    stray = work_order(order_id, uid("N"), [("SKU-A", 1)])  # never released
    started = time.monotonic()
    sent = await monitor.publish(acked(stray), ShipmentDelivered(**_carrier(stray)))
    await monitor.wait(lambda: len(monitor.seen.dead[order_id]) == 2, "two dead letters")
    assert time.monotonic() - started >= TIMERS.park_limit.total_seconds(), "parked until the limit"
    by_topic = {h["dlq_source_topic"]: (v, h) for v, h in monitor.seen.dead[order_id]}
    # The records as they arrived, and why.
    assert {h["ce_id"] for _, h in by_topic.values()} == {e.id for e in sent}
    wms_value, wms = by_topic["wms.events.v1"]
    assert wms_value["work_order_id"] == stray.work_order_id
    assert (wms["dlq_category"], wms["dlq_stage"]) == ("never_released", "monitor")
    assert wms["dlq_reason"].startswith(
        f"work order {stray.work_order_id} of order {order_id} was never released: "
        "the wms.acknowledged.v1 event waited"
    )
    _, carrier = by_topic["carrier.events.v1"]
    assert carrier["dlq_category"] == "never_released"
    assert tracking(stray) in carrier["dlq_reason"] and "was never released" in carrier["dlq_reason"]
    assert monitor.seen.kinds(order_id) == [] and monitor.seen.states(order_id) == []
    parked = await monitor.db.fetchval(
        "SELECT count(*) FROM monitor_parked_events WHERE order_id = $1", order_id
    )
    assert parked == 0
