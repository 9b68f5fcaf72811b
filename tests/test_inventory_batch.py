"""Property: reserve's batch of stock events leaves the ledger exactly as applying them one by one does.

reserve applies a partition's counts and deltas in three statements per batch
(`read_inventory`), not a few per event. On the real PostgreSQL, for random
sequences of counts (in and out of order by `as_of`), deltas (some taking more
than is there), duplicates, reservations already held and shipments that left
after the last count (the shipment log a count must not undo), the rows must equal
those of the per-event statements (`apply_snapshot`, `apply_delta`) that define
the rules, and the in-memory ledger of the promise service must agree with both.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import DeltaReason, InventoryDelta, InventorySnapshot
from orchestrator.promise.ledger import PromiseLedger
from orchestrator.stages.reserve import apply_delta, apply_snapshot, read_inventory
from tests.test_properties_ledger import Pg, pg

pytestmark = pytest.mark.integration
__all__ = ["pg"]

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
KEYS = [("N0", "S0"), ("N0", "S1"), ("N1", "S0")]

#: Values the ledger's integer columns cannot hold, or only just: such an event fails on its own.
HUGE = st.sampled_from([2**31 - 3, 2**31 - 1, 2**31, 10**12])

snapshot = st.builds(
    lambda k, on_hand, safety, minutes: ("count", k, on_hand, safety, minutes),
    st.integers(0, 2),
    st.one_of(st.integers(0, 20), HUGE),
    st.integers(0, 3),
    st.integers(-30, 30),
)
delta = st.builds(
    lambda k, change: ("delta", k, change, 0, 0),
    st.integers(0, 2),
    st.one_of(st.integers(-15, 15).filter(lambda c: c != 0), HUGE, HUGE.map(lambda v: -v)),
)


def events(steps: list[tuple[Any, ...]], tag: str) -> list[Envelope]:
    out = []
    for kind, k, a, b, minutes in steps:
        node_id, sku = KEYS[k]
        node_id, sku = f"{tag}-{node_id}", f"{tag}-{sku}"
        if kind == "count":
            payload: InventorySnapshot | InventoryDelta = InventorySnapshot(
                node_id=node_id, sku=sku, on_hand=a, safety_stock=b, as_of=T0 + timedelta(minutes=minutes)
            )
        else:
            payload = InventoryDelta(
                node_id=node_id, sku=sku, change=a, reason=DeltaReason.ADJUSTMENT, as_of=T0
            )
        out.append(Envelope.new(payload, source="test/wms"))
    return out


async def rows(conn: asyncpg.Connection, tag: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    found = await conn.fetch(
        "SELECT node_id, sku, on_hand, safety_stock, reserved, counted_at FROM reserve_ledger WHERE node_id LIKE $1",
        f"{tag}-%",
    )
    return {
        (r["node_id"].split("-", 1)[1], r["sku"].split("-", 1)[1]): (
            r["on_hand"],
            r["safety_stock"],
            r["reserved"],
            r["counted_at"],
        )
        for r in found
    }


async def seed(conn: asyncpg.Connection, tag: str, held: int, shipped: list[tuple[int, int, int]]) -> None:
    """A row that exists before the batch, with units reserved (they must stay reserved), and the
    shipments that left positions since their last count: (key, minutes after T0, units)."""
    await conn.execute(
        "INSERT INTO reserve_ledger (node_id, sku, on_hand, reserved, counted_at) VALUES ($1, $2, 30, $3, $4)",
        f"{tag}-N0",
        f"{tag}-S0",
        held,
        T0,
    )
    for k, minutes, units in shipped:
        node_id, sku = KEYS[k]
        await conn.execute(
            "INSERT INTO reserve_shipped (node_id, sku, shipped_at, units) VALUES ($1, $2, $3, $4)",
            f"{tag}-{node_id}",
            f"{tag}-{sku}",
            T0 + timedelta(minutes=minutes),
            units,
        )


async def logs(conn: asyncpg.Connection, tag: str) -> list[tuple[Any, ...]]:
    found = await conn.fetch(
        "SELECT node_id, sku, shipped_at, units FROM reserve_shipped WHERE node_id LIKE $1", f"{tag}-%"
    )
    return sorted(
        (r["node_id"].split("-", 1)[1], r["sku"].split("-", 1)[1], r["shipped_at"], r["units"]) for r in found
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.one_of(snapshot, delta), min_size=1, max_size=12),
    duplicate=st.booleans(),
    held=st.integers(0, 10),
    shipped=st.lists(st.tuples(st.just(0), st.integers(1, 30), st.integers(1, 5)), max_size=3),
)
def test_a_batch_of_counts_and_deltas_equals_them_one_by_one(
    pg: Pg, steps: list[tuple[Any, ...]], duplicate: bool, held: int, shipped: list[tuple[int, int, int]]
) -> None:
    one, batch = f"o{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"

    async def go() -> tuple[Any, ...]:
        conn = pg.conn
        async with conn.transaction():
            await seed(conn, one, held, shipped)
            refused = 0
            for env in events(steps, one):
                data = env.data
                try:
                    async with conn.transaction():  # one event failing alone, as its handler would
                        if isinstance(data, InventorySnapshot):
                            await apply_snapshot(conn, data)
                        else:
                            assert isinstance(data, InventoryDelta)
                            await apply_delta(conn, data)
                except (asyncpg.DataError, asyncpg.NumericValueOutOfRangeError, OverflowError):
                    refused += 1
            await seed(conn, batch, held, shipped)
            batch_events = events(steps, batch)
            if duplicate:  # redelivered within the batch: the worker skips the copy, so must the fold
                batch_events.append(batch_events[0])
            applied = await read_inventory(batch_events, conn)
            # What the database refuses one event at a time, the batch leaves to that event's handler.
            assert applied is not None and len(applied.applied) == len(steps) - refused
            return (
                await rows(conn, one),
                await rows(conn, batch),
                await logs(conn, one),
                await logs(conn, batch),
            )

    by_event, by_batch, log_by_event, log_by_batch = pg.run(go())
    assert by_batch == by_event
    assert log_by_batch == log_by_event, "a count forgets the shipments it has seen, in a batch or alone"

    # The promise service's ledger folds the same events by the same rules.
    ledger = PromiseLedger()
    tag = "m"
    ledger.apply(InventorySnapshot(node_id=f"{tag}-N0", sku=f"{tag}-S0", on_hand=30, as_of=T0), T0)
    ledger.positions[(f"{tag}-N0", f"{tag}-S0")].reserved = held
    for k, minutes, units in shipped:
        node_id, sku = KEYS[k]
        position = ledger.positions[(f"{tag}-{node_id}", f"{tag}-{sku}")]
        position.shipped = [*(position.shipped or ()), (T0 + timedelta(minutes=minutes), units)]
    for env in events(steps, tag):
        ledger.apply(env.data, T0)
    in_memory = {
        (node_id.split("-", 1)[1], sku.split("-", 1)[1]): (
            p.on_hand,
            p.safety_stock,
            p.reserved,
            p.counted_at,
        )
        for (node_id, sku), p in ledger.positions.items()
    }
    assert in_memory == by_event
    in_memory_log = sorted(
        (node_id.split("-", 1)[1], sku.split("-", 1)[1], at, units)
        for (node_id, sku), p in ledger.positions.items()
        for at, units in p.shipped or ()
    )
    assert in_memory_log == log_by_event


async def test_a_batch_without_stock_events_reads_nothing(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await read_inventory([], conn) is None
    finally:
        await conn.close()
