"""reserve keeps a node's day within its capacity, on PostgreSQL through the stage's own handler.

Plans decided side by side from the same count of a node's shipments can all take its last slot;
reserve holds them one after the other, and the one that would take the node past the capacity
it was decided with goes back to decide-node like a plan that lost a race for stock. A shipment
given back whole before it ships (cancelled, re-planned) frees its slot.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
import structlog

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import SkuLine
from orchestrator.contract.examples import example
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.pipeline import (
    DayCapacity,
    PlanCancelled,
    PlanDecided,
    RedecideRequested,
    ReservationConfirmed,
)
from orchestrator.runtime.stage import Emitted
from orchestrator.stages.common import INVENTORY_UPDATES, PLANS
from orchestrator.stages.reserve import reserve_stage
from tests.test_properties_ledger import Pg, pg

pytestmark = pytest.mark.integration
__all__ = ["pg"]

LOG = structlog.get_logger("tests.reserve_capacity")
BASE_PLAN = example("plan.decided.v1")
assert isinstance(BASE_PLAN, PlanDecided)
DAY = date(2025, 3, 10)


def test_reserve_holds_a_nodes_day_to_the_capacity_its_plans_were_decided_with(pg: Pg) -> None:
    stage = reserve_stage()
    ns = f"RC-{uuid.uuid4().hex[:6]}"
    node, sku = f"{ns}-DC", f"{ns}-LAMP"

    def handle(topic: str, data: EventPayload) -> list[Emitted]:
        return pg.handle(stage, topic, data, "test/reserve-capacity")

    def plan(n: int, capacity: DayCapacity | None, version: int = 1) -> PlanDecided:
        order_id = f"{ns}-ORD-{n}"
        [shipment] = BASE_PLAN.shipments
        line = BASE_PLAN.order.lines[0].model_copy(update={"sku": sku, "quantity": 1})
        return BASE_PLAN.model_copy(
            update={
                "order_id": order_id,
                "plan_id": f"{order_id}-p{version}",
                "plan_version": version,
                "order": BASE_PLAN.order.model_copy(update={"order_id": order_id, "lines": (line,)}),
                "shipments": (
                    shipment.model_copy(
                        update={
                            "shipment_id": f"{order_id}-p{version}-s1-{node}",
                            "node_id": node,
                            "lines": (SkuLine(line_id=line.line_id, sku=sku, quantity=1),),
                            "capacity": capacity,
                        }
                    ),
                ),
            }
        )

    def outcome(emitted: list[Emitted]) -> str:
        [answer] = [
            e.envelope.data
            for e in emitted
            if isinstance(e.envelope.data, ReservationConfirmed | RedecideRequested)
        ]
        if isinstance(answer, RedecideRequested):
            return f"re-decide: {answer.reason.message}"
        assert isinstance(answer, ReservationConfirmed)
        return "held"

    def counted(day: date) -> int | None:
        return pg.run(
            pg.conn.fetchval(
                "SELECT shipments FROM reserve_node_load WHERE node_id = $1 AND day = $2", node, day
            )
        )

    def reserved() -> int:
        return pg.run(
            pg.conn.fetchval("SELECT reserved FROM reserve_ledger WHERE node_id = $1 AND sku = $2", node, sku)
        )

    tx = pg.conn.transaction()
    pg.run(tx.start())
    try:
        handle(
            INVENTORY_UPDATES, InventorySnapshot(node_id=node, sku=sku, on_hand=10, as_of=datetime.now(UTC))
        )
        two_a_day = DayCapacity(day=DAY, shipments=2)
        # Three plans made from the same count (nothing planned there yet): two fit the day.
        assert [outcome(handle(PLANS, plan(n, two_a_day))) for n in (1, 2, 3)] == [
            "held",
            "held",
            f"re-decide: {node} has no capacity left on 2025-03-10 (2 shipments)",
        ]
        # The plan sent back holds nothing: neither a slot of the day nor stock.
        assert counted(DAY) == 2
        assert reserved() == 2
        # A cancelled order's shipment, given back before it shipped, frees its slot; a re-planned
        # order's old shipment frees its slot and the new plan takes one.
        handle(PLANS, PlanCancelled(order_id=f"{ns}-ORD-1", sequence=2, reason="customer"))
        assert counted(DAY) == 1
        assert outcome(handle(PLANS, plan(2, two_a_day, version=2))) == "held"
        assert counted(DAY) == 1
        assert outcome(handle(PLANS, plan(3, two_a_day, version=2))) == "held"
        assert counted(DAY) == 2
        assert reserved() == 2
        # The next day is a day of its own.
        assert outcome(handle(PLANS, plan(4, DayCapacity(day=date(2025, 3, 11), shipments=2)))) == "held"
        assert counted(date(2025, 3, 11)) == 1
        # A plan made before shipments carried their capacity counts on its UTC date, unchecked.
        assert outcome(handle(PLANS, plan(5, None))) == "held"
        assert counted(BASE_PLAN.decided_at.date()) == 3
    finally:
        pg.run(tx.rollback())
