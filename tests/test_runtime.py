"""The stage runtime on the real Kafka and PostgreSQL: envelope, dead letters,
exactly-once under SIGKILL, a broker outage, idempotency records, metrics and probes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.contract.envelope import Envelope, encode
from orchestrator.contract.examples import example
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.kafka_client import client_kwargs
from orchestrator.runtime.process import run_stages
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage, TransientError
from orchestrator.settings import Settings
from orchestrator.stages.relay import relay_stage
from tests.conftest import Servers
from tests.support import (
    StageProcess,
    create_topics,
    free_port,
    headers_of,
    publish,
    publish_events,
    read_all,
    unique,
)

pytestmark = pytest.mark.integration


def _settings(bootstrap: str, database_url: str = "postgresql://unused") -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        instance_id=f"test-{uuid.uuid4().hex[:6]}",
        http_port=free_port(),
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
    )


def orders(n: int) -> list[Envelope]:
    base = example("order.created.v1")
    return [
        Envelope.new(base.model_copy(update={"order_id": f"ORD-{i:06d}"}), source="test/oms")
        for i in range(n)
    ]


@contextlib.asynccontextmanager
async def running(stages: Sequence[Stage], settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_stages(stages, settings, stop, handle_signals=False))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def test_an_event_passes_through_a_stage_with_its_envelope(bootstrap: str) -> None:
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target])
    [event] = orders(1)
    async with running([relay_stage(source, target)], _settings(bootstrap)):
        await publish_events(bootstrap, source, [event])
        [out] = await read_all(bootstrap, target, expect=1)
    h = headers_of(out)
    assert h["ce_specversion"] == "1.0"
    assert h["ce_type"] == "order.created.v1"
    assert h["ce_source"] == "orchestrator/relay"
    assert h["ce_subject"] == event.subject == out.key.decode()
    assert h["ce_causationid"] == event.id
    assert h["ce_correlationid"] == event.correlation_id
    assert h["ce_id"] != event.id
    assert h["traceparent"].split("-")[1] == event.trace_id
    assert orjson.loads(out.value) == event.data.model_dump(mode="json")


async def test_bad_records_are_dead_lettered_with_a_reason_and_the_rest_flows(bootstrap: str) -> None:
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target], partitions=1)
    good_before, good_after = orders(2)
    key, value, headers = encode(good_before)
    broken_json = (key, b'{"order_id": "ORD-1", ', headers)
    bad_schema_value = orjson.loads(value)
    bad_schema_value["lines"][0]["quantity"] = "three"
    schema_violation = (key, orjson.dumps(bad_schema_value), headers)
    unknown_type = (key, value, [(k, b"order.teleported.v1" if k == "ce_type" else v) for k, v in headers])
    async with running([relay_stage(source, target)], _settings(bootstrap)):
        await publish_events(bootstrap, source, [good_before])
        await publish(bootstrap, source, [broken_json, schema_violation, unknown_type])
        await publish_events(bootstrap, source, [good_after])
        outputs = await read_all(bootstrap, target, expect=2)
        dead = await read_all(bootstrap, dead_letter_topic(source), expect=3)
    assert [headers_of(o)["ce_causationid"] for o in outputs] == [good_before.id, good_after.id]
    reasons = [headers_of(d) for d in dead]
    assert [r["dlq_category"] for r in reasons] == ["malformed", "schema", "unknown_type"]
    assert "not valid JSON" in reasons[0]["dlq_reason"]
    assert "lines.0.quantity" in reasons[1]["dlq_reason"]
    assert "order.teleported.v1" in reasons[2]["dlq_reason"]
    assert all(r["dlq_source_topic"] == source and r["dlq_stage"] == "relay" for r in reasons)
    assert [int(r["dlq_source_offset"]) for r in reasons] == [1, 2, 3]
    assert dead[0].value == broken_json[1], "the original value is kept for inspection and replay"


async def test_exactly_once_through_sigkills(bootstrap: str, tmp_path: Path) -> None:
    """10,000 events while the stage process is SIGKILLed four times: each input gives one output."""
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target], partitions=3)
    events = orders(10_000)
    await publish_events(bootstrap, source, events)
    stage = StageProcess(
        ["relay", "--input", source, "--output", target, "--http-port", str(free_port())],
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ORCHESTRATOR_INSTANCE_ID": "sigkill-test",
            "ORCHESTRATOR_BATCH_MAX_RECORDS": "200",
        },
        tmp_path / "stage.log",
    )
    kills = 0
    seen_progress: list[int] = []
    stage.start()
    try:
        async with _EndOffsets(bootstrap, target, partitions=3) as output:
            for _ in range(4):
                # Let it make some progress, then kill it mid-flight.
                before = await output.total()
                deadline = time.monotonic() + 60
                while await output.total() <= before + 300:
                    assert time.monotonic() < deadline, stage.log_path.read_text()[-3000:]
                    await asyncio.sleep(0.1)
                stage.kill()
                kills += 1
                seen_progress.append(await output.total())
                stage.start()
        outputs = await read_all(bootstrap, target, expect=len(events), timeout=180, settle=3)
    finally:
        if stage.alive():
            stage.terminate()
    assert kills >= 3
    assert seen_progress == sorted(seen_progress) and seen_progress[-1] < len(events), (
        "the kills must land while the stage is still working"
    )
    causes = [headers_of(o)["ce_causationid"] for o in outputs]
    assert len(causes) == len(events), f"expected {len(events)} outputs, got {len(causes)}"
    assert len(set(causes)) == len(causes), "an input produced two outputs"
    assert set(causes) == {e.id for e in events}, "an input produced no output"


class _EndOffsets:
    """Sum of a topic's end offsets, read with one long-lived client (marker records included:
    a slight over-count, fine for "the stage made progress")."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")

    async def __aenter__(self) -> _EndOffsets:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.consumer.stop()

    async def total(self) -> int:
        ends = await self.consumer.end_offsets(self.partitions)
        return int(sum(ends.values()))


def _flaky_relay(source: str, target: str, fail: dict[str, type[Exception]]) -> Stage:
    """A relay whose handler raises `fail[order_id]` for those orders (a bug, or a dependency down)."""

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        error = fail.get(event.subject)
        if error is not None:
            raise error(f"{event.subject} cannot be handled yet")
        ctx.emit(target, event.data)

    return Stage(name="flaky-relay", inputs=(source,), outputs=(target,), handler=handle)


async def _committed(bootstrap: str, group_id: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_a_rolled_back_batch_commits_none_of_its_offsets(bootstrap: str) -> None:
    """A batch's consumed offsets join its transaction while it is handled; when a handler fails the
    abort takes them back with its records, so nothing of the batch counts as consumed, and once
    the handler recovers every event comes out once."""
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target], partitions=1)
    events = orders(5)
    flaky = _flaky_relay(source, target, {events[2].subject: TransientError})
    settings = _settings(bootstrap)
    async with running([flaky], settings):
        await publish_events(bootstrap, source, events)
        await asyncio.sleep(3)  # handled, failed and rolled back over and over meanwhile
    assert await _committed(bootstrap, flaky.group_id, TopicPartition(source, 0)) in (None, 0)
    assert await read_all(bootstrap, target, expect=0, timeout=3) == []

    async with running([_flaky_relay(source, target, {})], settings):
        outputs = await read_all(bootstrap, target, expect=5)
    assert [headers_of(o)["ce_causationid"] for o in outputs] == [e.id for e in events]
    assert await _committed(bootstrap, flaky.group_id, TopicPartition(source, 0)) == 5


async def test_a_transaction_the_broker_fails_under_a_batch_is_retried_and_the_stage_runs_on(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a broker restart did in the 20,000-order fault run: adding a batch's offsets to its
    transaction failed, aiokafka put the transaction in an abortable error and refused the batch's
    records with IllegalOperation (not a KafkaError), and the stage process ended. The client is put
    in that state here as the broker's failure puts it: the batch is rolled back and retried, the
    stage keeps running, and every event comes out once."""
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target], partitions=1)
    add_offsets = AIOKafkaProducer.send_offsets_to_transaction
    failed: list[str] = []

    async def failing_once(self: AIOKafkaProducer, offsets: dict[TopicPartition, int], group_id: str) -> None:
        await add_offsets(self, offsets, group_id)
        if not failed:
            failed.append(group_id)
            self._txn_manager.error_transaction(KafkaError("the coordinator went away"))

    monkeypatch.setattr(AIOKafkaProducer, "send_offsets_to_transaction", failing_once)

    async def slow(event: Envelope, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.5)  # as a database stage's batch: the offsets are in before the records
        ctx.emit(target, event.data)

    events = orders(5)
    stage = Stage(name="slow-relay", inputs=(source,), outputs=(target,), handler=slow)
    async with running([stage], _settings(bootstrap)) as task:
        await publish_events(bootstrap, source, events)
        outputs = await read_all(bootstrap, target, expect=5)
        assert not task.done(), "the stage process ended"
    assert failed, "the transaction was never failed: the test tested nothing"
    assert [headers_of(o)["ce_causationid"] for o in outputs] == [e.id for e in events]


async def test_a_handler_that_keeps_failing_dead_letters_its_event_and_the_batch_comes_out_once(
    bootstrap: str,
) -> None:
    """Each failed attempt aborts the whole batch, offsets and records; the last one sends the event
    to the dead-letter topic and the rest of the batch comes out once."""
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target], partitions=1)
    events = orders(5)
    flaky = _flaky_relay(source, target, {events[2].subject: RuntimeError})
    async with running([flaky], _settings(bootstrap)):
        await publish_events(bootstrap, source, events)
        outputs = await read_all(bootstrap, target, expect=4)
        [dead] = await read_all(bootstrap, dead_letter_topic(source), expect=1)
    assert [headers_of(o)["ce_causationid"] for o in outputs] == [
        e.id for i, e in enumerate(events) if i != 2
    ]
    assert "handler failed 3 times" in headers_of(dead)["dlq_reason"]
    assert await _committed(bootstrap, flaky.group_id, TopicPartition(source, 0)) == 5


async def test_the_stage_pauses_while_the_broker_is_down_and_catches_up(
    servers: Servers, bootstrap: str
) -> None:
    if servers.kafka is None:
        pytest.skip("needs a broker this test started itself, to stop and start it")
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target])
    first, second = orders(500), orders(500)
    settings = _settings(bootstrap)
    async with running([relay_stage(source, target)], settings):
        await publish_events(bootstrap, source, first)
        assert len(await read_all(bootstrap, target, expect=500, timeout=60)) == 500
        servers.kafka.stop()
        await asyncio.sleep(10)
        servers.kafka.start()
        await publish_events(bootstrap, source, second)
        outputs = await read_all(bootstrap, target, expect=1000, timeout=120, settle=3)
        probe = await _get(settings, "/readyz")
    causes = [headers_of(o)["ce_causationid"] for o in outputs]
    assert len(causes) == 1000 and set(causes) == {e.id for e in first + second}
    assert probe[0] == 200, "the stage is ready again after the broker came back"


# ----------------------------------------------------------------- database stages


def _ledger_stage(source: str, target: str, table: str, *, fail_on: str | None = None) -> Stage:
    """A stage that writes PostgreSQL: counts units per order and emits the event on."""

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        order_id = event.subject
        if order_id == fail_on:
            raise RejectEvent(f"order {order_id} is not allowed here", category="rejected")
        await ctx.db.execute(f"INSERT INTO {table} (order_id, event_id) VALUES ($1, $2)", order_id, event.id)
        ctx.emit(target, event.data)

    return Stage(
        name=f"ledger-{table}", inputs=(source,), outputs=(target,), handler=handle, uses_database=True
    )


async def test_a_database_stage_replays_outputs_after_a_lost_kafka_commit_and_skips_redeliveries(
    bootstrap: str, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = unique("in"), unique("out")
    table = f"t_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE TABLE {table} (order_id text, event_id text UNIQUE)")
    await create_topics(bootstrap, [source, target], partitions=1)
    events = orders(20)

    # Lose the first Kafka commit after the database committed: the window the idempotency record covers.
    from aiokafka import AIOKafkaProducer

    real_commit = AIOKafkaProducer.commit_transaction
    lost = {"count": 0}

    async def commit_once_lost(self: AIOKafkaProducer) -> None:
        if lost["count"] == 0 and self._txn_manager.transactional_id.startswith(
            f"orchestrator.ledger-{table}"
        ):
            lost["count"] += 1
            raise KafkaConnectionError("injected: commit lost")
        await real_commit(self)

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", commit_once_lost)
    settings = _settings(bootstrap, database_url)
    async with running([_ledger_stage(source, target, table, fail_on="ORD-000007")], settings):
        await publish_events(bootstrap, source, events)
        await publish_events(bootstrap, source, events[:5])  # an upstream resends five events
        outputs = await read_all(bootstrap, target, expect=19, settle=2)
        dead = await read_all(bootstrap, dead_letter_topic(source), expect=1)
        metrics = (await _get(settings, "/metrics"))[1]
        sessions = await db.fetch("SELECT application_name FROM pg_stat_activity")
    assert lost["count"] == 1
    # An operator looking at PostgreSQL's sessions sees which stage holds each.
    assert f"orchestrator ledger-{table}" in {r["application_name"] for r in sessions}
    rows = await db.fetch(f"SELECT event_id FROM {table}")
    assert len(rows) == 19, "each accepted event changed the database once"
    causes = [headers_of(o)["ce_causationid"] for o in outputs]
    assert sorted(causes) == sorted(e.id for e in events if e.subject != "ORD-000007")
    assert headers_of(dead[0])["dlq_reason"] == "order ORD-000007 is not allowed here"
    assert f'orchestrator_events_duplicate_total{{stage="ledger-{table}",topic="{source}"}} 5.0' in metrics
    assert 'orchestrator_transient_faults_total{kind="KafkaConnectionError"' in metrics


async def test_a_connection_asyncpg_lost_track_of_is_dropped_and_the_batch_retried(
    bootstrap: str, database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a PostgreSQL restart did in a 20,000-order fault run: asyncpg's protocol lost track of a
    connection whose server went away mid-operation, the batch's commit raised InternalClientError
    ("cannot switch to state 15; another operation (2) is in progress"), which is no connection error,
    and the stage process ended. Now the batch is retried on a fresh connection, the broken one is
    not handed out again, and every event comes out once."""
    source, target = unique("in"), unique("out")
    table = f"t_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE TABLE {table} (order_id text, event_id text UNIQUE, backend integer)")
    await create_topics(bootstrap, [source, target], partitions=1)
    real_commit = asyncpg.transaction.Transaction._Transaction__commit  # type: ignore[attr-defined]
    broken: list[int] = []

    async def commit_once_confused(self: asyncpg.transaction.Transaction) -> None:
        backend = self._connection.get_server_pid()
        if not broken and await self._connection.fetchval(f"SELECT count(*) FROM {table}"):
            broken.append(backend)
            raise asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        await real_commit(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "_Transaction__commit", commit_once_confused)

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        backend = await ctx.db.fetchval("SELECT pg_backend_pid()")
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", event.subject, event.id, backend)
        ctx.emit(target, event.data)

    stage = Stage(
        name=f"ledger-{table}", inputs=(source,), outputs=(target,), handler=handle, uses_database=True
    )
    events = orders(5)
    async with running([stage], _settings(bootstrap, database_url)) as task:
        await publish_events(bootstrap, source, events)
        outputs = await read_all(bootstrap, target, expect=5, timeout=30)
        assert not task.done(), "the stage process ended"
    assert broken, "the fault was never injected: the test tested nothing"
    assert sorted(headers_of(o)["ce_causationid"] for o in outputs) == sorted(e.id for e in events)
    rows = await db.fetch(f"SELECT backend FROM {table}")
    assert len(rows) == 5, "each event changed the database once"
    assert broken[0] not in {r["backend"] for r in rows}, "the broken connection came back"


async def test_events_an_observer_does_not_want_are_passed_over_without_its_handler_or_database(
    bootstrap: str, database_url: str, db: asyncpg.Connection
) -> None:
    """reserve observes every node event for the shipments among them: the rest must cost it no
    handler call, no idempotency record and no transaction, and still be consumed (offsets committed)."""
    source = unique("observed")
    table = f"t_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE TABLE {table} (order_id text, event_id text UNIQUE)")
    await create_topics(bootstrap, [source], partitions=1)
    created = orders(12)
    cancelled = [
        Envelope.new(
            example("order.cancelled.v1").model_copy(update={"order_id": f"ORD-C{i}"}), source="test/oms"
        )
        for i in range(3)
    ]
    mixed = created[:4] + cancelled[:1] + created[4:8] + cancelled[1:] + created[8:]
    seen: list[str] = []

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        seen.append(event.type)
        await ctx.db.execute(
            f"INSERT INTO {table} (order_id, event_id) VALUES ($1, $2)", event.subject, event.id
        )

    name = f"observer-{table}"
    stage = Stage(
        name=name,
        inputs=(source,),
        handler=handle,
        uses_database=True,
        accepts=frozenset({"order.cancelled.v1"}),
        observes=frozenset({source}),
        wanted_there={source: frozenset({"order.cancelled.v1"})},
    )
    settings = _settings(bootstrap, database_url)
    async with running([stage], settings):
        await publish_events(bootstrap, source, mixed)
        deadline = time.monotonic() + 30
        while await db.fetchval(f"SELECT count(*) FROM {table}") < 3:
            assert time.monotonic() < deadline, "the wanted events never reached the handler"
            await asyncio.sleep(0.1)
        admin_consumer = AIOKafkaConsumer(group_id=stage.group_id, **client_kwargs(bootstrap))
        await admin_consumer.start()
        try:
            tp = TopicPartition(source, 0)
            while (await admin_consumer.committed(tp)) != len(mixed):
                assert time.monotonic() < deadline, "the passed-over events were not consumed"
                await asyncio.sleep(0.1)
        finally:
            await admin_consumer.stop()
        consumed = (
            "orchestrator_events_consumed_total"
            f'{{event_type="order.created.v1",stage="{name}",topic="{source}"}} 12.0'
        )
        # Counted once the batch's commit returns to the stage, a moment after the broker has it.
        while consumed not in (await _get(settings, "/metrics"))[1]:
            assert time.monotonic() < deadline, "the passed-over events were not counted as consumed"
            await asyncio.sleep(0.1)
    assert seen == ["order.cancelled.v1"] * 3
    recorded = await db.fetch("SELECT event_id FROM runtime_processed_events WHERE stage = $1", name)
    assert sorted(r["event_id"] for r in recorded) == sorted(e.id for e in cancelled)


@dataclasses.dataclass
class _Written:
    """A batch reader's result that settles the events it wrote itself (see `SettlingBatch`)."""

    ids: frozenset[str]

    def settled(self, event: Envelope) -> bool:
        return event.id in self.ids


async def test_events_a_batch_reader_settled_get_no_handler_and_are_still_recorded_once(
    bootstrap: str, database_url: str, db: asyncpg.Connection
) -> None:
    """reserve applies a batch's stock changes in a few statements; the events it settled so must
    cost no handler call, yet count as processed: an upstream resending them changes nothing."""
    source = unique("settled")
    table = f"t_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE TABLE {table} (order_id text, event_id text UNIQUE, how text)")
    await create_topics(bootstrap, [source], partitions=1)
    events = orders(12)
    # The reader writes the even-numbered orders' events for the whole batch; the handler the rest.
    by_reader = {e.id for e in events if int(e.subject[-1]) % 2 == 0}
    handled: list[str] = []

    async def read(batch: Sequence[Envelope], conn: asyncpg.Connection) -> _Written:
        # A resend may come in the same batch as its first copy: like reserve's, the reader takes
        # each event once (the worker skips the second copy as a duplicate).
        mine = list({e.id: e for e in batch if e.id in by_reader}.values())
        await conn.executemany(
            f"INSERT INTO {table} (order_id, event_id, how) VALUES ($1, $2, 'batch')",
            [(e.subject, e.id) for e in mine],
        )
        return _Written(frozenset(e.id for e in mine))

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        handled.append(event.id)
        await ctx.db.execute(
            f"INSERT INTO {table} (order_id, event_id, how) VALUES ($1, $2, 'handler')",
            event.subject,
            event.id,
        )

    name = f"settling-{table}"
    stage = Stage(name=name, inputs=(source,), handler=handle, uses_database=True, read_batch=read)
    settings = _settings(bootstrap, database_url)
    async with running([stage], settings):
        # An upstream resends six: three published with their first copies (so most likely in
        # their batch), three once the first copies are recorded (found among the processed).
        await publish_events(bootstrap, source, [*events, *events[:3]])
        deadline = time.monotonic() + 30
        while await db.fetchval(f"SELECT count(*) FROM {table}") < len(events):
            assert time.monotonic() < deadline, "the events were not all written"
            await asyncio.sleep(0.1)
        await publish_events(bootstrap, source, events[3:6])
        duplicates = f'orchestrator_events_duplicate_total{{stage="{name}",topic="{source}"}} 6.0'
        while duplicates not in (await _get(settings, "/metrics"))[1]:
            assert time.monotonic() < deadline, "the resent events were not all skipped"
            await asyncio.sleep(0.1)
    rows = await db.fetch(f"SELECT event_id, how FROM {table}")
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in events), "each event written once"
    assert {r["event_id"] for r in rows if r["how"] == "batch"} == by_reader
    assert sorted(handled) == sorted(e.id for e in events if e.id not in by_reader)
    recorded = await db.fetch("SELECT event_id, outputs FROM runtime_processed_events WHERE stage = $1", name)
    assert sorted(r["event_id"] for r in recorded) == sorted(e.id for e in events)
    assert {orjson.loads(r["outputs"]) == [] for r in recorded} == {True}


# ----------------------------------------------------------------- metrics and probes


async def _get(settings: Settings, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{settings.http_host}:{settings.http_port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def _wait_http(settings: Settings, path: str, wait_s: float = 30) -> tuple[int, str]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await _get(settings, path)
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


DOCUMENTED_METRICS = (
    "orchestrator_events_consumed_total",
    "orchestrator_events_produced_total",
    "orchestrator_events_failed_total",
    "orchestrator_dead_letters_total",
    "orchestrator_events_duplicate_total",
    "orchestrator_event_handling_seconds",
    "orchestrator_batch_commit_seconds",
    "orchestrator_batch_phase_seconds",
    "orchestrator_consumer_lag_messages",
    "orchestrator_transient_faults_total",
    "orchestrator_stage_ready",
)


async def test_metrics_and_probes(bootstrap: str) -> None:
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target])
    settings = _settings(bootstrap)
    events = orders(30)
    async with running([relay_stage(source, target)], settings):
        assert (await _wait_http(settings, "/healthz"))[0] == 200
        await publish_events(bootstrap, source, events)
        await publish(bootstrap, source, [(b"ORD-x", b"not json", encode(events[0])[2])])
        await read_all(bootstrap, target, expect=30)
        await asyncio.sleep(0.5)
        ready_status, ready_body = await _get(settings, "/readyz")
        status, text = await _get(settings, "/metrics")
    assert ready_status == 200 and orjson.loads(ready_body) == {"ready": True, "stages": {"relay": True}}
    assert status == 200
    for name in DOCUMENTED_METRICS:
        assert f"# HELP {name}" in text, name
    labels = 'event_type="order.created.v1",stage="relay"'
    consumed = f'orchestrator_events_consumed_total{{{labels},topic="{source}"}} 30.0'
    produced = f'orchestrator_events_produced_total{{{labels},topic="{target}"}} 30.0'
    dead = f'orchestrator_dead_letters_total{{reason="malformed",stage="relay",topic="{source}"}} 1.0'
    assert consumed in text and produced in text and dead in text
    assert f'orchestrator_consumer_lag_messages{{partition="0",stage="relay",topic="{source}"}} 0.0' in text
    # Every committed batch has its four phases, and together they take no longer than the batch.
    samples = {
        (s.name, s.labels.get("phase")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("stage") == "relay"
    }
    batches = samples[("orchestrator_batch_commit_seconds_count", None)]
    assert batches >= 1
    phases = ("handle", "produce", "offsets", "commit")
    assert all(samples[("orchestrator_batch_phase_seconds_count", p)] == batches for p in phases), samples
    in_phases = sum(samples[("orchestrator_batch_phase_seconds_sum", p)] for p in phases)
    assert 0 < in_phases <= samples[("orchestrator_batch_commit_seconds_sum", None)]


async def test_sigterm_finishes_and_leaves_cleanly(bootstrap: str, tmp_path: Path) -> None:
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, [source, target])
    await publish_events(bootstrap, source, orders(200))
    stage = StageProcess(
        ["relay", "--input", source, "--output", target, "--http-port", str(free_port())],
        {"KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        tmp_path / "stage.log",
    )
    stage.start()
    assert len(await read_all(bootstrap, target, expect=200)) == 200
    assert stage.terminate() == 0
    log = stage.log_path.read_text()
    assert '"event": "stage stopped"' in log and '"event": "process stopped"' in log


def test_settings_reject_bad_numbers() -> None:
    with pytest.raises(ValueError, match="ORCHESTRATOR_HTTP_PORT must be a whole number"):
        Settings.from_env({"ORCHESTRATOR_HTTP_PORT": "eighty"})
    assert dataclasses.replace(Settings.from_env({}), http_port=1).http_port == 1


def test_the_stage_producers_retry_backoff_comes_from_the_environment() -> None:
    assert Settings.from_env({}).producer_retry_backoff_ms == 100  # aiokafka's own default
    assert Settings.from_env({"ORCHESTRATOR_PRODUCER_RETRY_BACKOFF_MS": "20"}).producer_retry_backoff_ms == 20
    with pytest.raises(ValueError, match="ORCHESTRATOR_PRODUCER_RETRY_BACKOFF_MS must be a whole number"):
        Settings.from_env({"ORCHESTRATOR_PRODUCER_RETRY_BACKOFF_MS": "soon"})
