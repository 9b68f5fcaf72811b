"""The simulator processes: each plays one kind of outside system against the
public topics, exactly as the real one would (`orchestrator sim ...`).

- `publish_network`: the network admin and ERP: nodes, carrier services and a
  stock count of every SKU at every node, as of now.
- `run_oms`: the OMS: orders at a rate with flash sales, then amendments,
  cancellations and hold releases.
- `run_nodes`: every warehouse, store, 3PL and drop-ship vendor: works the
  released work orders (or fails to), answers cancel requests, closes stores
  for a while now and then, and reports receipts that replace shipped stock.
- `run_carriers`: the carriers: tracking events for every shipment handed over;
  and the customers at the door: now and then one sends a unit of a delivered
  parcel back, which the OMS authorises on `oms.returns.v1`. The nodes then
  receive and inspect what comes back (`run_nodes`).

They are simulators, not part of the orchestrator: they read with their own
consumer groups and auto-committed offsets, and what a simulator has
scheduled but not yet sent is gone if it is killed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import NodeKind
from orchestrator.contract.envelope import header_map
from orchestrator.contract.execution import (
    NodeCancelReason,
    NodeRejectReason,
    ShipmentDelivered,
    WorkOrderCancelledByNode,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.inventory import DeltaReason, InventoryDelta
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.returns import ReturnOrderCancelRequested, ReturnOrderReleased
from orchestrator.contract.work import WorkOrderCancelRequested, WorkOrderReleased
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs
from orchestrator.runtime.pause import sleep_unless
from orchestrator.sim.geography import SimNetwork
from orchestrator.sim.live.behaviour import (
    CarrierRates,
    NodeRates,
    ReturnRates,
    return_request,
    return_steps,
    shipment_steps,
    work_order_steps,
)
from orchestrator.sim.live.oms import OmsTraffic
from orchestrator.sim.live.publisher import Publisher

ORDERS = "oms.orders.v1"
INVENTORY = "inventory.updates.v1"
NETWORK = "network.updates.v1"
WORK_ORDERS = "wms.work-orders.v1"
NODE_EVENTS = "wms.events.v1"
CARRIER_EVENTS = "carrier.events.v1"
RETURNS = "oms.returns.v1"
RETURN_EVENTS = "wms.return-events.v1"


def _now() -> datetime:
    return datetime.now(UTC)


def _stamped(event: EventPayload, field: str = "occurred_at") -> EventPayload:
    return event.model_copy(update={field: _now()})


async def publish_network(bootstrap: Bootstrap, network: SimNetwork) -> int:
    """Nodes, carrier services and a stock count as of now; returns how many events were sent."""
    now = _now()
    async with Publisher(bootstrap, "sim/network-admin") as out:
        for node in network.nodes:
            await out.send(NETWORK, node)
        for service in network.services:
            await out.send(NETWORK, service)
        for count in network.inventory:
            await out.send(INVENTORY, count.model_copy(update={"as_of": now}), source="sim/erp")
        return sum(out.sent.values())


async def run_oms(
    bootstrap: Bootstrap,
    traffic: OmsTraffic,
    *,
    orders: int | None,
    stop: asyncio.Event,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Place orders until `orders` were placed (None: until `stop`), then send what follows them."""
    pending: list[asyncio.Task[None]] = []
    async with Publisher(bootstrap, "sim/oms") as out:

        async def later(after_s: float, event: EventPayload) -> None:
            await asyncio.sleep(after_s)
            await out.send(ORDERS, event)

        started = time.monotonic()
        next_at = started
        n = 0
        while not stop.is_set() and (orders is None or n < orders):
            elapsed = time.monotonic() - started
            n += 1
            order, follow_ups = traffic.order(n, _now(), elapsed)
            await out.send(ORDERS, order)
            pending.extend(asyncio.create_task(later(f.after_s, f.event)) for f in follow_ups)
            progress(n)
            next_at += traffic.gap_s(elapsed)
            delay = next_at - time.monotonic()
            if delay > 0:
                await sleep_unless(stop, delay)
        # Amendments, cancellations and hold releases of orders already placed still go out.
        await asyncio.gather(*pending)
        return n


async def _consume(
    bootstrap: Bootstrap,
    topic: str,
    group: str,
    stop: asyncio.Event,
    handle: Callable[[str, dict[str, object]], Awaitable[None]],
    ready: Callable[[], None],
) -> None:
    """Handle `topic` with `group` until `stop`; `ready()` once partitions are assigned and placed.

    A group that never committed starts at the end: a simulator joining a broker with history
    works what comes from now on, not every work order ever released.
    """
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(bootstrap),
        group_id=group,
        auto_offset_reset="latest",
        enable_auto_commit=True,
        # The orchestrator writes in transactions: what it aborted never happened.
        isolation_level="read_committed",
    )
    await consumer.start()
    is_ready = False
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await _dispatch(record, handle)
            if not is_ready and consumer.assignment():
                for tp in consumer.assignment():
                    await consumer.position(tp)
                is_ready = True
                ready()
    finally:
        await consumer.stop()


async def _dispatch(
    record: ConsumerRecord[bytes, bytes], handle: Callable[[str, dict[str, object]], Awaitable[None]]
) -> None:
    event_type = header_map(record.headers).get("ce_type", "")
    if record.value is not None:
        await handle(event_type, orjson.loads(record.value))


@dataclass
class _WorkInHand:
    node_id: str
    task: asyncio.Task[None]
    shipped: bool = False


@dataclass(frozen=True, slots=True)
class Closures:
    """Stores that close for a while (a power cut, a stock-take), network-wide."""

    per_minute: float = 1.0
    seconds: float = 8.0


class NodeFleet:
    """Every simulated node: works released work orders and reports what happened."""

    def __init__(
        self,
        out: Publisher,
        network: SimNetwork,
        rng: random.Random,
        rates: NodeRates,
        closures: Closures,
        returns: ReturnRates | None = None,
    ) -> None:
        self.out = out
        self.rng = rng
        self.rates = rates
        self.closures = closures
        self.returns = returns or ReturnRates()
        self.kinds = {n.node_id: n.kind for n in network.nodes}
        self.open = {n.node_id: asyncio.Event() for n in network.nodes}
        for event in self.open.values():
            event.set()
        self.work: dict[str, _WorkInHand] = {}
        #: Return work orders in hand, by id: the goods on their way, then being inspected.
        self.coming_back: dict[str, asyncio.Task[None]] = {}
        #: Those whose goods arrived: a void label no longer stops their inspection.
        self.received: set[str] = set()
        self.shipped_units: Counter[tuple[str, str]] = Counter()

    async def handle(self, event_type: str, raw: dict[str, object]) -> None:
        if event_type == WorkOrderReleased.event_type:
            wo = WorkOrderReleased.model_validate(raw)
            if wo.work_order_id in self.work:
                return  # a redelivery: the node already has it
            if wo.node_id in self.open and not self.open[wo.node_id].is_set():
                await self.out.send(
                    NODE_EVENTS,
                    WorkOrderRejected(
                        work_order_id=wo.work_order_id,
                        order_id=wo.order_id,
                        node_id=wo.node_id,
                        occurred_at=_now(),
                        reason=NodeRejectReason.NODE_CLOSED,
                        detail="simulated: the node is closed",
                    ),
                )
                return
            task = asyncio.create_task(self._work(wo))
            self.work[wo.work_order_id] = _WorkInHand(wo.node_id, task)
        elif event_type == ReturnOrderReleased.event_type:
            ro = ReturnOrderReleased.model_validate(raw)
            if ro.return_order_id not in self.coming_back:  # else a redelivery
                self.coming_back[ro.return_order_id] = asyncio.create_task(self._take_back(ro))
        elif event_type == ReturnOrderCancelRequested.event_type:
            # The label is void: goods not received yet never come (received ones stay received).
            stop = ReturnOrderCancelRequested.model_validate(raw)
            coming = self.coming_back.get(stop.return_order_id)
            if coming is not None and stop.return_order_id not in self.received:
                coming.cancel()
        elif event_type == WorkOrderCancelRequested.event_type:
            request = WorkOrderCancelRequested.model_validate(raw)
            hand = self.work.get(request.work_order_id)
            if hand is None or hand.shipped or hand.task.done():
                return  # gone already: nothing left to stop
            hand.task.cancel()
            await self.out.send(
                NODE_EVENTS,
                WorkOrderCancelledByNode(
                    work_order_id=request.work_order_id,
                    order_id=request.order_id,
                    node_id=request.node_id,
                    occurred_at=_now(),
                    reason=NodeCancelReason.REQUESTED,
                ),
            )

    async def _work(self, wo: WorkOrderReleased) -> None:
        opened = self.open.get(wo.node_id)
        for step in work_order_steps(wo, self.rng, self.rates):
            await asyncio.sleep(step.after_s)
            if opened is not None:
                await opened.wait()  # a closed node does nothing until it opens again
            event = _stamped(step.event)
            if isinstance(event, WorkOrderShipped):
                self.work[wo.work_order_id].shipped = True
                for line in event.lines:
                    self.shipped_units[(wo.node_id, line.sku)] += line.quantity
            await self.out.send(NODE_EVENTS, event, source=f"sim/wms/{wo.node_id}")
            if isinstance(event, WorkOrderShortPicked):
                # The node corrects its count: the units it could not find are not there.
                for short in event.lines:
                    adjustment = InventoryDelta(
                        node_id=wo.node_id,
                        sku=short.sku,
                        change=-short.quantity_short,
                        reason=DeltaReason.ADJUSTMENT,
                        reference=f"{wo.work_order_id}-short",
                        as_of=_now(),
                    )
                    await self.out.send(INVENTORY, adjustment, source=f"sim/wms/{wo.node_id}")

    async def _take_back(self, ro: ReturnOrderReleased) -> None:
        steps = return_steps(ro, self.rng, self.returns, self.rates.step_seconds)
        for step in steps:
            await asyncio.sleep(step.after_s)
            await self.out.send(RETURN_EVENTS, _stamped(step.event), source=f"sim/wms/{ro.node_id}")
            self.received.add(ro.return_order_id)

    async def close_stores(self, stop: asyncio.Event) -> None:
        """Now and then a store closes for a few seconds and opens again."""
        stores = sorted(n for n, kind in self.kinds.items() if kind is NodeKind.STORE)
        if not stores or self.closures.per_minute <= 0:
            return
        while not stop.is_set():
            if await sleep_unless(stop, self.rng.expovariate(self.closures.per_minute / 60)):
                return
            store = self.rng.choice(stores)
            if not self.open[store].is_set():
                continue
            self.open[store].clear()
            await self._status(store, open_=False, reason="simulated: power cut")
            await sleep_unless(stop, self.closures.seconds)
            await self._status(store, open_=True, reason="simulated: power back")
            self.open[store].set()

    async def _status(self, node_id: str, *, open_: bool, reason: str) -> None:
        change = NodeStatusChanged(node_id=node_id, open=open_, reason=reason, changed_at=_now())
        await self.out.send(NETWORK, change, source="sim/network-admin")

    async def restock(self, stop: asyncio.Event, every_s: float = 10.0) -> None:
        """Warehouses receive what they shipped (stores are restocked by them, not simulated)."""
        while not stop.is_set():
            await sleep_unless(stop, every_s)
            receipts, self.shipped_units = self.shipped_units, Counter()
            for (node_id, sku), units in sorted(receipts.items()):
                if self.kinds.get(node_id) in (NodeKind.DC, NodeKind.THIRD_PARTY_LOGISTICS):
                    receipt = InventoryDelta(
                        node_id=node_id, sku=sku, change=units, reason=DeltaReason.RECEIPT, as_of=_now()
                    )
                    await self.out.send(INVENTORY, receipt, source="sim/erp")


async def run_nodes(
    bootstrap: Bootstrap,
    network: SimNetwork,
    *,
    seed: int,
    rates: NodeRates,
    closures: Closures,
    stop: asyncio.Event,
    wind_down: asyncio.Event | None = None,
    ready: Callable[[], None] = lambda: None,
) -> Counter[str]:
    """Work released work orders until `stop`; restocks and store closures end at `wind_down` too."""
    quiet = wind_down or asyncio.Event()
    news_stop = asyncio.Event()

    async def stop_news() -> None:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(quiet.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        news_stop.set()

    async with Publisher(bootstrap, "sim/wms") as out:
        fleet = NodeFleet(out, network, random.Random(seed), rates, closures)
        background = [
            asyncio.create_task(stop_news()),
            asyncio.create_task(fleet.close_stores(news_stop)),
            asyncio.create_task(fleet.restock(news_stop)),
        ]
        try:
            await _consume(bootstrap, WORK_ORDERS, "sim.nodes", stop, fleet.handle, ready)
        finally:
            tasks = [*background, *(w.task for w in fleet.work.values()), *fleet.coming_back.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return out.sent


async def run_carriers(
    bootstrap: Bootstrap,
    *,
    seed: int,
    rates: CarrierRates,
    stop: asyncio.Event,
    returns: ReturnRates | None = None,
    ready: Callable[[], None] = lambda: None,
) -> Counter[str]:
    """Track every shipment handed over until `stop`; the customers of delivered parcels send some back."""
    rng = random.Random(seed)
    # Customers decide with their own draws, so the carriers' events stay those of the same seed.
    customers = random.Random(seed + 1)
    asked = returns or ReturnRates()
    returned: set[tuple[str, str]] = set()
    tasks: set[asyncio.Task[None]] = set()
    seen: set[str] = set()
    async with Publisher(bootstrap, "sim/carrier") as out:

        async def track(shipped: WorkOrderShipped) -> None:
            steps = shipment_steps(shipped, rng, rates, _now().date())
            for step in steps:
                await asyncio.sleep(step.after_s)
                await out.send(CARRIER_EVENTS, _stamped(step.event), source=f"sim/carrier/{shipped.carrier}")
            if not isinstance(steps[-1].event, ShipmentDelivered):
                return
            request = return_request(shipped, customers, asked, returned)
            if request is not None:
                # Asked at once, right after the delivery: a run that ends once everything is quiet
                # never stops between a delivery and the return it brings.
                returned.update((request.order_id, line.line_id) for line in request.lines)
                await out.send(RETURNS, _stamped(request, "authorised_at"), source="sim/oms/returns")

        async def handle(event_type: str, raw: dict[str, object]) -> None:
            if event_type != WorkOrderShipped.event_type:
                return
            shipped = WorkOrderShipped.model_validate(raw)
            if shipped.tracking_number in seen:
                return
            seen.add(shipped.tracking_number)
            task = asyncio.create_task(track(shipped))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            await _consume(bootstrap, NODE_EVENTS, "sim.carriers", stop, handle, ready)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return out.sent


__all__ = [
    "Closures",
    "NodeFleet",
    "Publisher",
    "publish_network",
    "run_carriers",
    "run_nodes",
    "run_oms",
]
