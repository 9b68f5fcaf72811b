"""Start-up check that the topics a process needs exist (auto-creation is off on purpose)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient

from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs


async def missing_topics(bootstrap: Bootstrap, topics: Sequence[str]) -> list[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap), request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [t for t in topics if t not in existing]
