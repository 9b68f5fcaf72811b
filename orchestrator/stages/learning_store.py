"""The tables of routing that learns: monitor writes outcomes and breakers,
decide-node reads them through `RiskView`, operators read and override them
(`orchestrator routing`). The arithmetic is in `orchestrator.domain.learning`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import structlog

from orchestrator.contract.base import EventPayload
from orchestrator.contract.execution import WorkOrderShipped
from orchestrator.domain.learning import (
    COUNTERS,
    FAILURES,
    NO_RISK,
    Breaker,
    BreakerState,
    LearningPolicy,
    Measures,
    Override,
    RoutingRisk,
    next_breaker,
    node_outcomes,
    node_subject,
    recent_window_start,
    routing_risk,
    service_outcomes,
    service_subject,
)
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.periodic import read_periodically
from orchestrator.runtime.views import cancel_task
from orchestrator.settings import Settings

#: Taken before a breaker row is locked to move it. A batch may fail at several nodes and services,
#: and two batches meeting them in opposite orders would each hold one breaker the other waits for;
#: under one lock the second waits for the first instead. Only failures (and probes) take it.
BREAKERS_LOCK = 0x4C45_4152_4E42_524B  # "LEARNBRK"

_SUMS = ", ".join(f"COALESCE(sum({c}), 0)::int AS {c}" for c in COUNTERS)


def _minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


async def count_and_read_breaker(
    conn: asyncpg.Connection, subject: str, outcome: Mapping[str, int], at: datetime
) -> asyncpg.Record | None:
    """Add one event's outcome to its subject's minute (a row of its own: see the migration), and
    read the subject's breaker row in the same round trip (None when it has none yet)."""
    columns = [c for c in COUNTERS if outcome.get(c)]
    if not columns:
        return await conn.fetchrow("SELECT * FROM learning_breakers WHERE subject = $1", subject)
    names = ", ".join(columns)
    values = ", ".join(f"${i + 3}" for i in range(len(columns)))
    # The breaker is read, not the buckets: the insert beside it changes nothing it returns.
    row: asyncpg.Record | None = await conn.fetchrow(
        f"WITH counted AS (INSERT INTO learning_buckets (subject, minute, {names}) VALUES ($1, $2, {values}))"
        " SELECT * FROM learning_breakers WHERE subject = $1",
        subject,
        _minute(at),
        *(outcome[c] for c in columns),
    )
    return row


async def measures_since(
    conn: asyncpg.Connection | asyncpg.Pool,
    since: datetime,
    subject: str | None = None,
    *,
    until: datetime | None = None,
) -> dict[str, Measures]:
    """Every subject's counts since `since` (or one subject's), up to `until` (exclusive) if given."""
    args: list[Any] = [_minute(since)]
    where = "minute >= $1"
    if subject:
        args.append(subject)
        where += f" AND subject = ${len(args)}"
    if until is not None:
        args.append(_minute(until))
        where += f" AND minute < ${len(args)}"
    rows = await conn.fetch(
        f"SELECT subject, {_SUMS} FROM learning_buckets WHERE {where} GROUP BY subject", *args
    )
    return {r["subject"]: Measures(**dict(r)) for r in rows}


def _breaker(row: asyncpg.Record) -> Breaker:
    return Breaker(
        subject=row["subject"],
        state=BreakerState(row["state"]),
        since=row["since"],
        until=row["until"],
        reason=row["reason"],
        override=Override(row["override"]) if row["override"] else None,
        override_reason=row["override_reason"],
    )


async def breakers(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Breaker]:
    rows = await conn.fetch("SELECT * FROM learning_breakers")
    return {r["subject"]: _breaker(r) for r in rows}


async def save_breaker(conn: asyncpg.Connection, b: Breaker) -> None:
    await conn.execute(
        "INSERT INTO learning_breakers (subject, state, since, until, reason, override, override_reason)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (subject) DO UPDATE SET state = $2, since = $3,"
        " until = $4, reason = $5, override = $6, override_reason = $7, updated_at = now()",
        b.subject,
        b.state.value,
        b.since,
        b.until,
        b.reason,
        b.override.value if b.override else None,
        b.override_reason,
    )


async def learn(
    conn: asyncpg.Connection,
    subject: str,
    outcome: Mapping[str, int],
    at: datetime,
    now: datetime,
    policy: LearningPolicy,
) -> Breaker | None:
    """Count an outcome and move the subject's breaker; returns the breaker when it changed state."""
    if not outcome:
        return None
    row = await count_and_read_breaker(conn, subject, outcome, at)
    current = _breaker(row) if row else Breaker(subject)
    failed = any(outcome.get(k, 0) for k in FAILURES)
    if not failed and current.automatic(now) is not BreakerState.HALF_OPEN:
        # Only a failure can trip a closed breaker, and an open one waits for its cool-down: most
        # events (successes) need no more than the count above.
        return None
    await conn.execute("SELECT pg_advisory_xact_lock($1)", BREAKERS_LOCK)
    row = await conn.fetchrow("SELECT * FROM learning_breakers WHERE subject = $1 FOR UPDATE", subject)
    current = _breaker(row) if row else Breaker(subject)
    recent_from = recent_window_start(current, now, policy)
    recent = (await measures_since(conn, recent_from, subject)).get(subject, Measures(subject))
    # Its normal: the long window before the recent one, so a surge does not raise its own yardstick.
    normal_until = now - timedelta(seconds=policy.recent_seconds)
    normal = (
        await measures_since(conn, now - timedelta(hours=policy.window_hours), subject, until=normal_until)
    ).get(subject, Measures(subject))
    after = next_breaker(current, outcome, recent, normal, now, policy, at=at)
    if after == current:
        return None
    await save_breaker(conn, after)
    return after


async def learn_from_node_event(
    conn: asyncpg.Connection,
    log: Any,
    event: EventPayload,
    *,
    node_id: str,
    work_order_id: str,
    ship_due_at: datetime,
    promised: date,
    now: datetime,
    policy: LearningPolicy,
) -> None:
    """monitor's hook for a node's event: count it for the node, remember what carries a shipment."""
    if not policy.enabled:
        return
    if isinstance(event, WorkOrderShipped):
        await remember_shipment(conn, work_order_id, event.service_id, promised)
    occurred = getattr(event, "occurred_at", now)
    moved = await learn(conn, node_subject(node_id), node_outcomes(event, ship_due_at), occurred, now, policy)
    if moved is not None:
        log.warning(
            "routing breaker moved", subject=moved.subject, state=moved.state.value, reason=moved.reason
        )


async def learn_from_carrier_event(
    conn: asyncpg.Connection,
    log: Any,
    event: EventPayload,
    *,
    work_order_id: str,
    now: datetime,
    policy: LearningPolicy,
) -> None:
    """monitor's hook for a carrier's event: count a delivery (on time or late) or a loss for the service."""
    if not policy.enabled:
        return
    carried = await shipped_with(conn, work_order_id)
    if carried is None:
        return  # shipped before learning knew it, or a collection in store: no service to judge
    service_id, promised = carried
    occurred = getattr(event, "occurred_at", now)
    subject = service_subject(service_id)
    moved = await learn(conn, subject, service_outcomes(event, promised), occurred, now, policy)
    if moved is not None:
        log.warning(
            "routing breaker moved", subject=moved.subject, state=moved.state.value, reason=moved.reason
        )


async def remember_shipment(
    conn: asyncpg.Connection, work_order_id: str, service_id: str, promised: date
) -> None:
    await conn.execute(
        "INSERT INTO learning_shipments (work_order_id, service_id, promised_date) VALUES ($1, $2, $3)"
        " ON CONFLICT (work_order_id) DO NOTHING",
        work_order_id,
        service_id,
        promised,
    )


async def shipped_with(conn: asyncpg.Connection, work_order_id: str) -> tuple[str, datetime] | None:
    """The service that carries the work order, and the end of its promised day."""
    row = await conn.fetchrow(
        "SELECT service_id, promised_date FROM learning_shipments WHERE work_order_id = $1", work_order_id
    )
    if row is None:
        return None
    end_of_day = datetime.combine(row["promised_date"], time(23, 59, 59), tzinfo=UTC)
    return row["service_id"], end_of_day


async def override(conn: asyncpg.Connection, subject: str, what: Override | None, reason: str) -> Breaker:
    """An operator forces a subject out of (or into) routing, or clears the override."""
    row = await conn.fetchrow("SELECT * FROM learning_breakers WHERE subject = $1", subject)
    current = _breaker(row) if row else Breaker(subject)
    after = Breaker(
        subject=subject,
        state=current.state,
        since=current.since,
        until=current.until,
        reason=current.reason,
        override=what,
        override_reason=reason if what else "",
    )
    await save_breaker(conn, after)
    return after


class RiskView:
    """decide-node's view of learning: measures and breakers read every `refresh_seconds`
    (a View, for its life cycle). A decision uses the latest read: a moment stale is fine,
    as for the ledger."""

    def __init__(self, policy: LearningPolicy) -> None:
        self.name = "routing-risk"
        self.topic = ""
        self.policy = policy
        self.state: RoutingRisk = NO_RISK
        self.measures: dict[str, Measures] = {}
        self.breakers: dict[str, Breaker] = {}
        self.log = structlog.get_logger("orchestrator.learning")
        self._task: asyncio.Task[None] | None = None
        self._ready = not policy.enabled
        self._metrics: RuntimeMetrics | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    def bind_metrics(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        if self._task is None and self.policy.enabled:
            reading = read_periodically(
                settings,
                stop,
                self.refresh,
                self.policy.refresh_seconds,
                what="routing risk refresh",
                log=self.log,
            )
            self._task = asyncio.create_task(reading, name="decide:routing-risk")

    async def close(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def refresh(self, conn: asyncpg.Connection, now: datetime | None = None) -> RoutingRisk:
        now = now or datetime.now(UTC)
        self.measures = await measures_since(conn, now - timedelta(hours=self.policy.window_hours))
        self.breakers = await breakers(conn)
        self.state = routing_risk(self.measures, self.breakers, now, self.policy)
        if self._metrics is not None:
            for subject, b in self.breakers.items():
                effective = b.effective(now)
                for s in BreakerState:
                    self._metrics.routing_breaker.labels(subject, s.value).set(1 if s is effective else 0)
        self._ready = True
        return self.state


__all__ = [
    "RiskView",
    "breakers",
    "count_and_read_breaker",
    "learn",
    "learn_from_carrier_event",
    "learn_from_node_event",
    "measures_since",
    "override",
    "remember_shipment",
    "save_breaker",
    "shipped_with",
]
