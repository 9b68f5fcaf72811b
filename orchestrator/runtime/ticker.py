"""A stage's ticker: scans its tables every few seconds and asks the stage, through a topic, to act.

It only asks; the stage's handler decides, in its transaction, with the row locked. Every
instance runs one, and every tick and instance sends the same event id for the same request, so
the runtime's idempotency record makes repeats (and re-sends after a restart) harmless. It
remembers what it sent a little while, only to avoid sending it again on every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from orchestrator.contract.envelope import Envelope, encode
from orchestrator.runtime.kafka_client import client_kwargs
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.pause import sleep_unless
from orchestrator.settings import Settings


class Ticker:
    """A View (for its life cycle) that publishes to `topic` what `scan` finds due; subclasses scan."""

    def __init__(self, name: str, topic: str, *, tick_s: float, resend_after_s: float = 60.0) -> None:
        self.name = name
        self.topic = topic
        self.tick_s = tick_s
        #: After this long a request still due (its event not yet handled) is sent again.
        self.resend_after_s = resend_after_s
        self.log = structlog.get_logger(f"orchestrator.{name}")
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._producer: AIOKafkaProducer | None = None
        self._sent: dict[str, float] = {}
        self._ready = False
        self._metrics: RuntimeMetrics | None = None

    async def scan(self, conn: asyncpg.Connection, now: datetime) -> list[Envelope]:
        """What fell due at `now`, as the events that ask the stage to act on it."""
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self._ready

    def bind_metrics(self, metrics: RuntimeMetrics) -> None:
        """Report gauges on `metrics` at every tick (a subclass's scan sets them)."""
        self._metrics = metrics

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        if self._task is not None:
            return  # shared by several stages of one process: started once
        self._task = asyncio.create_task(self._run(settings, stop), name=self.name)
        self._ready = True

    async def _run(self, settings: Settings, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.tick(settings)
                if sent:
                    self.log.info("due", sent=sent)
            except Exception as exc:  # a database or broker away is no reason to stop ticking
                self.log.warning("scan failed; retrying", error=repr(exc))
                await self._disconnect()
            await sleep_unless(stop, self.tick_s)

    async def tick(self, settings: Settings, now: datetime | None = None) -> int:
        """One scan: publish what fell due and was not sent lately; returns how many were sent."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(settings.database_url, command_timeout=30)
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(settings.kafka),
                client_id=f"orchestrator.{self.name}.{settings.instance_id}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer
        now = now or datetime.now(UTC)
        clock = time.monotonic()
        for stale in [k for k, at in self._sent.items() if clock - at > self.resend_after_s]:
            del self._sent[stale]
        envelopes = [env for env in await self.scan(self._conn, now) if env.id not in self._sent]
        if not envelopes:
            return 0
        futures = []
        for env in envelopes:
            key, value, headers = encode(env)
            futures.append(await self._producer.send(self.topic, key=key, value=value, headers=headers))
        await asyncio.gather(*futures)
        for env in envelopes:
            self._sent[env.id] = clock
        return len(envelopes)

    async def _disconnect(self) -> None:
        conn, producer = self._conn, self._producer
        self._conn = self._producer = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._task = None
        self._ready = False
        await self._disconnect()


__all__ = ["Ticker"]
