"""The simulators' publisher on the real broker: a delivery that fails is sent again on a fresh
producer, so an outside system's events are not lost when the broker crashes under it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber

from orchestrator.contract.envelope import header_map
from orchestrator.contract.examples import example
from orchestrator.sim.live import publisher
from orchestrator.sim.live.publisher import Publisher
from tests.support import create_topics, read_all, unique

pytestmark = pytest.mark.integration


async def test_failed_deliveries_are_sent_again_and_every_event_arrives(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("sim-out")
    await create_topics(bootstrap, [topic], partitions=1, with_dlq=False)
    real_send = AIOKafkaProducer.send
    producers: set[int] = set()
    failures = {"left": 3}

    async def send_failing_at_first(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        producers.add(id(self))
        if failures["left"] > 0:
            # What the broker's crash did to the simulators' idempotent producer.
            failures["left"] -= 1
            lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            lost.set_exception(OutOfOrderSequenceNumber())
            return lost
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send", send_failing_at_first)
    order = example("order.created.v1")
    async with Publisher(bootstrap, "test/oms") as out:
        for i in range(10):
            await out.send(topic, order.model_copy(update={"order_id": f"ORD-P{i}"}))
    records = await read_all(bootstrap, topic, expect=10, settle=1.0)
    assert sorted(r.key.decode() for r in records) == [f"ORD-P{i}" for i in range(10)]
    assert len({header_map(r.headers)["ce_id"] for r in records}) == 10, "each event once"
    assert out.resent == 3
    assert len(producers) == 2, "the failed producer was replaced once"


async def test_a_record_the_broker_never_takes_is_given_up_and_counted(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the run's broker is gone for good, a simulator still exits: what it could not deliver is
    given up after `GIVE_UP_S` and counted, not retried for ever."""
    topic = unique("sim-lost")
    await create_topics(bootstrap, [topic], partitions=1, with_dlq=False)

    async def never(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lost.set_exception(OutOfOrderSequenceNumber())
        return lost

    monkeypatch.setattr(publisher, "GIVE_UP_S", 1.5)
    monkeypatch.setattr(publisher, "RETRY_FIRST_S", 0.1)
    order = example("order.created.v1")
    async with Publisher(bootstrap, "test/oms") as out:
        monkeypatch.setattr(AIOKafkaProducer, "send", never)
        for i in range(3):
            await out.send(topic, order.model_copy(update={"order_id": f"ORD-L{i}"}))
        await asyncio.wait_for(out.flush(), 30)
    assert out.lost == 3 and out.resent > 0
