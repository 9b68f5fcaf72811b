"""Routing that learns, end to end on the real Kafka and PostgreSQL: a node with a surge of
short picks loses its traffic (its breaker opens, plans say why), regains it after the
cool-down when the probe succeeds, and an operator's override is obeyed."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import orchestrator.policies as packaged
from orchestrator.contract.execution import (
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderPicked,
    WorkOrderShortPicked,
)
from tests.harness import LONDON, MANCHESTER, Pipeline, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]


def _policy_file() -> str:
    """The packaged policy with learning made quick: two work orders are believed, a 3 s cool-down."""
    policy = yaml.safe_load(Path(packaged.__file__).with_name("default.yaml").read_text())
    policy["version"] = "learning-test-1"
    policy["learning"] = {
        "enabled": True,
        "window_hours": 24,
        "recent_seconds": 120,
        "node_risk_weight": 0.5,
        "service_risk_weight": 0.5,
        "min_samples": 2,
        "trip_rate": 0.5,
        "trip_ratio": 3.0,
        "cooldown_seconds": 3,
        "refresh_seconds": 0.2,
    }
    path = Path(tempfile.mkdtemp(prefix="learning-policy-")) / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return str(path)


PIPELINE_ENV = {
    "ORCHESTRATOR_POLICY_FILE": _policy_file(),
    "ORCHESTRATOR_ACK_TIMEOUT_S": "3600",
    "ORCHESTRATOR_EARLY_EVENT_WAIT_S": "20",
}


def _now() -> datetime:
    return datetime.now(UTC)


async def _first_work_order(p: Pipeline, order_id: str) -> dict[str, Any]:
    await p.out.wait(lambda: bool(p.out.released(order_id)), f"a work order for {order_id}")
    return p.out.released(order_id)[0]


async def _breaker(p: Pipeline, subject: str) -> dict[str, Any] | None:
    row = await p.db.fetchrow(
        "SELECT state, reason, until FROM learning_breakers WHERE subject = $1", subject
    )
    return dict(row) if row else None


async def _wait_breaker(p: Pipeline, subject: str, state: str, timeout: float = 30) -> dict[str, Any]:
    async def check() -> bool:
        b = await _breaker(p, subject)
        return b is not None and b["state"] == state

    for _ in range(int(timeout * 10)):
        if await check():
            # decide-node reads breakers every 0.2 s here: let it see the change.
            await asyncio.sleep(0.6)
            found = await _breaker(p, subject)
            assert found is not None
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject} never reached {state}: {await _breaker(p, subject)}")


async def _plan_text(p: Pipeline, order_id: str) -> str:
    raw = await p.db.fetchval(
        "SELECT plan_json FROM decide_plans WHERE order_id = $1 ORDER BY plan_version DESC LIMIT 1", order_id
    )
    return str(raw)


async def _routing(p: Pipeline, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "routing",
        *args,
        env={
            **os.environ,
            "DATABASE_URL": p.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": p.bootstrap,
            **PIPELINE_ENV,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_a_node_with_a_surge_of_short_picks_loses_traffic_and_regains_it(pipeline: Pipeline) -> None:
    n = ids("LRN")
    near, far, sku = n("DC-NEAR"), n("DC-FAR"), n("LAMP")
    await pipeline.setup_network(
        node(near, LONDON), node(far, MANCHESTER), stock={(near, sku): 50, (far, sku): 50}
    )

    # Two orders go to the near node, which comes up short on both.
    for i in (1, 2):
        o = order(n(f"ORD-{i}"), [(sku, 1)])
        await pipeline.publish(o)
        wo = await _first_work_order(pipeline, o.order_id)
        assert wo["node_id"] == near
        ids_ = {"work_order_id": wo["work_order_id"], "order_id": o.order_id, "node_id": near}
        short = ShortLine(line_id="1", sku=sku, quantity_picked=0, quantity_short=1)
        await pipeline.publish(
            WorkOrderAcknowledged(**ids_, occurred_at=_now()),
            WorkOrderShortPicked(**ids_, occurred_at=_now(), lines=(short,)),
        )
    tripped = await _wait_breaker(pipeline, f"node:{near}", "open")
    assert "failures jumped to" in tripped["reason"]
    status = await _routing(pipeline, "status")
    assert f"node:{near}" in status and "open" in status

    # The next order goes to the far node, and its plan says why the near one was passed over.
    third = order(n("ORD-3"), [(sku, 1)])
    await pipeline.publish(third)
    wo3 = await _first_work_order(pipeline, third.order_id)
    assert wo3["node_id"] == far
    text = await _plan_text(pipeline, third.order_id)
    assert "breaker_open" in text and "out of routing" in text and "failures jumped to" in text

    # After the cool-down the near node gets a probe; it picks in full, and the breaker closes.
    await asyncio.sleep(3.5)
    fourth = order(n("ORD-4"), [(sku, 1)])
    await pipeline.publish(fourth)
    wo4 = await _first_work_order(pipeline, fourth.order_id)
    assert wo4["node_id"] == near, "back in routing after the cool-down"
    assert "Risk from execution, node " in await _plan_text(pipeline, fourth.order_id)  # the evidence
    # One probe at a time: while it is out, the next order goes elsewhere.
    fifth = order(n("ORD-5"), [(sku, 1)])
    await pipeline.publish(fifth)
    assert (await _first_work_order(pipeline, fifth.order_id))["node_id"] == far
    assert "another order is its one probe" in await _plan_text(pipeline, fifth.order_id)
    ids4 = {"work_order_id": wo4["work_order_id"], "order_id": fourth.order_id, "node_id": near}
    await pipeline.publish(
        WorkOrderAcknowledged(**ids4, occurred_at=_now()),
        WorkOrderPicked(**ids4, occurred_at=_now(), lines=({"line_id": "1", "sku": sku, "quantity": 1},)),
    )
    closed = await _wait_breaker(pipeline, f"node:{near}", "closed")
    assert closed["reason"] == "the probe succeeded"


async def test_an_operator_override_takes_a_node_out_of_routing_and_back(pipeline: Pipeline) -> None:
    n = ids("OVR")
    near, far, sku = n("DC-NEAR"), n("DC-FAR"), n("DESK")
    await pipeline.setup_network(
        node(near, LONDON), node(far, MANCHESTER), stock={(near, sku): 10, (far, sku): 10}
    )
    out = await _routing(pipeline, "override", f"node:{near}", "open", "--reason", "stock count in progress")
    assert "open" in out
    await asyncio.sleep(0.6)
    first = order(n("ORD-1"), [(sku, 1)])
    await pipeline.publish(first)
    assert (await _first_work_order(pipeline, first.order_id))["node_id"] == far
    assert "operator override: stock count in progress" in await _plan_text(pipeline, first.order_id)

    await _routing(pipeline, "override", f"node:{near}", "clear")
    await asyncio.sleep(0.6)
    second = order(n("ORD-2"), [(sku, 1)])
    await pipeline.publish(second)
    assert (await _first_work_order(pipeline, second.order_id))["node_id"] == near
