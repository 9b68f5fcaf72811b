"""Views a stage reads whole, kept current from a topic in every process.

Some state every instance needs entire, not a share of partitions: the
network of nodes and carrier services, for one. A view reads its topic from
the beginning with no consumer group (so every instance sees everything),
is ready once it has caught up with the end offsets it found at start, and
then keeps following. The topic is the source of truth; a view is a cache
rebuilt at every start, so it needs no table and no migration.

Following is a moment behind the topic. Where that moment matters, a stage
asks the view to `catch_up`: to fold everything its topics held when asked
(validate before it rejects an order, decide-node before it leaves lines
unplanned: a node set up just before the order must not be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import DecodeError, read_event
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs
from orchestrator.settings import Settings

S = TypeVar("S")
#: Kafka's error code for a topic the principal may not describe (no READ, no DESCRIBE).
_TOPIC_AUTHORIZATION_FAILED = 29


class View(Protocol):
    """What the process needs of a view: start it (returns once caught up), stop it, ask if ready."""

    name: str
    topic: str

    async def start(self, settings: Settings, stop: asyncio.Event) -> None: ...
    async def close(self) -> None: ...
    @property
    def ready(self) -> bool: ...


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Stop a view's background task and wait until it has (its errors are its own business)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class FollowedTopics:
    """Reads its topics from the beginning with no consumer group, is ready once caught up with the
    end offsets found at start, then keeps following; a subclass applies every event (`apply`)."""

    def __init__(self, name: str, topics: tuple[str, ...]) -> None:
        self.name = name
        self.topics = topics
        self.topic = topics[0] if len(topics) == 1 else ""
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self.skipped = 0
        #: Events folded so far: a caller learns from it whether the state moved.
        self.folded = 0
        #: The view holds every event its topics held at this time (its last `catch_up`).
        self._complete_as_of: datetime | None = None
        #: After a `catch_up` that timed out, callers are not kept waiting again until then.
        self._no_wait_until = 0.0
        #: Set after every poll, for a `catch_up` waiting on the follow task.
        self._polled = asyncio.Event()
        self.log = structlog.get_logger("orchestrator.view").bind(view=name, topics=",".join(topics))

    def apply(self, data: EventPayload, at: datetime) -> None:
        """Fold one event that happened `at`."""
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        if self._consumer is not None:
            return  # shared by several stages of one process: started once
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings.kafka),
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id=f"orchestrator.view.{self.name}.{settings.instance_id}",
        )
        self._consumer = consumer
        await consumer.start()
        partitions = [tp for topic in self.topics for tp in await _partitions_of(settings.kafka, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while not stop.is_set() and not await self._caught_up(consumer, ends):
            await self._poll(consumer)
        self._ready = True
        self.log.info("view caught up", skipped=self.skipped)
        self._task = asyncio.create_task(self._follow(consumer, stop), name=f"view:{self.name}")

    async def _caught_up(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        apply, folded = self.apply, 0  # looked up once a poll: this loop runs for every event
        try:
            for records in batches.values():
                for rec in records:
                    try:
                        # The checks of `decode`, without the envelope: a view folds the event alone.
                        data, at, _, _ = read_event(
                            rec.key, rec.value, rec.headers, timestamp_ms=rec.timestamp
                        )
                    except DecodeError as exc:
                        # The stage that consumes this topic in a group dead-letters it; a view only skips it.
                        self.skipped += 1
                        self.log.warning("view skipped a record", offset=rec.offset, reason=exc.reason)
                        continue
                    apply(data, at)
                    folded += 1
        finally:
            self.folded += folded
        self._polled.set()

    async def catch_up(self, since: datetime, timeout: float) -> bool:
        """Fold every event the topics hold now, unless the view already held all of those of `since`.

        Returns whether any event was folded meanwhile (state read before the call is then stale).
        Waits at most `timeout` seconds (the broker away, a huge backlog): the caller goes on with
        what the view has, as it would have without asking; and for the next `timeout` seconds
        nobody waits, so a stream of callers is not held up one `timeout` each.
        """
        consumer = self._consumer
        if consumer is None or self._task is None or time.monotonic() < self._no_wait_until:
            return False
        if self._complete_as_of is not None and self._complete_as_of >= since:
            return False
        asked, folded = datetime.now(UTC), self.folded
        try:
            async with asyncio.timeout(timeout):
                ends = await consumer.end_offsets(list(consumer.assignment()))
                # The follow task folds what it fetches before it awaits again: once the position
                # is past an offset, that event is in the state. Looked at again after each poll.
                while True:
                    self._polled.clear()
                    if await self._caught_up(consumer, ends):
                        break
                    await self._polled.wait()
        except Exception as exc:  # never a reason to fail the caller's event
            self.log.warning("view did not catch up in time", timeout_s=timeout, error=repr(exc))
            self._no_wait_until = time.monotonic() + timeout
            return self.folded != folded
        self._complete_as_of = max(asked, self._complete_as_of or asked)
        return self.folded != folded

    async def _follow(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._poll(consumer)
            except Exception as exc:  # the broker being away is no reason to stop following
                self.log.warning("view poll failed; retrying", error=repr(exc))
                await asyncio.sleep(1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(BaseException):
                await self._consumer.stop()


class TopicView(FollowedTopics, Generic[S]):
    """A state folded from every event of one topic: `state = fold(state, payload)`."""

    def __init__(self, name: str, topic: str, initial: S, fold: Callable[[S, EventPayload], S]) -> None:
        super().__init__(name, (topic,))
        self._state = initial
        self._fold = fold

    @property
    def state(self) -> S:
        return self._state

    def apply(self, data: EventPayload, at: datetime) -> None:
        self._state = self._fold(self._state, data)


async def _partitions_of(bootstrap: Bootstrap, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if any(d.get("topic") == topic and d.get("error_code") == _TOPIC_AUTHORIZATION_FAILED for d in described):
        raise RuntimeError(
            f"not authorised to read topic {topic}: this principal has no READ on it "
            "(topics.yaml lists who reads it; `orchestrator topics acls` makes the rules)"
        )
    parts = [p["partition"] for d in described if d.get("topic") == topic for p in d.get("partitions", [])]
    if not parts:
        raise RuntimeError(
            f"topic {topic} has no partitions (does it exist? run `orchestrator topics apply`)"
        )
    return [TopicPartition(topic, p) for p in sorted(parts)]
