"""The consume → handle → produce loop that runs one stage, written once.

Exactly-once, per input partition:
- every input partition has its own transactional producer whose id is
  derived from the stage and the partition alone. Whoever owns the partition
  uses that id, so a new owner's `init_transactions` fences a zombie and
  aborts its open transaction (aiokafka has no KIP-447 group fencing);
- a partition batch is one Kafka transaction: outputs, dead letters and the
  consumed offsets commit together or not at all;
- stages that write PostgreSQL do so in one database transaction per batch,
  which also stores the idempotency record (see idempotency.py). The database
  commits first; if the Kafka transaction is then lost, the redelivered
  batch replays the stored outputs instead of handling the events again.

Faults:
- a record that cannot be decoded, or that the handler rejects, goes to the
  topic's dead-letter topic inside the same transaction;
- a handler error of unknown kind is retried `max_handler_attempts` times,
  then the event is dead-lettered (bad input never stops a stage);
- transient faults (broker, database, network) roll the batch back and retry
  it with exponential backoff for as long as it takes: the stage pauses, it
  never drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced
from prometheus_client import Histogram

from orchestrator.contract.envelope import DecodeError, Envelope, decode, encode
from orchestrator.runtime.dead_letter import (
    ConsumedRecord,
    OutgoingRecord,
    dead_letter_origin,
    logged_dead_letter,
)
from orchestrator.runtime.idempotency import ProcessedEvent, fetch_processed, record_processed
from orchestrator.runtime.kafka_client import client_kwargs
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.pause import sleep_unless
from orchestrator.runtime.stage import (
    HandlerContext,
    RejectEvent,
    RetryLater,
    SettlingBatch,
    Stage,
    TransientError,
)
from orchestrator.settings import Settings

Record = ConsumedRecord

#: Faults that pass by themselves: retried without limit, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    KafkaError,
    ConnectionError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # asyncpg lost track of a connection's state: the server went away in the middle of an
    # operation (a PostgreSQL restart; the 20,000-order fault run ended status-sync this way at a
    # commit). `_transact` drops the connection; the batch is retried on a fresh one.
    asyncpg.InternalClientError,
)


class _EventFailed(Exception):
    """One event of a batch failed in its handler; the batch is rolled back."""

    def __init__(
        self, offset: int, category: str, reason: str, *, permanent: bool, wait_up_to_s: float = 0.0
    ) -> None:
        super().__init__(reason)
        self.offset = offset
        self.category = category
        self.reason = reason
        self.permanent = permanent
        #: > 0: not a fault but "too early": retry with backoff for this long before giving up.
        self.wait_up_to_s = wait_up_to_s


@dataclass
class _BatchResult:
    outgoing: list[OutgoingRecord] = field(default_factory=list)
    consumed: list[tuple[str, str]] = field(default_factory=list)  # (topic, event type)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (topic, category)
    duplicates: int = 0
    #: The handlers' `after_commit` callbacks, in the order they were given.
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    #: Seconds in each phase of the batch's transaction, in BATCH_PHASES order.
    phases: tuple[float, ...] = ()


#: The phases of a batch: handle (handlers and the database transaction), produce (sends until every
#: record is acknowledged, the broker adding the partitions to the transaction first), offsets (what
#: is left to wait, after that, for the consumed offsets to join the transaction: they are sent when
#: the batch starts), commit (the broker ending the transaction).
BATCH_PHASES = ("handle", "produce", "offsets", "commit")


@dataclass
class _OwnedPartition:
    """A partition this instance has claimed: its producer and the first offset not yet committed."""

    producer: AIOKafkaProducer
    next_offset: int


def transactional_id(stage: str, tp: TopicPartition) -> str:
    return f"orchestrator.{stage}.{tp.topic}.{tp.partition}"


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a side task's failure as seen: the batch that started it reports its own."""
    if not task.cancelled():
        task.exception()


class StageWorker:
    """Runs one stage: one consumer in the stage's group, one producer per owned partition."""

    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        metrics: RuntimeMetrics,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        if stage.uses_database and pool is None:
            raise ValueError(f"stage {stage.name} uses the database but no pool was given")
        self.stage = stage
        self.settings = settings
        self.metrics = metrics
        self.pool = pool
        self.log = structlog.get_logger("orchestrator.worker").bind(stage=stage.name)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, _OwnedPartition] = {}
        # Held while a batch is handled, so a rebalance waits for it to commit.
        self._batch_lock = asyncio.Lock()
        self._attempts: dict[tuple[TopicPartition, int], int] = {}
        self._doomed: dict[tuple[TopicPartition, int], tuple[str, str]] = {}
        self._waiting_since: dict[tuple[TopicPartition, int], float] = {}
        #: The handling-time histogram's child per event type (labels() takes a lock per call).
        self._handling_timers: dict[str, Histogram] = {}
        # Spreads retries: two batches rolled back by one deadlock, retried after the same delay,
        # meet again in the same order.
        self._jitter = random.Random()
        self.started = False
        self.healthy = False

    # ----------------------------------------------------------------- life cycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish the batch in hand, commit and leave the group."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings.kafka),
            group_id=self.stage.group_id,
            client_id=f"{self.stage.group_id}.{self.settings.instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        await self._retry_until_started(consumer.start, "consumer", stop)
        if stop.is_set():
            await consumer.stop()
            return
        consumer.subscribe(list(self.stage.inputs), listener=_Rebalance(self))
        self.started = True
        self.metrics.stage_ready.labels(self.stage.name).set(1)
        self.healthy = True
        self.log.info("stage started", inputs=list(self.stage.inputs), group=self.stage.group_id)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.batch_max_records
                )
                if batches:
                    async with self._batch_lock:
                        await asyncio.gather(
                            *(self._process_partition(tp, records, stop) for tp, records in batches.items())
                        )
                await self._update_lag(consumer)
        finally:
            self.healthy = False
            self.metrics.stage_ready.labels(self.stage.name).set(0)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._release(list(self._partitions))
            self.log.info("stage stopped")

    async def _retry_until_started(self, start: object, what: str, stop: asyncio.Event) -> None:
        delay = self.settings.backoff_initial_s
        while not stop.is_set():
            try:
                await start()  # type: ignore[operator]
                return
            except TRANSIENT_ERRORS as exc:
                self.log.warning(f"{what} cannot start yet; retrying", error=repr(exc), retry_in_s=delay)
                await sleep_unless(stop, delay)
                delay = min(delay * 2, self.settings.backoff_max_s)

    # ------------------------------------------------------------ partitions

    async def _claim(self, tp: TopicPartition) -> _OwnedPartition:
        """The partition's transactional producer and its committed offset, fencing any older owner first.

        Ordering matters: the committed offset is read only after our producer
        id was obtained, because that is when an older owner's open
        transaction is aborted (or its commit completed) and the offset final.
        """
        owned = self._partitions.get(tp)
        if owned is not None:
            return owned
        consumer = self._consumer
        assert consumer is not None
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings.kafka),
            client_id=f"{self.stage.group_id}.{self.settings.instance_id}.{tp.topic}.{tp.partition}",
            transactional_id=transactional_id(self.stage.name, tp),
            enable_idempotence=True,
            acks="all",
            # A batch's records are all queued before the sender next runs, so they go out together
            # without waiting: lingering would only add to every hop.
            linger_ms=0,
            request_timeout_ms=15000,
            retry_backoff_ms=self.settings.producer_retry_backoff_ms,
        )
        try:
            await producer.start()
            await asyncio.wait_for(producer.begin_transaction(), timeout=30)
            await asyncio.wait_for(producer.abort_transaction(), timeout=30)
            committed = await consumer.committed(tp)
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        owned = _OwnedPartition(producer, committed or 0)
        self._partitions[tp] = owned
        return owned

    async def _release(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            owned = self._partitions.pop(tp, None)
            if owned is not None:
                with contextlib.suppress(Exception):
                    await owned.producer.stop()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # Partitions are claimed lazily by their first batch: claiming here would race the fetcher.
        self.log.info("partitions assigned", partitions=sorted(f"{t.topic}:{t.partition}" for t in assigned))
        # aiokafka rebalances eagerly: `assigned` is the whole new assignment.
        self.metrics.partitions_assigned.labels(self.stage.name).set(len(assigned))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:
            await self._release(list(revoked))
            for key in [k for k in self._attempts if k[0] in revoked]:
                del self._attempts[key]
                self._waiting_since.pop(key, None)
            for key in [k for k in self._doomed if k[0] in revoked]:
                del self._doomed[key]
            for tp in revoked:
                self.metrics.consumer_lag.labels(self.stage.name, tp.topic, str(tp.partition)).set(0)
            self.metrics.partitions_assigned.labels(self.stage.name).set(0)
        if revoked:
            self.log.info(
                "partitions revoked", partitions=sorted(f"{t.topic}:{t.partition}" for t in revoked)
            )

    # ------------------------------------------------------------- batches

    async def _process_partition(
        self, tp: TopicPartition, fetched: list[Record], stop: asyncio.Event
    ) -> None:
        delay = self.settings.backoff_initial_s
        while True:
            consumer = self._consumer
            if consumer is None or tp not in consumer.assignment():
                return  # the partition moved; its new owner starts from the committed offset
            started = time.perf_counter()
            try:
                owned = await self._claim(tp)
                # Records below the committed offset were handled by an earlier owner (a fetch that
                # raced the claim, or a zombie's last commit): skipping them is what keeps outputs single.
                records = [r for r in fetched if r.offset >= owned.next_offset]
                if not records:
                    return
                result = await self._transact(tp, owned.producer, records)
            except ProducerFenced:
                self.log.warning("fenced by a newer owner of the partition; batch dropped", partition=str(tp))
                await self._release([tp])
                consumer.seek(tp, fetched[0].offset)
                return
            except _EventFailed as failed:
                key = (tp, failed.offset)
                self.metrics.events_failed.labels(self.stage.name, tp.topic, failed.category).inc()
                attempts = self._attempts.get(key, 0) + 1
                self._attempts[key] = attempts
                if failed.wait_up_to_s > 0:
                    first = self._waiting_since.setdefault(key, time.monotonic())
                    if time.monotonic() - first >= failed.wait_up_to_s:
                        self._doomed[key] = (
                            failed.category,
                            f"{failed.reason} (waited {failed.wait_up_to_s:.0f} s)",
                        )
                    elif await sleep_unless(stop, min(0.05 * 2 ** min(attempts, 5), 1.0)):
                        return
                    continue
                if failed.permanent or attempts >= self.settings.max_handler_attempts:
                    reason = (
                        failed.reason
                        if failed.permanent
                        else f"handler failed {attempts} times: {failed.reason}"
                    )
                    self._doomed[key] = (failed.category, reason)
                self.log.warning(
                    "event failed; batch rolled back",
                    partition=str(tp),
                    offset=failed.offset,
                    attempt=attempts,
                    reason=failed.reason,
                )
                continue
            except TRANSIENT_ERRORS as exc:
                kind = type(exc).__name__
                self.metrics.transient_faults.labels(self.stage.name, kind).inc()
                self.metrics.stage_ready.labels(self.stage.name).set(0)
                self.healthy = False
                self.log.warning(
                    "transient fault; batch rolled back, retrying",
                    partition=str(tp),
                    error=repr(exc),
                    retry_in_s=delay,
                )
                await self._release([tp])
                if await sleep_unless(stop, delay * self._jitter.uniform(0.5, 1.0)):
                    return  # shutting down: nothing committed, the next owner redoes the batch
                delay = min(delay * 2, self.settings.backoff_max_s)
                continue
            owned.next_offset = records[-1].offset + 1
            self._after_commit(tp, records, result, time.perf_counter() - started)
            return

    def _after_commit(
        self, tp: TopicPartition, records: list[Record], result: _BatchResult, seconds: float
    ) -> None:
        stage = self.stage.name
        m = self.metrics
        m.batch_seconds.labels(stage).observe(seconds)
        for phase, phase_seconds in zip(BATCH_PHASES, result.phases, strict=True):
            m.batch_phase_seconds.labels(stage, phase).observe(phase_seconds)
        # Counted per label set, not per event: a labelled child is looked up under a lock.
        for (topic, event_type), n in Counter(result.consumed).items():
            m.events_consumed.labels(stage, topic, event_type).inc(n)
        for (topic, event_type), n in Counter((out.topic, out.event_type) for out in result.outgoing).items():
            m.events_produced.labels(stage, topic, event_type).inc(n)
        for topic, category in result.dead_letters:
            m.dead_letters.labels(stage, topic, category).inc()
        if result.duplicates:
            m.duplicates.labels(stage, tp.topic).inc(result.duplicates)
        for callback in result.on_commit:
            try:
                callback()
            except Exception:  # what counts a committed batch must not undo it
                self.log.exception("after-commit callback raised")
        last = records[-1].offset
        for key in [k for k in self._attempts if k[0] == tp and k[1] <= last]:
            del self._attempts[key]
            self._waiting_since.pop(key, None)
        for key in [k for k in self._doomed if k[0] == tp and k[1] <= last]:
            del self._doomed[key]
        if not self.healthy:
            self.log.info("recovered; consuming again", partition=str(tp))
        self.healthy = True
        m.stage_ready.labels(stage).set(1)

    async def _transact(
        self, tp: TopicPartition, producer: AIOKafkaProducer, records: list[Record]
    ) -> _BatchResult:
        clock = time.perf_counter
        await asyncio.wait_for(producer.begin_transaction(), timeout=30)
        # The consumed offsets join the transaction while the batch is handled: their two round trips
        # to the broker need nothing from the handlers, and an abort discards them with the records.
        offsets_added = asyncio.ensure_future(
            producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, self.stage.group_id)
        )
        offsets_added.add_done_callback(_retrieve)
        try:
            began = clock()
            if self.stage.uses_database and not self._all_passed_over(records):
                assert self.pool is not None
                async with self.pool.acquire() as conn:
                    try:
                        async with conn.transaction():
                            result = await self._handle_batch(tp, records, conn)
                    except asyncpg.InternalClientError:
                        # Back in the pool, its confused protocol would fail whoever took it next.
                        conn.terminate()
                        raise
            else:
                result = await self._handle_batch(tp, records, None)
            handled = clock()
            try:
                futures = [
                    await producer.send(o.topic, value=o.value, key=o.key, headers=o.headers)
                    for o in result.outgoing
                ]
            except IllegalOperation as exc:
                # The broker failed the transaction while the batch was handled (a restart: adding
                # the offsets or partitions to it failed). aiokafka then holds it in an abortable
                # error and refuses sends, with an error that is no KafkaError: the batch is retried
                # like the broker fault that caused it, instead of ending the process.
                raise TransientError(f"the transaction failed under the batch: {exc}") from exc
            delivered = await asyncio.gather(*futures, return_exceptions=True)
            failure = next((d for d in delivered if isinstance(d, BaseException)), None)
            if failure is not None:
                raise failure
            produced = clock()
            await offsets_added
            offsets = clock()
            await asyncio.wait_for(producer.commit_transaction(), timeout=30)
            result.phases = (handled - began, produced - handled, offsets - produced, clock() - offsets)
        except BaseException:
            # Not started yet: never added. In flight: the producer finishes adding them before the
            # abort, which discards them.
            offsets_added.cancel()
            try:
                await asyncio.wait_for(producer.abort_transaction(), timeout=10)
            except BaseException:
                # A producer that cannot abort is in an unknown state: start a fresh one next time.
                await self._release([tp])
            raise
        return result

    def _all_passed_over(self, records: list[Record]) -> bool:
        """Every record is of a type the stage passes over where it is (read from its headers)."""
        if not self.stage.wanted_there:
            return False
        for rec in records:
            event_type = next((v for k, v in rec.headers or () if k == "ce_type"), None)
            if event_type is None or not self.stage.passes_over(
                bytes(event_type).decode(errors="replace"), rec.topic
            ):
                return False
        return True

    async def _handle_batch(
        self, tp: TopicPartition, records: list[Record], conn: asyncpg.Connection | None
    ) -> _BatchResult:
        stage = self.stage
        result = _BatchResult()
        decoded: list[tuple[Record, Envelope | None]] = []
        for rec in records:
            doomed = self._doomed.get((tp, rec.offset))
            if doomed is not None:
                result.outgoing.append(self._dead_letter(rec, *doomed))
                result.dead_letters.append((rec.topic, doomed[0]))
                result.consumed.append((rec.topic, "invalid"))
                decoded.append((rec, None))
                continue
            try:
                env = decode(rec.key, rec.value, rec.headers, timestamp_ms=rec.timestamp)
                if not stage.accepts_type(env.type, rec.topic):
                    raise DecodeError(
                        "unexpected_type", f"stage {stage.name} does not handle events of type {env.type!r}"
                    )
            except DecodeError as exc:
                if rec.topic in stage.observes:
                    self.metrics.events_failed.labels(stage.name, rec.topic, "skipped_unreadable").inc()
                    result.consumed.append((rec.topic, "invalid"))
                    decoded.append((rec, None))
                    continue
                result.outgoing.append(self._dead_letter(rec, exc.category, exc.reason))
                result.dead_letters.append((rec.topic, exc.category))
                result.consumed.append((rec.topic, "invalid"))
                decoded.append((rec, None))
                continue
            if stage.passes_over(env.type, rec.topic):
                result.consumed.append((rec.topic, env.type))
                decoded.append((rec, None))
                continue
            decoded.append((rec, env))

        processed: dict[str, ProcessedEvent] = {}
        if conn is not None:
            processed = await fetch_processed(conn, stage.name, [e.id for _, e in decoded if e is not None])
        seen: set[str] = set()
        to_record: list[tuple[str, str, int, int, Sequence[OutgoingRecord]]] = []
        deferred: dict[str, list[tuple[object, ...]]] = {}
        now = datetime.now(UTC)
        batch = None
        if conn is not None and stage.read_batch is not None:
            batch = await stage.read_batch(
                [e for _, e in decoded if e is not None and e.id not in processed], conn
            )
        settling = batch if isinstance(batch, SettlingBatch) else None
        for rec, maybe_env in decoded:
            if maybe_env is None:
                continue
            env = maybe_env
            done = processed.get(env.id)
            if done is not None:
                if (done.source_topic, done.source_partition, done.source_offset) == (
                    rec.topic,
                    rec.partition,
                    rec.offset,
                ):
                    result.outgoing.extend(done.outputs)  # replay after a lost Kafka transaction
                    result.consumed.append((rec.topic, env.type))
                else:
                    result.duplicates += 1
                continue
            if env.id in seen:
                result.duplicates += 1
                continue
            seen.add(env.id)
            if settling is not None and settling.settled(env):
                result.consumed.append((rec.topic, env.type))
                to_record.append((env.id, rec.topic, rec.partition, rec.offset, ()))
                continue
            outputs = await self._handle_one(rec, env, conn, now, deferred, batch, result.on_commit)
            result.outgoing.extend(outputs)
            result.dead_letters.extend(d for d in map(dead_letter_origin, outputs) if d is not None)
            result.consumed.append((rec.topic, env.type))
            if conn is not None:
                to_record.append((env.id, rec.topic, rec.partition, rec.offset, outputs))
        if conn is not None:
            # In the order each statement was first deferred: rows of one statement keep theirs.
            for statement, rows in deferred.items():
                await conn.executemany(statement, rows)
            await record_processed(conn, stage.name, to_record)
        return result

    async def _handle_one(
        self,
        rec: Record,
        env: Envelope,
        conn: asyncpg.Connection | None,
        now: datetime,
        deferred: dict[str, list[tuple[object, ...]]],
        batch: Any,
        on_commit: list[Callable[[], None]],
    ) -> list[OutgoingRecord]:
        log = self.log.bind(order_id=env.subject, event_id=env.id, event_type=env.type, trace_id=env.trace_id)
        ctx = HandlerContext(
            stage=self.stage.name,
            topic=rec.topic,
            event=env,
            db=conn,
            now=now,
            log=log,
            record=rec,
            batch=batch,
        )
        started = time.perf_counter()
        # Bound for the handler's own loggers, and reset to what was bound before: half the cost of
        # `bound_contextvars`, which reads every context variable first (5 us an event in every stage).
        bound = structlog.contextvars.bind_contextvars(
            stage=self.stage.name, order_id=env.subject, event_id=env.id, trace_id=env.trace_id
        )
        try:
            await self.stage.handler(env, ctx)
        except RejectEvent as exc:
            raise _EventFailed(rec.offset, exc.category, exc.reason, permanent=True) from exc
        except RetryLater as exc:
            raise _EventFailed(
                rec.offset, exc.category, exc.reason, permanent=False, wait_up_to_s=exc.give_up_after_s
            ) from exc
        except TRANSIENT_ERRORS:
            raise
        except asyncpg.PostgresError as exc:
            # A constraint or data error is the event's fault, not the database's: not worth retrying forever.
            raise _EventFailed(
                rec.offset, "database_error", f"{type(exc).__name__}: {exc}", permanent=False
            ) from exc
        except Exception as exc:
            log.exception("handler raised")
            raise _EventFailed(
                rec.offset, "handler_error", f"{type(exc).__name__}: {exc}", permanent=False
            ) from exc
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            self._handling_timer(env.type).observe(time.perf_counter() - started)
        for statement, args in ctx.deferred:
            deferred.setdefault(statement, []).append(args)
        on_commit.extend(ctx.on_commit)
        out: list[OutgoingRecord] = []
        for emitted in ctx.emitted:
            key, value, headers = encode(emitted.envelope)
            out.append(OutgoingRecord(emitted.topic, key, value, headers, emitted.envelope.type))
        out.extend(ctx.dead_letters)  # records the handler kept earlier and now gives up
        return out

    def _handling_timer(self, event_type: str) -> Histogram:
        timer = self._handling_timers.get(event_type)
        if timer is None:
            timer = self.metrics.handling_seconds.labels(self.stage.name, event_type)
            self._handling_timers[event_type] = timer
        return timer

    def _dead_letter(self, rec: Record, category: str, reason: str) -> OutgoingRecord:
        return logged_dead_letter(self.log, rec, stage=self.stage.name, category=category, reason=reason)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            owned = self._partitions.get(tp)
            if end is None or owned is None:
                continue
            # Every transaction leaves a commit marker after its records; the consumer's position steps
            # over markers, the last handled offset does not. Without this a caught-up stage reading a
            # transactional topic shows a lag of one per partition forever.
            position = await consumer.position(tp)
            lag = max(0, end - max(owned.next_offset, position))
            self.metrics.consumer_lag.labels(self.stage.name, tp.topic, str(tp.partition)).set(lag)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: StageWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(set(assigned))
