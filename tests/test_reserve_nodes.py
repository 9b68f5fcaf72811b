"""reserve and the network, on PostgreSQL through the stage's own handler: stock at a closed node does
not count for the waiting lines, and a node that opens plans them, also those whose plan was on its
way when it opened (decided without the node, they come back to wait and are planned once more)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import structlog

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import SkuLine
from orchestrator.contract.examples import example
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome, RedecideRequested, Repair
from orchestrator.domain.supply import RELEASE_WAITING
from orchestrator.runtime.stage import Emitted
from orchestrator.stages.common import INVENTORY_UPDATES, NETWORK_UPDATES, PLANS, REROUTES
from orchestrator.stages.reserve import reserve_stage
from tests.test_properties_ledger import Pg, pg

pytestmark = pytest.mark.integration
__all__ = ["pg"]

LOG = structlog.get_logger("tests.reserve_nodes")
BASE_PLAN = example("plan.decided.v1")
assert isinstance(BASE_PLAN, PlanDecided)


def test_a_node_that_opens_plans_the_lines_waiting_for_its_stock_even_those_in_flight(pg: Pg) -> None:
    stage = reserve_stage()
    ns = f"RN-{uuid.uuid4().hex[:6]}"
    node, sku, order_id = f"{ns}-DC", f"{ns}-LAMP", f"{ns}-ORD"
    t0 = datetime.now(UTC)

    def handle(topic: str, data: EventPayload) -> list[Emitted]:
        return pg.handle(stage, topic, data, "test/reserve-nodes")

    def waiting(plan_id: str, attempt: int, repair: Repair | None) -> PlanDecided:
        line = SkuLine(line_id="1", sku=sku, quantity=2)
        order = BASE_PLAN.order.model_copy(
            update={
                "order_id": order_id,
                "lines": (BASE_PLAN.order.lines[0].model_copy(update={"sku": sku, "quantity": 2}),),
            }
        )
        return BASE_PLAN.model_copy(
            update={
                "order_id": order_id,
                "plan_id": plan_id,
                "sequence": 1,
                "order": order,
                "outcome": PlanOutcome.BACKORDER,
                "shipments": (),
                "backordered": (line,),
                "attempt": attempt,
                "repair": repair,
            }
        )

    def requests(emitted: list[Emitted]) -> list[RedecideRequested]:
        return [e.envelope.data for e in emitted if e.topic == REROUTES]  # type: ignore[misc]

    tx = pg.conn.transaction()
    pg.run(tx.start())
    try:
        handle(INVENTORY_UPDATES, InventorySnapshot(node_id=node, sku=sku, on_hand=3, as_of=t0))
        handle(
            NETWORK_UPDATES, NodeStatusChanged(node_id=node, open=False, reason="stock-take", changed_at=t0)
        )
        # Back-ordered while the node is shut: its 3 units are not there for the queue.
        assert requests(handle(PLANS, waiting(f"{order_id}-p1", 0, None))) == []

        # It opens: the waiting line is planned.
        opened = handle(
            NETWORK_UPDATES, NodeStatusChanged(node_id=node, open=True, reason="done", changed_at=t0)
        )
        [asked] = requests(opened)
        assert (
            asked.order_id == order_id and asked.repair is not None and asked.repair.action == RELEASE_WAITING
        )

        # Suppose that plan had been decided by a decide-node that did not see the node open, and the
        # node closes and opens again while it is on its way: nothing is asked twice meanwhile...
        handle(NETWORK_UPDATES, NodeStatusChanged(node_id=node, open=False, reason="x", changed_at=t0))
        assert (
            requests(
                handle(NETWORK_UPDATES, NodeStatusChanged(node_id=node, open=True, reason="y", changed_at=t0))
            )
            == []
        )
        # ...and when its answer puts the line back to wait, it is planned once more, at once.
        answer = waiting(f"{order_id}-p2", 1, asked.repair)
        [again] = requests(handle(PLANS, answer))
        assert again.repair is not None and [x.line_id for x in again.repair.lines] == ["1"]
        # Once: the next answer that leaves it waiting does not go round again.
        assert requests(handle(PLANS, waiting(f"{order_id}-p3", 1, again.repair))) == []
    finally:
        pg.run(tx.rollback())
