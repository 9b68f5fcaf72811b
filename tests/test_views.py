"""Views on the real broker: a view asked to catch up holds every event its topic held when asked."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.runtime.views import TopicView
from orchestrator.settings import Settings
from tests.support import create_topics, publish_events, unique

pytestmark = pytest.mark.integration


def _closures(node_id: str, count: int) -> list[Envelope]:
    return [
        Envelope.new(
            NodeStatusChanged(
                node_id=node_id, open=i % 2 == 1, reason=f"change {i}", changed_at=datetime.now(UTC)
            ),
            source="test/network",
        )
        for i in range(count)
    ]


def _count(seen: int, _event: EventPayload) -> int:
    return seen + 1


async def test_a_view_asked_to_catch_up_holds_every_event_published_before(bootstrap: str) -> None:
    topic = unique("view-catch-up")
    await create_topics(bootstrap, [topic], partitions=3, with_dlq=False)
    view = TopicView("counted", topic, 0, _count)
    # Not started: nothing to catch up with, and no reason to fail whoever asks.
    assert not await view.catch_up(datetime.now(UTC), timeout=1)
    stop = asyncio.Event()
    await view.start(Settings(kafka_bootstrap=bootstrap), stop)
    try:
        assert view.ready and view.state == 0
        for round_ in range(1, 6):
            asked = datetime.now(UTC)
            await publish_events(bootstrap, topic, _closures(f"NODE-{round_}", 40))
            # Published a moment ago: following alone may not have fetched them yet.
            await view.catch_up(asked, timeout=10)
            assert view.state == 40 * round_
        # Complete as of a moment after `asked`: nothing to ask the broker, and nothing new.
        started = time.monotonic()
        assert not await view.catch_up(asked, timeout=10)
        assert time.monotonic() - started < 0.05
        assert view.folded == 200
    finally:
        stop.set()
        await view.close()
