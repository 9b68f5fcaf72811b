"""The order path's feasibility cases again, decided by the look-ahead policy (`lookahead.yaml`).

Look-ahead prices only steer which node a plan prefers; these are the cases where no price may
change the outcome: no oversell under a race, `max_shipments`, ship-complete holds, BOPIS at the
pickup store, drop-ship and hazmat rules, closed nodes, stock freed by a cancellation. The prices
are computed again every second from the orders these tests place, so they move while they run.
"""

from __future__ import annotations

import pytest

from tests.harness import LONDON, Pipeline, ids, node, order, pipeline
from tests.test_order_path import (
    test_200_orders_for_50_units_reserve_exactly_50,
    test_a_cancellation_frees_the_stock,
    test_a_closed_node_is_never_chosen,
    test_bopis_is_reserved_at_the_pickup_store,
    test_drop_ship_goes_to_its_vendor_and_hazmat_only_to_a_capable_node,
    test_lines_no_single_node_has_split_into_the_fewest_shipments,
    test_ship_complete_with_no_single_node_able_is_held_for_stock,
)

pytestmark = pytest.mark.integration
PIPELINE_POLICY = ("lookahead.yaml", {"refresh_seconds": 1.0})
__all__ = [
    "pipeline",
    "test_200_orders_for_50_units_reserve_exactly_50",
    "test_a_cancellation_frees_the_stock",
    "test_a_closed_node_is_never_chosen",
    "test_bopis_is_reserved_at_the_pickup_store",
    "test_drop_ship_goes_to_its_vendor_and_hazmat_only_to_a_capable_node",
    "test_lines_no_single_node_has_split_into_the_fewest_shipments",
    "test_ship_complete_with_no_single_node_able_is_held_for_stock",
]


async def test_these_orders_are_decided_by_the_look_ahead_policy(pipeline: Pipeline) -> None:
    n = ids("LA")
    dc, sku = n("DC"), n("S")
    await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 3})
    o = order(n("ORD"), [(sku, 1)], ship_complete=True)
    await pipeline.publish(o)
    await pipeline.out.final_state(o.order_id, "released")
    versions = await pipeline.db.fetch(
        "SELECT plan_json ->> 'policy_version' AS version FROM decide_plans WHERE order_id = $1", o.order_id
    )
    assert [row["version"] for row in versions] == ["lookahead-2"]
