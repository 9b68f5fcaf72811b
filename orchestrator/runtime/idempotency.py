"""The idempotency record of stages that write PostgreSQL.

In the same database transaction as the stage's own state change, the
runtime records each handled event id together with where it was read from
and the records it produced. On a redelivery:
- same id, same coordinates: the Kafka transaction of an earlier attempt
  was lost after the database committed (a crash between the two commits),
  so the stored outputs are produced again, inside the new Kafka transaction;
- same id, other coordinates: a true duplicate (an upstream resend); it has
  had its effect already and is skipped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from orchestrator.runtime.dead_letter import OutgoingRecord


@dataclass(frozen=True, slots=True)
class ProcessedEvent:
    source_topic: str
    source_partition: int
    source_offset: int
    outputs: list[OutgoingRecord]


def _text(raw: bytes | None) -> str | dict[str, str] | None:
    # Our own events are UTF-8; a record a handler dead-letters is an upstream's, and may not be (or
    # may be cut mid-character by the dead letter's size limit): those bytes are kept in base64.
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def _bytes(text: str | dict[str, str] | None) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text["base64"]) if isinstance(text, dict) else text.encode()


def _encode_outputs(outputs: Sequence[OutgoingRecord]) -> bytes:
    return orjson.dumps(
        [
            {
                "topic": o.topic,
                "key": _text(o.key),
                "value": _text(o.value),
                "headers": [[k, _text(v)] for k, v in o.headers],
                "event_type": o.event_type,
            }
            for o in outputs
        ]
    )


def _decode_outputs(raw: bytes) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(
            topic=o["topic"],
            key=_bytes(o["key"]),
            value=_bytes(o["value"]),
            headers=[(k, _bytes(v) or b"") for k, v in o["headers"]],
            event_type=o["event_type"],
        )
        for o in orjson.loads(raw)
    ]


async def fetch_processed(
    conn: asyncpg.Connection, stage: str, event_ids: Iterable[str]
) -> dict[str, ProcessedEvent]:
    rows = await conn.fetch(
        "SELECT event_id, source_topic, source_partition, source_offset, outputs"
        " FROM runtime_processed_events WHERE stage = $1 AND event_id = ANY($2::text[])",
        stage,
        list(event_ids),
    )
    return {
        r["event_id"]: ProcessedEvent(
            r["source_topic"], r["source_partition"], r["source_offset"], _decode_outputs(r["outputs"])
        )
        for r in rows
    }


async def record_processed(
    conn: asyncpg.Connection,
    stage: str,
    rows: Sequence[tuple[str, str, int, int, Sequence[OutgoingRecord]]],
) -> None:
    """Insert (event_id, topic, partition, offset, outputs) rows; a conflict means a bug upstream.

    One statement for the batch, its rows as arrays: a row per statement (`executemany`) cost the
    server a bind and an execute each, inside the transaction and whatever lock the stage holds.
    """
    if not rows:
        return
    await conn.execute(
        "INSERT INTO runtime_processed_events"
        " (stage, event_id, source_topic, source_partition, source_offset, outputs)"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::bigint[], $6::bytea[])",
        stage,
        [eid for eid, _, _, _, _ in rows],
        [t for _, t, _, _, _ in rows],
        [p for _, _, p, _, _ in rows],
        [o for _, _, _, o, _ in rows],
        [_encode_outputs(outs) for _, _, _, _, outs in rows],
    )
