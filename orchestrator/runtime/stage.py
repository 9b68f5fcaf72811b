"""How a stage is declared: what it reads, what it accepts, and its handler.

A stage is a thin shell. Its handler receives one decoded event and a
context; it calls the stage's pure core and emits the resulting events
through the context. The runtime (worker.py) owns everything else:
batching, transactions, idempotency, dead letters, retries, metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope
from orchestrator.runtime.dead_letter import ConsumedRecord, OutgoingRecord, logged_dead_letter
from orchestrator.runtime.views import View

if TYPE_CHECKING:
    import asyncpg


class RejectEvent(Exception):
    """Raised by a handler for an event it can never process (bad input).

    The event goes to the dead-letter topic with this reason; the stage goes on.
    """

    def __init__(self, reason: str, category: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class RetryLater(Exception):
    """Raised by a handler for an event that may become valid soon (what it refers to is on its way
    on another topic). The batch is rolled back and retried with backoff; after `give_up_after_s`
    the event is dead-lettered with this reason. The partition waits meanwhile: keep the limit short.
    """

    def __init__(self, reason: str, category: str = "retry_later", give_up_after_s: float = 15.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category
        self.give_up_after_s = give_up_after_s


class TransientError(Exception):
    """Raised by a handler for a fault that will pass (a dependency is down).

    The batch is rolled back and retried with backoff, however long it takes.
    """


@dataclass(frozen=True, slots=True)
class Emitted:
    """An event a handler produced, with the topic it goes to."""

    topic: str
    envelope: Envelope


class HandlerContext:
    """What a handler may touch while it handles one event."""

    def __init__(
        self,
        *,
        stage: str,
        topic: str,
        event: Envelope,
        db: asyncpg.Connection | None,
        now: datetime,
        log: structlog.typing.FilteringBoundLogger,
        record: ConsumedRecord | None = None,
        batch: Any = None,
    ) -> None:
        self.stage = stage
        #: The topic the event was read from.
        self.topic = topic
        self.event = event
        self._db = db
        self.now = now
        self.log = log
        #: The Kafka record the event came in, as it arrived: for a stage that keeps it to handle later.
        self.record = record
        self.emitted: list[Emitted] = []
        #: Records the handler sends to their dead-letter topic, in the batch's transaction.
        self.dead_letters: list[OutgoingRecord] = []
        #: Writes left for the end of the batch (see `defer`): (statement, arguments).
        self.deferred: list[tuple[str, tuple[object, ...]]] = []
        #: Called once the batch has committed (see `after_commit`).
        self.on_commit: list[Callable[[], None]] = []
        #: What the stage's `read_batch` read for the whole batch (None without one); handlers of one
        #: batch share it, so one may keep it up to date for the next.
        self.batch = batch

    @property
    def db(self) -> asyncpg.Connection:
        """The stage's database connection, inside the batch's transaction."""
        if self._db is None:
            raise RuntimeError(f"stage {self.stage} is declared without a database")
        return self._db

    def defer(self, statement: str, *args: object) -> None:
        """Run `statement` at the end of the batch, in its transaction, with the batch's other
        deferred rows of the same statement in one round trip (executemany).

        Only for writes nothing in the batch reads back (an append-only log): a round trip to
        PostgreSQL costs about 30 times what one more row of an executemany does.
        """
        if self._db is None:
            raise RuntimeError(f"stage {self.stage} is declared without a database")
        self.deferred.append((statement, args))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the batch this event is in has committed, never if it does not: for
        what must count only what happened (a stage's own metric), not once per retried attempt."""
        self.on_commit.append(callback)

    def emit(self, topic: str, data: EventPayload) -> Envelope:
        """Produce `data` on `topic` as an event caused by the one being handled.

        Its id is derived from the cause and its position, so a retried
        handler emits the same ids and downstream deduplication holds.
        """
        env = self.event.child(
            data, source=f"orchestrator/{self.stage}", index=len(self.emitted), time=self.now
        )
        self.emitted.append(Emitted(topic, env))
        return env

    def dead_letter(self, record: ConsumedRecord, category: str, reason: str) -> None:
        """Send `record` (one the stage kept from an earlier batch) to its topic's dead-letter topic.

        For an event the stage accepted and kept, then found it can never handle: it leaves in the
        same transaction as the state change that gives it up, so it is neither lost nor sent twice.
        """
        self.dead_letters.append(
            logged_dead_letter(
                self.log, record, stage=self.stage, category=category, reason=reason, now=self.now
            )
        )


Handler = Callable[[Envelope, HandlerContext], Awaitable[None]]
#: (the batch's events still to handle, the batch's connection) -> the batch's shared reads. The events
#: may hold a resent copy of one of them (the worker skips the second copy): a reader that writes takes
#: each event id once, as reserve's `read_inventory` does.
BatchReader = Callable[[Sequence[Envelope], "asyncpg.Connection"], Awaitable[Any]]


@runtime_checkable
class SettlingBatch(Protocol):
    """What a `read_batch` returns when it may have done all some events need (reserve applies a
    batch's stock changes in three statements). Asked in event order, just before an event's turn:
    for a settled event the worker calls no handler and builds no context for it, and records it
    as processed, with no outputs, in the batch's transaction, like any handled event. Its handling
    time is not observed on its own."""

    def settled(self, event: Envelope) -> bool: ...


@dataclass(frozen=True)
class Stage:
    """A stage: its name, its input topics, the event types it accepts, its handler.

    `uses_database` stages get a connection in a transaction that also
    records every handled event id (the idempotency record); Kafka-only
    stages rely on Kafka transactions alone.
    """

    name: str
    inputs: tuple[str, ...]
    handler: Handler
    outputs: tuple[str, ...] = ()
    uses_database: bool = False
    #: Event types this stage handles; any other type is dead-lettered.
    #: Empty means every registered type (a relay).
    accepts: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    #: Views the handler reads (the network, ...); the process starts each once, before consuming.
    views: tuple[View, ...] = ()
    #: Inputs this stage only observes (another stage owns them): it accepts every type there, and a
    #: record it cannot read is skipped and counted, not dead-lettered twice.
    observes: frozenset[str] = field(default_factory=frozenset)
    #: Per observed input, the event types the handler wants there. The others are passed over:
    #: counted as consumed, their offsets committed with the batch, no handler and no database (a
    #: batch of nothing else opens no transaction). A topic not named here: every type.
    wanted_there: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Reads, in a few queries for the whole batch, what its handlers would otherwise read one event
    #: at a time (inside the batch's transaction, before the first handler); the result is `ctx.batch`.
    read_batch: BatchReader | None = None

    @property
    def group_id(self) -> str:
        return f"orchestrator.{self.name}"

    def accepts_type(self, event_type: str, topic: str) -> bool:
        return not self.accepts or event_type in self.accepts or topic in self.observes

    def passes_over(self, event_type: str, topic: str) -> bool:
        """True for an event of an observed topic that the handler does not want (see `wanted_there`)."""
        wanted = self.wanted_there.get(topic)
        return wanted is not None and event_type not in wanted
