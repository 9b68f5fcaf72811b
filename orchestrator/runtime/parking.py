"""Parking: keeping an event that came before what it is about, without holding its partition.

An event on one topic can name something announced on another (a node's report on a work order
whose release is still queued elsewhere, a store's receipt of a return the OMS has not authorised
yet). Pausing the partition until it comes would hold up every event behind it. Instead a stage
keeps the record exactly as it arrived, in a table of its own, in the transaction that commits its
offset; the handler of what it waited for replays it there; a ticker asks for those still waiting
after a limit to be dead-lettered. monitor and returns park this way.

This module holds what every parking stage shares: the record as stored, the advisory lock that
serialises parking with replaying, and the replay of one stored record through the stage's own
handler. Each stage keeps its own table, with these record columns and its own keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from orchestrator.contract.envelope import DecodeError, Envelope, decode
from orchestrator.runtime.stage import HandlerContext, RejectEvent
from orchestrator.runtime.worker import TRANSIENT_ERRORS

#: The columns of a parking table that hold the Kafka record, in `record_values` order.
RECORD_COLUMNS = (
    "source_topic, source_partition, source_offset, source_timestamp, record_key, record_value,"
    " header_names, header_values"
)


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """A parked event's Kafka record as it arrived (a ConsumedRecord: a dead letter sends it unchanged)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> ParkedRecord:
        return cls(
            topic=r["source_topic"],
            partition=r["source_partition"],
            offset=r["source_offset"],
            timestamp=r["source_timestamp"],
            key=r["record_key"],
            value=r["record_value"],
            headers=list(zip(r["header_names"], r["header_values"], strict=True)),
        )


def record_values(ctx: HandlerContext, stage: str) -> tuple[object, ...]:
    """The values of RECORD_COLUMNS for the record of the event `ctx` handles."""
    record = ctx.record
    if record is None:
        raise RuntimeError(f"{stage} parks only events the runtime delivered with their record")
    headers = list(record.headers or ())
    return (
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        [k for k, _ in headers],
        [v for _, v in headers],
    )


async def park(ctx: HandlerContext, table: str, stage: str, waits_on: Mapping[str, object]) -> None:
    """Keep the event `ctx` handles in the parking table `table`, as it arrived, with what it waits
    on (`waits_on`: the table's own columns). The event id is the key: an event delivered again (a
    resend, a replayed batch) is parked once."""
    columns = ", ".join(["event_id", *waits_on, "event_type", RECORD_COLUMNS, "parked_at"])
    values = (ctx.event.id, *waits_on.values(), ctx.event.type, *record_values(ctx, stage), ctx.now)
    slots = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    await ctx.db.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({slots}) ON CONFLICT (event_id) DO NOTHING", *values
    )


async def lock_parking(conn: asyncpg.Connection, space: int, key: str) -> None:
    """Serialise parking the events about `key` with the handler that replays them, until commit.

    A row lock cannot do it: before what the events wait for exists there is no row to lock.
    `space` is the stage's own space of two-key advisory locks; a collision of two keys' hashes
    only serialises them.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", space, key)


def waited(since: datetime, now: datetime) -> str:
    """How long an event has been parked, in whole seconds: "0:01:05"."""
    return str(timedelta(seconds=max(0, round((now - since).total_seconds()))))


async def parked_gauge(conn: asyncpg.Connection, table: str, now: datetime) -> tuple[int, float]:
    """How many events wait in the parking table `table`, and how long the oldest has (0 when none)."""
    row = await conn.fetchrow(f"SELECT count(*) AS parked, min(parked_at) AS oldest FROM {table}")
    assert row is not None
    oldest = row["oldest"]
    return row["parked"], max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


async def take_expired(
    ctx: HandlerContext,
    table: str,
    columns: str,
    event_id: str,
    *,
    limit: timedelta,
    due_at: datetime,
) -> asyncpg.Record | None:
    """The parked event `event_id`, taken out of `table` to be dead-lettered, if it waited past the
    limit; None when it was replayed meanwhile or has not waited long enough. Call it under the
    parking lock that its replay takes."""
    row = await ctx.db.fetchrow(f"SELECT {columns} FROM {table} WHERE event_id = $1", event_id)
    if row is None:
        ctx.log.info("parked event no longer waiting (replayed)", parked_event_id=event_id)
        return None
    # Expired by this instance's limit, or by the ticker's (it saw this very wait run out).
    if row["parked_at"] + limit > max(ctx.now, due_at):
        ctx.log.info("parked event not expired yet", parked_event_id=event_id)
        return None
    await ctx.db.execute(f"DELETE FROM {table} WHERE event_id = $1", event_id)
    return row


class ReplayContext(HandlerContext):
    """The context of a parked event being replayed (inside the handler of what made it known)."""


async def replay(
    ctx: HandlerContext,
    row: asyncpg.Record,
    handle: Callable[[Envelope, HandlerContext], Awaitable[None]],
    *,
    still_waiting: type[Exception],
    unpark: Callable[[str], Awaitable[None]],
) -> bool:
    """Replay one parked event (a row with `event_id`, `event_type`, `parked_at` and RECORD_COLUMNS)
    inside the handler `ctx` of what it waited for; False when it is still waiting.

    It is handled by the same code as when it arrived, as itself: its outputs are its own children,
    and join `ctx`'s. It runs in a savepoint: one that fails takes back its own changes, not those of
    the handler replaying it, and is dead-lettered with the reason; it must not cost that handler.
    """
    record = ParkedRecord.from_row(row)
    log = ctx.log.bind(replayed_event_id=row["event_id"], replayed_event_type=row["event_type"])
    try:
        event = decode(record.key, record.value, record.headers, timestamp_ms=record.timestamp)
    except DecodeError as exc:  # it decoded when parked: only a contract change since can do this
        await unpark(row["event_id"])
        ctx.dead_letter(record, exc.category, exc.reason)
        return True
    again = ReplayContext(
        stage=ctx.stage, topic=record.topic, event=event, db=ctx.db, now=ctx.now, log=log, record=record
    )
    try:
        async with ctx.db.transaction():
            await handle(event, again)
    except still_waiting:
        return False
    except RejectEvent as exc:
        category, reason = exc.category, exc.reason
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.exception("replayed event raised")
        category, reason = "handler_error", f"{type(exc).__name__}: {exc}"
    else:
        await unpark(event.id)
        ctx.emitted.extend(again.emitted)
        ctx.dead_letters.extend(again.dead_letters)
        ctx.deferred.extend(again.deferred)
        ctx.on_commit.extend(again.on_commit)
        log.info("parked event replayed", waited=waited(row["parked_at"], ctx.now))
        return True
    await unpark(event.id)
    ctx.dead_letter(record, category, reason)
    return True


__all__ = [
    "RECORD_COLUMNS",
    "ParkedRecord",
    "ReplayContext",
    "lock_parking",
    "park",
    "parked_gauge",
    "record_values",
    "replay",
    "take_expired",
    "waited",
]
