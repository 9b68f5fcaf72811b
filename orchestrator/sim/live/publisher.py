"""How a simulated outside system (OMS, WMS, carrier, ERP) publishes: what it sends arrives.

A send does not wait for its delivery, so the simulators keep their pace. A
delivery that fails is sent again: the same record, under the same event id,
after a pause, on a fresh producer. That matters when the broker crashes:
the idempotent producer can lose its sequence (`OutOfOrderSequenceNumber`)
and stays failed, and before this every event the simulators sent after that
was lost, so fault runs blamed the orchestrator for orders that never came.
A record that did arrive and is sent again is dropped by the stages, which
deduplicate by event id, as they would a real system's retry. A record still
not delivered after `GIVE_UP_S` (the broker gone for good, the run over) is
given up, logged and counted in `lost`, so a simulator never hangs on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope, encode
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs

#: (topic, key, value, headers) of one record, kept until it is delivered.
_Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
#: How long a record is sent again before it is given up.
GIVE_UP_S = 120.0


class Publisher:
    """An outside system's producer: idempotent, acks=all, one CloudEvent per record, redelivered
    until the broker has it."""

    def __init__(self, bootstrap: Bootstrap, source: str) -> None:
        self.source = source
        self.sent: Counter[str] = Counter()
        #: Deliveries that failed and were sent again.
        self.resent = 0
        #: Records given up after `GIVE_UP_S` of failed deliveries.
        self.lost = 0
        self._log = structlog.get_logger("orchestrator.sim.publisher").bind(source=source)
        self._bootstrap = bootstrap
        self._producer = self._new_producer()
        self._generation = 0
        self._renewing = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_kwargs(self._bootstrap), acks="all", enable_idempotence=True, linger_ms=5
        )

    async def __aenter__(self) -> Publisher:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()  # a failed start leaves connections behind otherwise
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def send(self, topic: str, payload: EventPayload, *, source: str | None = None) -> None:
        key, value, headers = encode(Envelope.new(payload, source=source or self.source))
        record: _Record = (topic, key, value, headers)
        delivery = await self._send(record)
        self.sent[payload.event_type] += 1
        task = asyncio.ensure_future(self._until_delivered(record, delivery))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Until everything sent so far is delivered."""
        while self._pending:
            await asyncio.gather(*list(self._pending))
        await self._producer.flush()

    async def _send(self, record: _Record) -> asyncio.Future[object]:
        topic, key, value, headers = record
        try:
            delivery: asyncio.Future[object] = await self._producer.send(
                topic, key=key, value=value, headers=headers
            )
            return delivery
        except Exception as exc:
            # A failed (or not yet started) producer refuses at once: retried like a failed delivery.
            failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _until_delivered(self, record: _Record, delivery: asyncio.Future[object]) -> None:
        pause = RETRY_FIRST_S
        give_up_at = time.monotonic() + GIVE_UP_S
        while True:
            generation = self._generation
            try:
                await delivery
                return
            except Exception as exc:
                if time.monotonic() >= give_up_at:
                    self.lost += 1
                    self._log.error("record given up", topic=record[0], key=record[1], error=repr(exc))
                    return
                self.resent += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)
            try:
                async with asyncio.timeout(max(0.0, give_up_at - time.monotonic())):
                    await self._renew(generation)
            except TimeoutError:
                self.lost += 1
                self._log.error("record given up: no producer could start", topic=record[0], key=record[1])
                return
            delivery = await self._send(record)

    async def _renew(self, failed_generation: int) -> None:
        """A fresh producer, once per failed one: the first delivery to fail on it replaces it."""
        async with self._renewing:
            if self._generation != failed_generation:
                return
            old, self._producer = self._producer, self._new_producer()
            self._generation += 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), timeout=10)
            pause = RETRY_FIRST_S
            while True:
                try:
                    await self._producer.start()
                    return
                except KafkaError:
                    # The broker is not back yet.
                    with contextlib.suppress(Exception):
                        await self._producer.stop()
                    self._producer = self._new_producer()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_S)


__all__ = ["Publisher"]
