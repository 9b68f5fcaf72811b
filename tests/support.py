"""Helpers the integration tests share: topics, publishing, reading back, stage processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from orchestrator.contract.envelope import Envelope, encode
from orchestrator.infra.ports import free_port as free_port  # re-exported for the tests
from orchestrator.infra.ports import free_ports as free_ports
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs

REPO = Path(__file__).resolve().parents[1]


def unique(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


async def create_topics(
    bootstrap: Bootstrap, names: Iterable[str], partitions: int = 3, *, with_dlq: bool = True
) -> None:
    wanted: list[str] = []
    for name in names:
        wanted.append(name)
        if with_dlq:
            wanted.append(dead_letter_topic(name))
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap))
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(n, partitions, 1) for n in wanted])
        refused = [e for e in response.to_object()["topic_errors"] if e["error_code"] != 0]
        assert not refused, f"the broker refused to create topics: {refused}"
        # Created is not yet listed: a stage started at once may find them missing from its metadata.
        deadline = time.monotonic() + 30
        while not set(wanted) <= set(await admin.list_topics()):
            assert time.monotonic() < deadline, f"topics {wanted} not listed 30 s after creation"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def publish(
    bootstrap: Bootstrap,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    """Publish raw (key, value, headers) records, in order, pipelined."""
    producer = AIOKafkaProducer(**client_kwargs(bootstrap), acks="all", linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, headers=h) for k, v, h in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_events(bootstrap: Bootstrap, topic: str, envelopes: Sequence[Envelope]) -> None:
    await publish(bootstrap, topic, [encode(e) for e in envelopes])


async def read_all(
    bootstrap: Bootstrap, topic: str, *, expect: int, timeout: float = 60.0, settle: float = 1.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the beginning with read_committed until `expect` records came
    and nothing more arrived for `settle` seconds (so extra duplicates are seen), or `timeout`."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(bootstrap),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for records in batch.values() for r in records]
            if got:
                out.extend(got)
                quiet_since = time.monotonic()
            elif len(out) >= expect and time.monotonic() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return out


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


@dataclass
class StageProcess:
    """`orchestrator run ...` as a child process, the way a deployment runs it."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


async def follow(
    bootstrap: Bootstrap,
    topics: Sequence[str],
    on_record: Callable[[ConsumerRecord[bytes, bytes]], None],
    stop: asyncio.Event,
    *,
    poll_ms: int = 200,
) -> None:
    """Read `topics` from the beginning (read_committed) and hand every record to `on_record`, until `stop`."""
    consumer = AIOKafkaConsumer(
        *topics,
        **client_kwargs(bootstrap),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=poll_ms)
            for records in batch.values():
                for rec in records:
                    on_record(rec)
    finally:
        with contextlib.suppress(BaseException):
            await consumer.stop()
