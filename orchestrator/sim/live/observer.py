"""Reads what a live run puts on the topics into a `LiveTally`, and what the
live view needs besides: consumer lag per stage (from the stages' /metrics)
and how each exception ended (from the exceptions stage's cases).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.contract.envelope import header_map
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs
from orchestrator.sim.live.tally import LiveTally
from orchestrator.topics import TopicCatalog

#: What the live view reads (besides every dead-letter topic).
WATCHED = (
    "oms.orders.v1",
    "orchestrator.plans.v1",
    "wms.work-orders.v1",
    "wms.events.v1",
    "carrier.events.v1",
    "orchestrator.exceptions.v1",
    "oms.status.v1",
    "oms.returns.v1",
)


def watched_topics(catalog: TopicCatalog) -> list[str]:
    return [*WATCHED, *(t.name for t in catalog.all_topics() if t.is_dead_letter)]


async def end_offsets(bootstrap: Bootstrap, topics: list[str]) -> dict[TopicPartition, int]:
    """Where each partition of `topics` ends now: a run counts only what comes after."""
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            await consumer._client.force_metadata_update()  # first contact: metadata not loaded yet
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        return dict(await consumer.end_offsets(partitions)) if partitions else {}
    finally:
        await consumer.stop()


class TopicObserver:
    """Follows the watched topics from the run's start offsets into a tally."""

    def __init__(self, bootstrap: Bootstrap, start: dict[TopicPartition, int], tally: LiveTally) -> None:
        self.tally = tally
        self.start = start
        self.records = 0
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(bootstrap),
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_poll_records=2000,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            self._consumer.assign(list(self.start))
            for tp, offset in self.start.items():
                self._consumer.seek(tp, offset)
            while not stop.is_set():
                await self.poll_once(timeout_ms=200)
        finally:
            await self._consumer.stop()

    async def poll_once(self, timeout_ms: int) -> int:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        n = 0
        for tp, records in batches.items():
            for record in records:
                n += 1
                event_type, data, dlq_reason = decode_record(record)
                self.tally.add(tp.topic, event_type, record.timestamp, data, dlq_reason=dlq_reason)
        self.records += n
        return n

    async def caught_up(self) -> bool:
        """True when every watched partition has been read to its end."""
        ends = await self._consumer.end_offsets(list(self.start))
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True


def decode_record(record: ConsumerRecord[bytes, bytes]) -> tuple[str, dict[str, Any], str]:
    """(event type, payload, dead-letter reason) of a record as a reader downstream sees it; a value
    that is not a JSON object (a dead letter of garbage) reads as an empty payload."""
    headers = header_map(record.headers)
    try:
        data = orjson.loads(record.value) if record.value is not None else {}
    except orjson.JSONDecodeError:
        data = {}
    return headers.get("ce_type", ""), data if isinstance(data, dict) else {}, headers.get("dlq_reason", "")


async def stage_gauge(session: aiohttp.ClientSession, metrics_url: str, name: str) -> dict[str, float] | None:
    """A metric of a stage process summed per `stage` label; None if the process does not answer."""
    try:
        async with session.get(metrics_url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                out[sample.labels.get("stage", "")] += sample.value
    return dict(out)


def case_ending(state: str, actions_tried: list[dict[str, Any]], current_action: str | None) -> str:
    """How one exception case ended, in a word: the action that resolved it, review, or open."""
    if state == "in_review":
        return "in review"
    if state == "open":
        return f"open ({current_action})" if current_action else "open"
    succeeded = [a["action"] for a in actions_tried if a.get("succeeded")]
    return str(succeeded[-1]) if succeeded else "resolved"


async def exception_resolutions(database_url: str, order_prefix: str) -> dict[str, dict[str, int]]:
    """How the run's exceptions ended, by kind: {kind: {ending: count}}."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT kind, state, actions_tried, current_action FROM exceptions_cases WHERE order_id LIKE $1",
            order_prefix.replace("%", r"\%").replace("_", r"\_") + "%",
        )
    finally:
        await conn.close()
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        tried = (
            orjson.loads(row["actions_tried"])
            if isinstance(row["actions_tried"], str)
            else row["actions_tried"]
        )
        out[row["kind"]][case_ending(row["state"], tried or [], row["current_action"])] += 1
    return {kind: dict(ends) for kind, ends in out.items()}


async def stock_loaded(database_url: str, pairs: list[tuple[str, str]], since: datetime) -> int:
    """How many of the (node, SKU) stock counts reserve has applied since `since`."""
    conn = await asyncpg.connect(database_url)
    try:
        row: Any = await conn.fetchval(
            "SELECT count(*) FROM reserve_ledger l JOIN unnest($1::text[], $2::text[]) AS p(node_id, sku)"
            " ON l.node_id = p.node_id AND l.sku = p.sku WHERE l.updated_at >= $3",
            [n for n, _ in pairs],
            [s for _, s in pairs],
            since,
        )
        return int(row)
    finally:
        await conn.close()


__all__ = [
    "TopicObserver",
    "case_ending",
    "decode_record",
    "end_offsets",
    "exception_resolutions",
    "stage_gauge",
    "stock_loaded",
    "watched_topics",
]
