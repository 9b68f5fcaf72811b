"""The harness of the end-to-end tests: every stage running on the real Kafka and
PostgreSQL, upstream systems played by publishing to the public topics, and
everything the orchestrator publishes collected by order id."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from orchestrator.contract.common import (
    Address,
    Channel,
    CustomerTier,
    HoldReason,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    ServiceLevel,
)
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.network import (
    CarrierServiceUpserted,
    DistanceBand,
    DistanceBandCost,
    NodeUpserted,
)
from orchestrator.contract.orders import OrderCreated
from orchestrator.runtime.kafka_client import Bootstrap
from orchestrator.runtime.process import run_stages
from orchestrator.settings import Settings
from orchestrator.stages import ORDER_STAGES, order_path_deps
from orchestrator.stages.common import OrderPathDeps
from orchestrator.topics import apply_topics, load_catalog
from tests.support import follow, free_port, publish_events

# Places in England, so distances (and so shipping costs) are real.
LONDON = (51.5074, -0.1278, "EC1A 1BB")
MANCHESTER = (53.4808, -2.2426, "M1 1AE")
BIRMINGHAM = (52.4862, -1.8904, "B1 1AA")
LEEDS = (53.8008, -1.5491, "LS1 1UR")
BRISTOL = (51.4545, -2.5879, "BS1 4DJ")


def address(place: tuple[float, float, str], city: str = "Somewhere") -> Address:
    lat, lon, postcode = place
    return Address(
        line1="1 High Street", city=city, postal_code=postcode, country="GB", latitude=lat, longitude=lon
    )


@dataclass
class Outputs:
    """Everything the orchestrator published on its public output topics, by order id."""

    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    work_orders: dict[str, list[tuple[str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    notifications: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    exceptions: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    #: Return statuses (`return.status_changed.v1` on oms.status.v1), by return id.
    returns: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: The stages' task: a wait fails at once, with the cause, if the stages died.
    runner: asyncio.Task[None] | None = None

    async def wait(
        self, check: Callable[[], bool], what: str | Callable[[], str], timeout: float = 60
    ) -> None:
        """Until `check()`; `what` says what was awaited (a function: worked out when it failed)."""
        deadline = time.monotonic() + timeout

        def said() -> str:
            return what() if callable(what) else what

        while not check():
            if self.runner is not None and self.runner.done():
                raise AssertionError(
                    f"the stages stopped while waiting for {said()}"
                ) from self.runner.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {said()}")
            await asyncio.sleep(0.1)

    def states(self, order_id: str) -> list[str]:
        return [s["state"] for s in self.statuses[order_id]]

    def released(self, order_id: str) -> list[dict[str, Any]]:
        return [wo for kind, wo in self.work_orders[order_id] if kind == "workorder.released.v1"]

    def cancel_requests(self, order_id: str) -> list[dict[str, Any]]:
        return [wo for kind, wo in self.work_orders[order_id] if kind == "workorder.cancel_requested.v1"]

    async def final_state(self, order_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        await self.wait(
            lambda: bool(self.statuses[order_id]) and self.statuses[order_id][-1]["state"] in states,
            lambda: f"{order_id} to reach {states} (so far {self.states(order_id)})",
            timeout,
        )
        return self.statuses[order_id][-1]


async def _collect(bootstrap: Bootstrap, outputs: Outputs, stop: asyncio.Event) -> None:
    def record(rec: Any) -> None:
        headers = {k: v.decode() for k, v in rec.headers}
        value = orjson.loads(rec.value)
        if rec.topic == "oms.status.v1" and headers["ce_type"] == "return.status_changed.v1":
            outputs.returns[value["return_id"]].append(value)
        elif rec.topic == "oms.status.v1":
            outputs.statuses[value["order_id"]].append(value)
        elif rec.topic == "customer.notifications.v1":
            outputs.notifications[value["order_id"]].append(value)
        elif rec.topic == "orchestrator.exceptions.v1":
            outputs.exceptions[value["order_id"]].append((headers["ce_type"], value))
        else:
            outputs.work_orders[value["order_id"]].append((headers["ce_type"], value))

    topics = (
        "oms.status.v1",
        "wms.work-orders.v1",
        "customer.notifications.v1",
        "orchestrator.exceptions.v1",
    )
    await follow(bootstrap, topics, record, stop)


@dataclass
class Pipeline:
    bootstrap: Bootstrap
    db: asyncpg.Pool
    deps: OrderPathDeps
    out: Outputs
    database_url: str
    #: Where the stages' process serves /metrics (only for a module that sets `PIPELINE_METRICS`).
    metrics_port: int | None = None

    async def publish(self, *payloads: Any) -> None:
        by_topic: dict[str, list[Envelope]] = defaultdict(list)
        for p in payloads:
            topic = {
                "order": "oms.orders.v1",
                "inventory": "inventory.updates.v1",
                "network": "network.updates.v1",
                "wms": "wms.events.v1",
                "carrier": "carrier.events.v1",
                # The OMS authorises returns; nodes report what they received and inspected.
                "return": "wms.return-events.v1"
                if p.event_type in ("return.received.v1", "return.inspected.v1")
                else "oms.returns.v1",
            }[p.event_type.split(".")[0]]
            by_topic[topic].append(Envelope.new(p, source="test/upstream"))
        for topic, envelopes in by_topic.items():
            await publish_events(self.bootstrap, topic, envelopes)

    async def setup_network(self, *events: Any, stock: dict[tuple[str, str], int] | None = None) -> None:
        """Publish nodes and stock, and wait until the stages can see them."""
        await self.publish(*events)
        node_ids = {e.node_id for e in events if hasattr(e, "node_id")}
        await self.out.wait(
            lambda: node_ids <= set(self.deps.network.state.nodes), f"nodes {node_ids} in the network view"
        )
        if stock:
            await self.publish(
                *(
                    InventorySnapshot(node_id=n, sku=s, on_hand=q, safety_stock=0, as_of=datetime.now(UTC))
                    for (n, s), q in stock.items()
                )
            )
            deadline = time.monotonic() + 60
            while True:
                rows = await self.db.fetch(
                    "SELECT node_id, sku, on_hand FROM reserve_ledger WHERE sku = ANY($1::text[])",
                    [s for _, s in stock],
                )
                if {(r["node_id"], r["sku"]): r["on_hand"] for r in rows} == stock:
                    break
                assert time.monotonic() < deadline, "stock never reached the ledger"
                await asyncio.sleep(0.1)


def _policy_without_learning(
    tmp: pytest.TempPathFactory, packaged_file: str = "default.yaml", lookahead: dict[str, Any] | None = None
) -> str:
    """A packaged routing policy (`default.yaml` unless named), learning off, `lookahead` settings changed."""
    import yaml

    import orchestrator.policies as packaged

    policy = yaml.safe_load(Path(packaged.__file__).with_name(packaged_file).read_text())
    policy["learning"] = {**policy.get("learning", {}), "enabled": False}
    policy["lookahead"] = {**policy.get("lookahead", {}), **(lookahead or {})}
    path = tmp.mktemp("policy") / f"{Path(packaged_file).stem}-without-learning.yaml"
    path.write_text(yaml.safe_dump(policy))
    return str(path)


@pytest.fixture(scope="module")
async def pipeline(
    request: pytest.FixtureRequest,
    bootstrap: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pipeline]:
    """Every stage in one process. A test module may set `PIPELINE_ENV` (e.g. short timers),
    `PIPELINE_METRICS = True` to learn where the process serves /metrics (`Pipeline.metrics_port`),
    and `PIPELINE_POLICY` to decide with another packaged policy: (file name, look-ahead settings)."""
    await apply_topics(bootstrap, load_catalog())
    env = dict(getattr(request.module, "PIPELINE_ENV", {}))
    packaged_file, lookahead = getattr(request.module, "PIPELINE_POLICY", ("default.yaml", {}))
    # Test modules share one database, and learning from execution would carry one module's short
    # picks and lost parcels into another's routing: it is on only where a module asks for it.
    env.setdefault(
        "ORCHESTRATOR_POLICY_FILE", _policy_without_learning(tmp_path_factory, packaged_file, lookahead)
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deps = order_path_deps()
        stages = [factory(deps) for factory in ORDER_STAGES.values()]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        instance_id="order-path-test",
        # A port chosen now, not at import: one picked minutes earlier may be some client's by now.
        http_port=free_port() if getattr(request.module, "PIPELINE_METRICS", False) else 0,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
    )
    stop = asyncio.Event()
    outputs = Outputs()
    runner = asyncio.create_task(run_stages(stages, settings, stop, handle_signals=False))
    outputs.runner = runner
    collector = asyncio.create_task(_collect(bootstrap, outputs, stop))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    p = Pipeline(bootstrap, pool, deps, outputs, database_url, settings.http_port or None)
    await p.publish(*CARRIERS)
    await outputs.wait(lambda: "t-ground" in deps.network.state.services, "carrier services in the view")
    try:
        yield p
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(runner, collector, return_exceptions=True), timeout=60)
        await pool.close()


def _bands(base: str, per_kg: str) -> DistanceBandCost:
    return DistanceBandCost(
        kind="distance_bands",
        currency="GBP",
        base=Decimal(base),
        per_kg=Decimal(per_kg),
        bands=(
            DistanceBand(max_km=50, surcharge=Decimal("0")),
            DistanceBand(max_km=150, surcharge=Decimal("2")),
            DistanceBand(max_km=400, surcharge=Decimal("4")),
            DistanceBand(max_km=2000, surcharge=Decimal("8")),
        ),
    )


CARRIERS = (
    CarrierServiceUpserted(
        service_id="t-ground",
        carrier="tcarrier",
        name="Ground",
        service_level=ServiceLevel.GROUND,
        transit_days=2,
        reliability=0.97,
        hazmat_allowed=True,
        countries=("GB",),
        cost=_bands("3.50", "0.40"),
    ),
    CarrierServiceUpserted(
        service_id="t-express",
        carrier="tcarrier",
        name="Express",
        service_level=ServiceLevel.EXPRESS,
        transit_days=1,
        reliability=0.95,
        hazmat_allowed=False,
        countries=("GB",),
        cost=_bands("7.00", "0.60"),
    ),
    CarrierServiceUpserted(
        service_id="t-nextday",
        carrier="tcarrier",
        name="Next day",
        service_level=ServiceLevel.NEXT_DAY,
        transit_days=1,
        reliability=0.93,
        hazmat_allowed=False,
        countries=("GB",),
        cost=_bands("9.00", "0.80"),
    ),
)


def node(
    node_id: str,
    place: tuple[float, float, str],
    kind: NodeKind = NodeKind.DC,
    *capabilities: NodeCapability,
    is_open: bool = True,
) -> NodeUpserted:
    return NodeUpserted(
        node_id=node_id,
        kind=kind,
        name=node_id,
        location=address(place),
        capabilities=tuple(capabilities),
        daily_capacity=10_000,
        cutoff_local=dtime(23, 59),
        timezone="Europe/London",
        open=is_open,
    )


def order(
    order_id: str,
    lines: list[tuple[str, int]] | list[OrderLine],
    *,
    to: tuple[float, float, str] = LONDON,
    delivery: Any = None,
    ship_complete: bool = False,
    holds: tuple[HoldReason, ...] = (),
    days: int = 5,
) -> OrderCreated:
    order_lines = [
        line
        if isinstance(line, OrderLine)
        else OrderLine(line_id=str(i + 1), sku=line[0], quantity=line[1], unit_price=Decimal("10.00"))
        for i, line in enumerate(lines)
    ]
    return OrderCreated(
        order_id=order_id,
        channel=Channel.WEB,
        customer_id="C-1",
        customer_tier=CustomerTier.STANDARD,
        placed_at=datetime.now(UTC),
        ship_to=address(to, "Customer town"),
        lines=tuple(order_lines),
        order_total=Decimal("10.00") * sum(line.quantity for line in order_lines) + Decimal("4.99"),
        currency="GBP",
        delivery=delivery or HomeDelivery(kind="standard"),
        promised_delivery_date=date.today() + timedelta(days=days),
        ship_complete=ship_complete,
        holds=holds,
    )


def ids(prefix: str) -> Callable[[str], str]:
    tag = uuid.uuid4().hex[:6].upper()
    return lambda name: f"{prefix}-{tag}-{name}"
