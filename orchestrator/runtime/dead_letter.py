"""Dead-letter records: the original record, untouched, plus why it failed.

A dead letter keeps the original key, value and headers so it can be
inspected and replayed; the reason and the original coordinates travel in
`dlq_*` headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

DLQ_SUFFIX = ".dlq"


class ConsumedRecord(Protocol):
    """What the runtime reads of a consumed Kafka record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of a consumed topic (declared in topics.yaml)."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record ready to send: topic, key, value, headers, and what it counts as."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event_type: str


def dead_letter(
    record: ConsumedRecord,
    *,
    stage: str,
    category: str,
    reason: str,
    now: datetime | None = None,
) -> OutgoingRecord:
    headers = list(record.headers or ())
    headers += [
        ("dlq_reason", reason.encode("utf-8", errors="replace")[:4096]),
        ("dlq_category", category.encode()),
        ("dlq_stage", stage.encode()),
        ("dlq_source_topic", record.topic.encode()),
        ("dlq_source_partition", str(record.partition).encode()),
        ("dlq_source_offset", str(record.offset).encode()),
        ("dlq_source_timestamp", str(record.timestamp).encode()),
        ("dlq_failed_at", (now or datetime.now(UTC)).isoformat().encode()),
    ]
    return OutgoingRecord(
        topic=dead_letter_topic(record.topic),
        key=record.key,
        value=record.value,
        headers=headers,
        event_type="dead_letter",
    )
