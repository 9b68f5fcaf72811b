"""Dead-letter records: the original record, untouched, plus why it failed.

A dead letter keeps the original key, value and headers so it can be
inspected and replayed; the reason and the original coordinates travel in
`dlq_*` headers. A value too large to travel again (see
`MAX_DEAD_LETTER_VALUE`) is cut, and its size and SHA-256 say what it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

DLQ_SUFFIX = ".dlq"
#: Bytes of the original value a dead letter keeps. A record the broker accepted may be just under its
#: limit (message.max.bytes, ~1 MiB by default); its dead letter adds headers and would then be refused
#: by the broker, and a dead letter that cannot be written stops the partition for good. Real events
#: are far smaller, so only an absurd value is ever cut.
MAX_DEAD_LETTER_VALUE = 512 * 1024


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
    value = record.value
    if value is not None:
        headers += [
            ("dlq_value_bytes", str(len(value)).encode()),
            ("dlq_value_sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        if len(value) > MAX_DEAD_LETTER_VALUE:
            headers.append(("dlq_value_truncated", b"true"))
            value = value[:MAX_DEAD_LETTER_VALUE]
    return OutgoingRecord(
        topic=dead_letter_topic(record.topic),
        key=record.key,
        value=value,
        headers=headers,
        event_type="dead_letter",
    )


def logged_dead_letter(
    log: structlog.typing.FilteringBoundLogger,
    record: ConsumedRecord,
    *,
    stage: str,
    category: str,
    reason: str,
    now: datetime | None = None,
) -> OutgoingRecord:
    """`dead_letter`, said in the log with where the record came from: every record a stage gives up
    leaves one warning line an operator can find it by."""
    log.warning(
        "dead-lettered",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        category=category,
        reason=reason,
    )
    return dead_letter(record, stage=stage, category=category, reason=reason, now=now)


def dead_letter_origin(record: OutgoingRecord) -> tuple[str, str] | None:
    """(source topic, category) of a dead-letter record, read back from its headers; None for others.

    A handler may dead-letter a record it kept (HandlerContext.dead_letter); the runtime counts it
    like its own dead letters from this.
    """
    if record.event_type != "dead_letter":
        return None
    headers = dict(record.headers)  # the dlq_* headers come last: a re-dead-lettered record's win
    return (
        headers.get("dlq_source_topic", b"").decode(errors="replace"),
        headers.get("dlq_category", b"").decode(errors="replace"),
    )
