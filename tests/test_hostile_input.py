"""Hostile input on every inbound topic, on the real Kafka and PostgreSQL.

Every topic an outside system writes (the OMS's orders and returns, inventory,
the network, node, carrier and return events) gets the same battery of bad
records: not JSON, invalid UTF-8, wrong types, missing and unknown fields,
unknown event types and versions, broken CloudEvents headers, no key or the
wrong key, a 1 MB record, plus each topic's own business nonsense (negative
quantities, a 10,000-line order, events for orders or returns nobody knows,
events out of order, replays). Good records are published on the same
partition before and after them.

What a user checks: each bad record is on `<topic>.dlq` with a category and a
reason a person can act on, or (for an order that parses but makes no sense)
the order is `rejected` with the reason on `oms.status.v1`; replays change
nothing and produce nothing twice; the good records go through; no stage
stops.

Everything is published in one go, one group per topic, all groups at once
against one running pipeline: the cases below only look at what came out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from orchestrator.contract.examples import example
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs
from tests.harness import LONDON, Pipeline, ids, node, order, pipeline

pytestmark = [pytest.mark.integration, pytest.mark.pollutes_dead_letters]
__all__ = ["pipeline"]  # the module-scoped fixture, imported so pytest finds it

#: Returns naming orders not seen yet wait this long for them before they are dead-lettered; node
#: events about returns not authorised yet are parked this long.
PIPELINE_ENV = {"ORCHESTRATOR_EARLY_EVENT_WAIT_S": "2", "ORCHESTRATOR_RETURNS_PARK_LIMIT_S": "2"}

Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

#: A value just under what the broker accepts in one record by default (message.max.bytes, ~1 MiB).
ONE_MEGABYTE = 1_047_000


# ------------------------------------------------------------------------------------ building records


def ce(event_type: str, **override: bytes | None) -> list[tuple[str, bytes]]:
    """CloudEvents headers as an upstream sends them; `override` replaces (None: drops) one."""
    headers: dict[str, bytes | None] = {
        "ce_specversion": b"1.0",
        "ce_id": str(uuid.uuid4()).encode(),
        "ce_type": event_type.encode(),
        "ce_source": b"test/hostile",
        "ce_time": datetime.now(UTC).isoformat().encode(),
        "content-type": b"application/json",
    }
    headers.update(override)
    return [(k, v) for k, v in headers.items() if v is not None]


def rec(event_type: str, payload: dict[str, Any], key: str | None, **override: bytes | None) -> Raw:
    return (key.encode() if key is not None else None, orjson.dumps(payload), ce(event_type, **override))


def dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


@dataclass(frozen=True)
class Inbound:
    """An inbound topic and a valid event of it, which the generic cases spoil."""

    topic: str
    event_type: str
    payload: dict[str, Any]
    key: str
    subject_field: str
    wrong_type: tuple[str, Any]  # a field and a value of the wrong JSON type
    required: str  # a required field to leave out


def generic(t: Inbound) -> dict[str, Raw]:
    """The bad records every inbound topic gets, by case name."""
    good_value = orjson.dumps(t.payload)
    family = t.event_type.rsplit(".", 1)[0]
    wrong = {**t.payload, t.wrong_type[0]: t.wrong_type[1]}
    missing = {k: v for k, v in t.payload.items() if k != t.required}
    # An event another stage owns, valid and correctly keyed, on a topic whose stage does not handle it.
    foreign_type = "inventory.snapshot.v1" if t.topic == "oms.orders.v1" else "order.created.v1"
    foreign = dump(example(foreign_type))
    foreign_key = foreign["sku"] if foreign_type.startswith("inventory") else foreign["order_id"]
    padding = "x" * (ONE_MEGABYTE - len(good_value) - 20)
    return {
        "not_json": (
            t.key.encode(),
            b'{"' + t.subject_field.encode() + b'": "A", "lines": [',
            ce(t.event_type),
        ),
        "invalid_utf8_value": (
            t.key.encode(),
            b'{"' + t.subject_field.encode() + b'": "\xff\xfe"}',
            ce(t.event_type),
        ),
        "invalid_utf8_key": (t.key.encode() + b"\xff", good_value, ce(t.event_type)),
        "invalid_utf8_header": (
            t.key.encode(),
            good_value,
            ce(t.event_type, ce_type=t.event_type.encode() + b"\xc3\x28"),
        ),
        "tombstone": (t.key.encode(), None, ce(t.event_type)),
        "not_an_object": (t.key.encode(), b"[1, 2, 3]", ce(t.event_type)),
        "wrong_type": rec(t.event_type, wrong, t.key),
        "missing_field": rec(t.event_type, missing, t.key),
        "unknown_field": rec(t.event_type, {**t.payload, "loyalty_points": 12}, t.key),
        "unknown_type": rec(f"{family.split('.')[0]}.exploded.v1", t.payload, t.key),
        "unknown_version": rec(f"{family}.v2", t.payload, t.key),
        "foreign_type": rec(foreign_type, foreign, foreign_key),
        "missing_ce_id": rec(t.event_type, t.payload, t.key, ce_id=None),
        "bad_specversion": rec(t.event_type, t.payload, t.key, ce_specversion=b"0.3"),
        "bad_time": rec(t.event_type, t.payload, t.key, ce_time=b"yesterday at noon"),
        "no_key": rec(t.event_type, t.payload, None),
        "wrong_key": rec(t.event_type, t.payload, t.key + "-SOMEONE-ELSE"),
        "one_megabyte": rec(t.event_type, {**t.payload, "padding": padding}, t.key),
    }


@dataclass(frozen=True)
class Dead:
    """Expected: a dead letter of this category whose reason says this."""

    category: str
    says: str
    #: Events about work the monitor has not seen may be parked (waiting for it) instead.
    may_park: bool = False
    #: Another (category, reason) that is as good: a parked event dead-lettered after the park limit.
    otherwise: tuple[str, str] | None = None

    def matches(self, category: str, reason: str) -> bool:
        return any(
            c == category and says in reason
            for c, says in ((self.category, self.says), self.otherwise or (self.category, self.says))
        )


def generic_expectations(subject_field: str) -> dict[str, Dead]:
    return {
        "not_json": Dead("malformed", "value is not valid JSON"),
        "invalid_utf8_value": Dead("malformed", "not valid UTF-8"),
        "invalid_utf8_key": Dead("bad_key", f"is not the event's {subject_field}"),
        "invalid_utf8_header": Dead("unknown_type", "unknown event type"),
        "tombstone": Dead("malformed", "record has no value"),
        "not_an_object": Dead("schema", "<root>: Input should be a valid dictionary"),
        "wrong_type": Dead("schema", "breaks its schema"),
        "missing_field": Dead("schema", "Field required"),
        "unknown_field": Dead("schema", "loyalty_points: Extra inputs are not permitted"),
        "unknown_type": Dead("unknown_type", ".exploded.v1"),
        "unknown_version": Dead("unsupported_version", ".v2' is not supported: this orchestrator reads"),
        "foreign_type": Dead("unexpected_type", "does not handle events of type"),
        "missing_ce_id": Dead("missing_header", "ce_id is missing"),
        "bad_specversion": Dead("bad_header", "ce_specversion '0.3' is not supported"),
        "bad_time": Dead("bad_header", "is not an RFC 3339 time"),
        "no_key": Dead("bad_key", "record has no key"),
        "wrong_key": Dead("bad_key", f"is not the event's {subject_field}"),
        "one_megabyte": Dead("schema", "padding: Extra inputs are not permitted"),
    }


# ------------------------------------------------------------------------- what each topic gets

OMS, INVENTORY, NETWORK = "oms.orders.v1", "inventory.updates.v1", "network.updates.v1"
WMS, CARRIER, RETURNS, RETURN_EVENTS = (
    "wms.events.v1",
    "carrier.events.v1",
    "oms.returns.v1",
    "wms.return-events.v1",
)
INBOUND = (OMS, INVENTORY, NETWORK, WMS, CARRIER, RETURNS, RETURN_EVENTS)

SUBJECT = {OMS: "order_id", INVENTORY: "sku", NETWORK: "node_id"}

NEVER = ("never_released", "was never released")

#: Topic-specific bad records and what becomes of each.
SPECIFIC: dict[str, dict[str, Dead]] = {
    OMS: {
        "amend_unknown_order": Dead("unknown_order", "order.amended.v1 for unknown order"),
        "cancel_unknown_order": Dead("unknown_order", "order.cancelled.v1 for unknown order"),
        "hold_release_unknown_order": Dead("unknown_order", "order.hold_released.v1 for unknown order"),
        "amend_before_create": Dead("unknown_order", "order.amended.v1 for unknown order"),
        "create_again_new_id": Dead("duplicate_order", "already exists"),
        "amend_unknown_line": Dead("bad_amendment", "amendment names line 99, which order"),
        "amend_negative_quantity": Dead("schema", "line_quantities.0.quantity"),
        "amend_removes_every_line": Dead("bad_amendment", "removes every line"),
        "amend_after_cancel": Dead("order_cancelled", "which is cancelled"),
    },
    INVENTORY: {
        "negative_on_hand": Dead("schema", "on_hand: Input should be greater than or equal to 0"),
        "zero_delta": Dead("schema", "change must not be 0"),
        "on_hand_beyond_the_ledger": Dead("database_error", "value out of int32 range"),
    },
    NETWORK: {
        "negative_capacity": Dead("schema", "daily_capacity: Input should be greater than or equal to 0"),
    },
    WMS: {
        "wrong_node": Dead("wrong_node", "was released to node"),
        "unknown_work_order": Dead("unknown_work_order", "monitor never saw it released", True, NEVER),
        "unknown_order": Dead("unknown_work_order", "monitor never saw it released", True, NEVER),
        "negative_short_pick": Dead("schema", "quantity_short: Input should be greater than 0"),
        "zero_short_pick": Dead("schema", "quantity_short: Input should be greater than 0"),
    },
    CARRIER: {
        "unknown_shipment": Dead("unknown_shipment", "has no work order with tracking number", True, NEVER),
    },
    RETURNS: {
        "unknown_order": Dead("unknown_order", "ingest has not seen it"),
        "more_than_ordered": Dead("return_refused", "the order has 3"),
        "authorised_again_new_id": Dead("duplicate_return", "is already authorised"),
        "negative_quantity": Dead("schema", "lines.0.quantity: Input should be greater than 0"),
        "cancel_unknown_return": Dead("unknown_return", "unknown return"),
    },
    RETURN_EVENTS: {
        "unknown_return": Dead("unknown_return", "unknown return"),
        "more_than_authorised": Dead("return_refused", "authorised 1"),
    },
}

#: Orders that parse but make no sense: rejected, the reason on `oms.status.v1`.
REJECTED = {
    "negative_quantity": "non_positive_quantity",
    "zero_quantity": "non_positive_quantity",
    "quantity_beyond_reason": "quantity_too_large",
    "ten_thousand_lines": "too_many_lines",
}


def expectations(topic: str) -> dict[str, Dead]:
    return {**generic_expectations(SUBJECT.get(topic, "order_id")), **SPECIFIC[topic]}


DEAD_CASES = [(topic, case) for topic in INBOUND for case in expectations(topic)]


# ------------------------------------------------------------------------------ running a group


@dataclass
class Run:
    """One topic's group: what was published where, and the dead letters that came of it."""

    topic: str
    partition: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    sent: dict[str, Raw] = field(default_factory=dict)
    dead: dict[int, ConsumerRecord[bytes, bytes]] = field(default_factory=dict)
    parked: set[str] = field(default_factory=set)
    facts: dict[str, Any] = field(default_factory=dict)

    def dead_letter(self, case: str) -> ConsumerRecord[bytes, bytes] | None:
        return self.dead.get(self.offsets[case])


async def send(bootstrap: Bootstrap, run: Run, records: Sequence[tuple[str, Raw]]) -> None:
    """Publish `records` in order on the run's partition and note each one's offset."""
    producer = AIOKafkaProducer(**client_kwargs(bootstrap), acks="all", linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            (name, await producer.send(run.topic, key=k, value=v, headers=h, partition=run.partition))
            for name, (k, v, h) in records
        ]
        for name, fut in futures:
            run.offsets[name] = (await fut).offset
    finally:
        await producer.stop()
    run.sent.update(records)


def text(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", errors="replace") for k, v in headers or ()}


async def parked_ids(p: Pipeline) -> set[str]:
    """Event ids a stage holds back waiting for what they refer to (tables named *park*, if any)."""
    tables = await p.db.fetch(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name LIKE '%park%' AND column_name = 'event_id'"
    )
    found: set[str] = set()
    for t in tables:
        rows = await p.db.fetch(f'SELECT event_id FROM "{t["table_name"]}"')
        found |= {str(r["event_id"]) for r in rows}
    return found


async def collect(p: Pipeline, run: Run, expected: dict[str, Dead], timeout: float = 60) -> None:
    """Read `<topic>.dlq` until every expected case is dead-lettered (or parked, where it may be)."""
    consumer = AIOKafkaConsumer(
        dead_letter_topic(run.topic),
        **client_kwargs(p.bootstrap),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    wanted = {run.offsets[c]: c for c in expected}
    parkable = {c for c, d in expected.items() if d.may_park}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for record in (r for records in batch.values() for r in records):
                h = text(record.headers)
                if h.get("dlq_source_topic") == run.topic and h.get("dlq_source_partition") == str(
                    run.partition
                ):
                    offset = int(h["dlq_source_offset"])
                    if offset in wanted:
                        run.dead[offset] = record
            open_cases = {c for o, c in wanted.items() if o not in run.dead}
            if open_cases & parkable:
                parked = await parked_ids(p)
                run.parked = {c for c in open_cases & parkable if text(run.sent[c][2])["ce_id"] in parked}
            if not open_cases - run.parked:
                return
    finally:
        await consumer.stop()


async def quietly(wait: Any) -> None:
    """Wait for an outcome; if it never comes, the tests that look for it say so, one by one."""
    with contextlib.suppress(AssertionError):
        await wait


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def released_work_order(p: Pipeline, order_id: str) -> dict[str, Any]:
    """The order's work order, once monitor has it too (so node events about it are not early)."""
    await p.out.final_state(order_id, "released")
    await p.out.wait(lambda: bool(p.out.released(order_id)), f"the work order of {order_id}")
    wo = p.out.released(order_id)[0]

    async def monitored() -> bool:
        return bool(
            await p.db.fetchval(
                "SELECT 1 FROM monitor_shipments WHERE work_order_id = $1", wo["work_order_id"]
            )
        )

    await until(monitored, f"monitor to know {wo['work_order_id']}")
    return wo


async def shipment_state(p: Pipeline, work_order_id: str) -> str | None:
    state = await p.db.fetchval("SELECT state FROM monitor_shipments WHERE work_order_id = $1", work_order_id)
    return str(state) if state is not None else None


# ---------------------------------------------------------------------------------------- groups


async def oms_group(p: Pipeline, n: Callable[[str], str], sku: str) -> Run:
    run = Run(OMS)
    g1, g2, g3, g4 = n("G1"), n("G2"), n("G3"), n("G4")
    run.facts.update(good=[g1, g2, g3, g4])

    def created(order_id: str, quantity: int = 1) -> dict[str, Any]:
        return dump(order(order_id, [(sku, quantity)]))

    def amended(order_id: str, line_id: str = "1", quantity: int = 2) -> dict[str, Any]:
        return {"order_id": order_id, "line_quantities": [{"line_id": line_id, "quantity": quantity}]}

    def with_quantity(order_id: str, quantity: int) -> dict[str, Any]:
        data = created(order_id)
        data["lines"][0]["quantity"] = quantity
        return data

    big = created(n("BIG"))
    big["lines"] = [
        {"line_id": str(i), "sku": sku, "quantity": 1, "unit_price": "1.00"} for i in range(1, 10_001)
    ]
    rejected = {
        "negative_quantity": with_quantity(n("NEG"), -2),
        "zero_quantity": with_quantity(n("ZERO"), 0),
        "quantity_beyond_reason": with_quantity(n("HUGE"), 10**12),
        "ten_thousand_lines": big,
    }
    run.facts["rejected"] = {case: data["order_id"] for case, data in rejected.items()}
    unknown = n("NOBODY")
    g1_create = rec("order.created.v1", created(g1), g1)
    spec = Inbound(
        OMS,
        "order.created.v1",
        created(n("SPOILT")),
        n("SPOILT"),
        "order_id",
        ("lines", "many"),
        "customer_id",
    )
    records: list[tuple[str, Raw]] = [
        ("good:G1", g1_create),
        *generic(spec).items(),
        *((case, rec("order.created.v1", data, data["order_id"])) for case, data in rejected.items()),
        ("amend_unknown_order", rec("order.amended.v1", amended(unknown), unknown)),
        (
            "cancel_unknown_order",
            rec("order.cancelled.v1", {"order_id": unknown, "reason": "fraud"}, unknown),
        ),
        (
            "hold_release_unknown_order",
            rec("order.hold_released.v1", {"order_id": unknown, "hold": "payment_pending"}, unknown),
        ),
        # The OMS sent the amendment before the order itself: the order goes through as created.
        ("amend_before_create", rec("order.amended.v1", amended(g3, quantity=5), g3)),
        ("good:G3", rec("order.created.v1", created(g3), g3)),
        ("create_again_new_id", rec("order.created.v1", created(g1), g1)),
        ("replay_same_id", g1_create),
        ("amend_unknown_line", rec("order.amended.v1", amended(g1, line_id="99"), g1)),
        ("amend_negative_quantity", rec("order.amended.v1", amended(g1, quantity=-1), g1)),
        ("amend_removes_every_line", rec("order.amended.v1", amended(g1, quantity=0), g1)),
        ("good:G4", rec("order.created.v1", created(g4), g4)),
        ("good:G4 cancelled", rec("order.cancelled.v1", {"order_id": g4, "reason": "customer_request"}, g4)),
        ("amend_after_cancel", rec("order.amended.v1", amended(g4), g4)),
        ("good:G2", rec("order.created.v1", created(g2), g2)),
    ]
    await send(p.bootstrap, run, records)
    await collect(p, run, expectations(OMS))
    for order_id in (g1, g2, g3):
        await quietly(p.out.final_state(order_id, "released", timeout=30))
    await quietly(p.out.final_state(g4, "cancelled", timeout=10))
    for order_id in run.facts["rejected"].values():
        await quietly(p.out.final_state(order_id, "rejected", timeout=10))
    return run


async def inventory_group(p: Pipeline, n: Callable[[str], str], dc: str) -> Run:
    run = Run(INVENTORY)
    sku = n("INV")
    run.facts.update(node=dc, sku=sku)
    t0 = datetime.now(UTC)

    def snapshot(on_hand: Any, seconds: int) -> dict[str, Any]:
        return {
            "node_id": dc,
            "sku": sku,
            "on_hand": on_hand,
            "safety_stock": 0,
            "as_of": (t0 + timedelta(seconds=seconds)).isoformat(),
        }

    def delta(change: int, seconds: int) -> dict[str, Any]:
        return {
            "node_id": dc,
            "sku": sku,
            "change": change,
            "reason": "receipt",
            "as_of": (t0 + timedelta(seconds=seconds)).isoformat(),
        }

    plus_two = rec("inventory.delta.v1", delta(2, 4), sku)
    spec = Inbound(
        INVENTORY, "inventory.snapshot.v1", snapshot(5, 1), sku, "sku", ("on_hand", "lots"), "as_of"
    )
    records: list[tuple[str, Raw]] = [
        ("good:count 5", rec("inventory.snapshot.v1", snapshot(5, 1), sku)),
        *generic(spec).items(),
        ("negative_on_hand", rec("inventory.snapshot.v1", snapshot(-3, 2), sku)),
        ("zero_delta", rec("inventory.delta.v1", delta(0, 2), sku)),
        ("on_hand_beyond_the_ledger", rec("inventory.snapshot.v1", snapshot(10**12, 2), sku)),
        ("good:count 7", rec("inventory.snapshot.v1", snapshot(7, 3), sku)),
        ("good:+2", plus_two),
        # A count older than the one applied, sent again late under a new id: it is history, not news.
        ("old_count", rec("inventory.snapshot.v1", snapshot(100, 2), sku)),
        ("replay_same_id", plus_two),
        ("good:+1", rec("inventory.delta.v1", delta(1, 5), sku)),
    ]
    await send(p.bootstrap, run, records)
    await collect(p, run, expectations(INVENTORY))
    return run


async def network_group(p: Pipeline, n: Callable[[str], str]) -> Run:
    run = Run(NETWORK)
    before, after = node(n("NET-A"), LONDON), node(n("NET-B"), LONDON)
    run.facts.update(nodes=[before.node_id, after.node_id])
    capacity = {"node_id": before.node_id, "daily_capacity": 100}
    spec = Inbound(
        NETWORK,
        "network.node_capacity_changed.v1",
        capacity,
        before.node_id,
        "node_id",
        ("daily_capacity", "plenty"),
        "daily_capacity",
    )
    records: list[tuple[str, Raw]] = [
        ("good:node A", rec("network.node_upserted.v1", dump(before), before.node_id)),
        *generic(spec).items(),
        (
            "negative_capacity",
            rec("network.node_capacity_changed.v1", {**capacity, "daily_capacity": -5}, before.node_id),
        ),
        ("good:node B", rec("network.node_upserted.v1", dump(after), after.node_id)),
    ]
    await send(p.bootstrap, run, records)
    await collect(p, run, expectations(NETWORK))
    await quietly(p.out.wait(lambda: after.node_id in p.deps.network.state.nodes, "node B", 30))
    return run


async def execution_groups(p: Pipeline, n: Callable[[str], str], sku: str) -> tuple[Run, Run]:
    """Node events, then carrier events, for one released order."""
    order_id = n("W")
    await p.publish(order(order_id, [(sku, 2)]))
    wo = await released_work_order(p, order_id)
    wms, carrier = Run(WMS), Run(CARRIER)
    work = {"work_order_id": wo["work_order_id"], "order_id": order_id, "node_id": wo["node_id"]}
    wms.facts.update(order_id=order_id, work_order_id=wo["work_order_id"])
    now = datetime.now(UTC)

    def node_event(at: datetime = now, **change: Any) -> dict[str, Any]:
        return {**work, "occurred_at": at.isoformat(), **change}

    def short(quantity_short: int) -> dict[str, Any]:
        return node_event(
            lines=[{"line_id": "1", "sku": sku, "quantity_picked": 1, "quantity_short": quantity_short}]
        )

    ack = rec("wms.acknowledged.v1", node_event(), order_id)
    stranger = n("NOBODY")
    tracking = n("TRK")
    shipped = node_event(
        shipment_id=wo["shipment_id"],
        carrier="tcarrier",
        service_id=wo["carrier"]["service_id"],
        tracking_number=tracking,
        packages=[{"package_id": "PKG-1"}],
        lines=[{"line_id": "1", "sku": sku, "quantity": 2}],
    )
    spec = Inbound(
        WMS,
        "wms.acknowledged.v1",
        node_event(),
        order_id,
        "order_id",
        ("node_id", {"id": 1}),
        "work_order_id",
    )
    await send(
        p.bootstrap,
        wms,
        [
            ("good:acknowledged", ack),
            *generic(spec).items(),
            ("wrong_node", rec("wms.acknowledged.v1", {**node_event(), "node_id": n("ELSEWHERE")}, order_id)),
            (
                "unknown_work_order",
                rec("wms.acknowledged.v1", {**node_event(), "work_order_id": n("WO-NOPE")}, order_id),
            ),
            (
                "unknown_order",
                rec(
                    "wms.acknowledged.v1",
                    {**node_event(), "order_id": stranger, "work_order_id": n("WO-X")},
                    stranger,
                ),
            ),
            ("negative_short_pick", rec("wms.short_picked.v1", short(-1), order_id)),
            ("zero_short_pick", rec("wms.short_picked.v1", short(0), order_id)),
            ("replay_same_id", ack),
            ("good:shipped", rec("wms.shipped.v1", shipped, order_id)),
            # An acknowledgement from an hour ago, arriving after the shipment: it moves nothing back.
            ("stale_event", rec("wms.acknowledged.v1", node_event(now - timedelta(hours=1)), order_id)),
        ],
    )
    await collect(p, wms, expectations(WMS))

    async def is_shipped() -> bool:
        return await shipment_state(p, wo["work_order_id"]) == "shipped"

    await until(is_shipped, "the shipment to be shipped")

    scan = {
        "tracking_number": tracking,
        "carrier": "tcarrier",
        "order_id": order_id,
        "shipment_id": wo["shipment_id"],
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    picked_up = rec("carrier.picked_up.v1", scan, order_id)
    spec = Inbound(
        CARRIER, "carrier.picked_up.v1", scan, order_id, "order_id", ("tracking_number", ["T"]), "carrier"
    )
    await send(
        p.bootstrap,
        carrier,
        [
            ("good:picked up", picked_up),
            *generic(spec).items(),
            (
                "unknown_shipment",
                rec(
                    "carrier.picked_up.v1",
                    {**scan, "tracking_number": n("TRK-NOPE"), "shipment_id": n("SHP-NOPE")},
                    order_id,
                ),
            ),
            ("replay_same_id", picked_up),
            (
                "good:delivered",
                rec("carrier.delivered.v1", {**scan, "occurred_at": datetime.now(UTC).isoformat()}, order_id),
            ),
        ],
    )
    await collect(p, carrier, expectations(CARRIER))
    await quietly(p.out.final_state(order_id, "delivered", timeout=30))
    return wms, carrier


async def return_groups(p: Pipeline, n: Callable[[str], str], sku: str) -> tuple[Run, Run]:
    """Returns the OMS authorises, then what the node says it received, for one released order."""
    order_id = n("R")
    await p.publish(order(order_id, [(sku, 3)]))
    await p.out.final_state(order_id, "released")
    returns, events = Run(RETURNS), Run(RETURN_EVENTS)
    rma1, rma2, stranger = n("RMA1"), n("RMA2"), n("NOBODY")
    returns.facts.update(returns=[rma1, rma2])

    def authorised(return_id: str, quantity: int = 1, of: str = order_id) -> dict[str, Any]:
        return {
            "return_id": return_id,
            "order_id": of,
            "lines": [{"line_id": "1", "sku": sku, "quantity": quantity}],
            "reason": "changed_mind",
            "resolution": "refund",
            "method": "ship_back",
            "authorised_at": datetime.now(UTC).isoformat(),
        }

    first = rec("return.authorised.v1", authorised(rma1), order_id)
    spec = Inbound(
        RETURNS,
        "return.authorised.v1",
        authorised(n("RMA-SPOILT")),
        order_id,
        "order_id",
        ("lines", "one"),
        "resolution",
    )
    await send(
        p.bootstrap,
        returns,
        [
            ("good:RMA1", first),
            *generic(spec).items(),
            ("unknown_order", rec("return.authorised.v1", authorised(n("RMA-X"), of=stranger), stranger)),
            (
                "more_than_ordered",
                rec("return.authorised.v1", authorised(n("RMA-MANY"), quantity=10), order_id),
            ),
            ("authorised_again_new_id", rec("return.authorised.v1", authorised(rma1), order_id)),
            (
                "negative_quantity",
                rec("return.authorised.v1", authorised(n("RMA-NEG"), quantity=-1), order_id),
            ),
            (
                "cancel_unknown_return",
                rec(
                    "return.cancelled.v1",
                    {
                        "return_id": n("RMA-NOPE"),
                        "order_id": order_id,
                        "reason": "changed mind",
                        "cancelled_at": datetime.now(UTC).isoformat(),
                    },
                    order_id,
                ),
            ),
            ("replay_same_id", first),
            ("good:RMA2", rec("return.authorised.v1", authorised(rma2), order_id)),
        ],
    )
    await collect(p, returns, expectations(RETURNS))
    await p.out.wait(
        lambda: "awaiting_return" in [s["state"] for s in p.out.returns[rma1]], f"{rma1} to await the goods"
    )
    ro = next(
        wo
        for kind, wo in p.out.work_orders[order_id]
        if kind == "returnorder.released.v1" and wo["return_id"] == rma1
    )

    def received(return_id: str = rma1, quantity: int = 1) -> dict[str, Any]:
        return {
            "return_order_id": ro["return_order_id"],
            "return_id": return_id,
            "order_id": order_id,
            "node_id": ro["node_id"],
            "occurred_at": datetime.now(UTC).isoformat(),
            "lines": [{"line_id": "1", "sku": sku, "quantity": quantity}],
        }

    receipt = rec("return.received.v1", received(), order_id)
    spec = Inbound(
        RETURN_EVENTS, "return.received.v1", received(), order_id, "order_id", ("lines", {"1": 1}), "node_id"
    )
    await send(
        p.bootstrap,
        events,
        [
            *generic(spec).items(),
            ("unknown_return", rec("return.received.v1", received(n("RMA-NOPE")), order_id)),
            ("more_than_authorised", rec("return.received.v1", received(quantity=2), order_id)),
            ("good:received", receipt),
            ("replay_same_id", receipt),
        ],
    )
    await collect(p, events, expectations(RETURN_EVENTS))
    await quietly(p.out.wait(lambda: "received" in [s["state"] for s in p.out.returns[rma1]], "receipt", 30))
    return returns, events


@dataclass
class Hostile:
    runs: dict[str, Run]
    seconds: float


@pytest.fixture(scope="module")
async def hostile(pipeline: Pipeline) -> AsyncIterator[Hostile]:
    """Every group published at once against the running stages; the tests read what came of it."""
    n = ids("HX")
    dc = n("DC")
    skus = {g: n(f"SKU-{g}") for g in ("OMS", "WMS", "RET")}
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, s): 1000 for s in skus.values()})
    started = time.monotonic()
    oms, inventory, network, (wms, carrier), (returns, events) = await asyncio.gather(
        oms_group(pipeline, n, skus["OMS"]),
        inventory_group(pipeline, n, dc),
        network_group(pipeline, n),
        execution_groups(pipeline, n, skus["WMS"]),
        return_groups(pipeline, n, skus["RET"]),
    )
    runs = {r.topic: r for r in (oms, inventory, network, wms, carrier, returns, events)}
    yield Hostile(runs, time.monotonic() - started)


# ----------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("topic", "case"), DEAD_CASES, ids=[f"{t}:{c}" for t, c in DEAD_CASES])
async def test_a_bad_record_is_dead_lettered_with_its_reason(hostile: Hostile, topic: str, case: str) -> None:
    run = hostile.runs[topic]
    expected = expectations(topic)[case]
    letter = run.dead_letter(case)
    if letter is None and expected.may_park:
        assert case in run.parked, f"{case}: neither dead-lettered on {topic}.dlq nor parked"
        return
    assert letter is not None, f"{case}: no dead letter on {topic}.dlq"
    h = text(letter.headers)
    assert expected.matches(h["dlq_category"], h["dlq_reason"]), (h["dlq_category"], h["dlq_reason"])
    assert h["dlq_source_topic"] == topic and h["dlq_stage"], "where it came from and who refused it"


@pytest.mark.parametrize("topic", INBOUND)
async def test_a_dead_letter_of_a_1mb_record_keeps_its_size_and_digest_not_the_whole_value(
    hostile: Hostile, topic: str
) -> None:
    run = hostile.runs[topic]
    original = run.sent["one_megabyte"][1]
    assert original is not None and len(original) > 1_000_000
    letter = run.dead_letter("one_megabyte")
    assert letter is not None, f"the 1 MB record on {topic} was never dead-lettered"
    h = text(letter.headers)
    assert int(h["dlq_value_bytes"]) == len(original)
    assert h["dlq_value_sha256"] == hashlib.sha256(original).hexdigest()
    assert (
        letter.value is not None and len(letter.value) < len(original) and original.startswith(letter.value)
    )


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_an_order_that_makes_no_sense_is_rejected_with_the_reason(
    hostile: Hostile, pipeline: Pipeline, case: str
) -> None:
    run = hostile.runs[OMS]
    last = pipeline.out.statuses[run.facts["rejected"][case]][-1]
    assert last["state"] == "rejected"
    assert REJECTED[case] in [r["code"] for r in last["reasons"]], last["reasons"]
    assert run.dead_letter(case) is None, "rejected, so the OMS hears it: not a dead letter too"


async def test_good_orders_before_between_and_after_the_bad_ones_are_released(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    g1, g2, g3, g4 = hostile.runs[OMS].facts["good"]
    for order_id in (g1, g2, g3):
        assert pipeline.out.states(order_id)[-1] == "released", order_id
    [g3_work] = pipeline.out.released(g3)
    assert g3_work["lines"][0]["quantity"] == 1, "the amendment that came before the order was not applied"
    assert pipeline.out.states(g4)[-1] == "cancelled"


async def test_an_order_event_replayed_with_its_id_has_one_effect(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    run = hostile.runs[OMS]
    g1 = run.facts["good"][0]
    assert run.dead_letter("replay_same_id") is None, "a redelivery is not an error"
    assert pipeline.out.states(g1) == ["received", "validated", "planned", "reserved", "released"]
    assert len(pipeline.out.released(g1)) == 1


async def test_inventory_counts_and_changes_around_the_bad_ones_are_applied_and_old_ones_ignored(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    run = hostile.runs[INVENTORY]

    async def on_hand() -> Any:
        return await pipeline.db.fetchval(
            "SELECT on_hand FROM reserve_ledger WHERE node_id = $1 AND sku = $2",
            run.facts["node"],
            run.facts["sku"],
        )

    # 7 counted, +2, the late count of 100 and the replayed +2 ignored, +1.
    await until(lambda: _equals(on_hand, 10), "the ledger to show 10 on hand")
    assert run.dead_letter("old_count") is None and run.dead_letter("replay_same_id") is None


async def _equals(read: Callable[[], Any], value: Any) -> bool:
    return bool(await read() == value)


async def test_network_events_around_the_bad_ones_reach_the_view(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    for node_id in hostile.runs[NETWORK].facts["nodes"]:
        assert node_id in pipeline.deps.network.state.nodes


async def test_node_and_carrier_events_around_the_bad_ones_move_the_shipment_to_delivered(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    wms, carrier = hostile.runs[WMS], hostile.runs[CARRIER]
    order_id = wms.facts["order_id"]
    assert pipeline.out.states(order_id)[-2:] == ["shipped", "delivered"]
    assert await shipment_state(pipeline, wms.facts["work_order_id"]) == "delivered"
    for run, case in ((wms, "replay_same_id"), (wms, "stale_event"), (carrier, "replay_same_id")):
        assert run.dead_letter(case) is None, f"{run.topic}:{case} is history, not an error"


async def test_returns_around_the_bad_ones_are_authorised_and_received_once(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    rma1, rma2 = hostile.runs[RETURNS].facts["returns"]
    states = [s["state"] for s in pipeline.out.returns[rma1]]
    assert states[0] == "authorised" and states.count("authorised") == 1, (
        "the replay authorised nothing twice"
    )
    assert states.count("received") == 1, "the replayed receipt received nothing twice"
    assert [s["state"] for s in pipeline.out.returns[rma2]][:1] == ["authorised"]
    for topic in (RETURNS, RETURN_EVENTS):
        assert hostile.runs[topic].dead_letter("replay_same_id") is None


async def test_no_stage_stopped_and_the_whole_battery_took_modest_time(
    hostile: Hostile, pipeline: Pipeline
) -> None:
    assert pipeline.out.runner is not None and not pipeline.out.runner.done()
    assert hostile.seconds < 90, f"the hostile battery took {hostile.seconds:.0f} s"
