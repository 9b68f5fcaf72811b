"""Breakers are moved under one lock, on PostgreSQL: two monitor batches whose failures meet two
nodes in opposite orders wait for each other instead of deadlocking (PostgreSQL would roll one back
to be redone, as monitor's order rows did before they were locked up front)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from orchestrator.domain.learning import LearningPolicy, node_subject
from orchestrator.stages.learning_store import breakers, learn

pytestmark = pytest.mark.integration

#: Long enough for the other batch to take its first breaker before this one asks for its second.
BETWEEN_S = 0.5
FAILURE = {"rejected": 1}


@pytest.fixture
async def connections(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def failures_at(conn: asyncpg.Connection, subjects: list[str], started: asyncio.Event) -> None:
    """One batch: a failure at each subject in turn, in one transaction, as monitor handles a batch."""
    now = datetime.now(UTC)
    async with conn.transaction():
        await learn(conn, subjects[0], FAILURE, now, now, LearningPolicy())
        started.set()
        await asyncio.sleep(BETWEEN_S)
        for subject in subjects[1:]:
            await learn(conn, subject, FAILURE, now, now, LearningPolicy())


async def test_failures_at_two_nodes_in_opposite_orders_wait_instead_of_deadlocking(
    db: asyncpg.Connection, connections: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    n, m = (node_subject(f"DC-{uuid.uuid4().hex[:8]}") for _ in range(2))
    for subject in (n, m):
        await db.execute("INSERT INTO learning_breakers (subject, state) VALUES ($1, 'closed')", subject)
    a, b = connections
    a_started = asyncio.Event()
    first = asyncio.create_task(failures_at(a, [n, m], a_started))
    await a_started.wait()
    second = asyncio.create_task(failures_at(b, [m, n], asyncio.Event()))
    # A deadlock would fail one of them (asyncpg's DeadlockDetectedError) after a second.
    await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
    counted = await db.fetch(
        "SELECT subject, sum(rejected)::int AS rejected FROM learning_buckets"
        " WHERE subject = ANY($1::text[]) GROUP BY subject ORDER BY subject",
        sorted((n, m)),
    )
    assert [(r["subject"], r["rejected"]) for r in counted] == [(s, 2) for s in sorted((n, m))]
    assert {n, m} <= set(await breakers(db))
