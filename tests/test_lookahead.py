"""Sourcing that prices the future: the transportation duals, the look-ahead term in the decision, the
offline comparison, and decide-node's view of the prices on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import asyncpg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.contract.common import Channel, NodeKind, ServiceLevel, StorePickup
from orchestrator.contract.network import NodeUpserted
from orchestrator.contract.pipeline import PlanOutcome
from orchestrator.domain import sourcing
from orchestrator.domain.lookahead import (
    NO_OPPORTUNITY,
    Forecast,
    Region,
    Sale,
    forecast_demand,
    lookahead_prices,
    opportunity_costs,
    region_of,
    sales_of,
    ship_complete_prices,
    shipping_nodes,
    unit_costs,
)
from orchestrator.domain.network import NetworkView, network_from_events
from orchestrator.domain.policy import LookaheadPolicy, Policy, ShipFromStoreRule, load_policy
from orchestrator.infra.ports import free_port
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.settings import Settings
from orchestrator.sim import build_network, order_stream
from orchestrator.sim.costing import BACKORDER_PENALTY_PER_UNIT, order_options, yardstick_policy
from orchestrator.sim.lookahead_sim import compare_lookahead, format_lookahead_table, scarce_stock
from orchestrator.sim.optimum import solve_optimum
from orchestrator.stages.lookahead_view import LookaheadView
from tests.test_sourcing import (
    NOW,
    PLACES,
    STORE_CAPS,
    address,
    assert_every_search_optimal,
    line,
    node,
    order,
    plan_for,
    scenarios,
    service,
    uk_network,
)

LOOKAHEAD_YAML = Path(__file__).resolve().parents[1] / "orchestrator" / "policies" / "lookahead.yaml"


def looking_ahead(base: Policy | None = None, **changes: Any) -> Policy:
    """`base` (the packaged default) with look-ahead on."""
    base = base or load_policy()
    return base.model_copy(update={"lookahead": LookaheadPolicy(enabled=True, **changes)})


def _nodes(*node_ids: str) -> list[NodeUpserted]:
    return [node(node_id, "manchester") for node_id in node_ids]


def _forecast(sku: str, *demand: float) -> Forecast:
    regions = tuple(Region(f"GB:{i}:0", "GB", 50.0 + i, 0.0, "X1 1XX") for i in range(len(demand)))
    return Forecast(regions, MappingProxyType({sku: tuple(demand)}))


# ---------------------------------------------------------------------------
# The duals, on instances small enough to check by hand
# ---------------------------------------------------------------------------

# Node A is next to region 1 (1 a unit) and far from region 2 (5); node B the other way round (4 and 1).
COSTS = np.array([[1.0, 5.0], [4.0, 1.0]])


def test_the_scarce_node_gets_a_price_and_the_node_with_stock_to_spare_none() -> None:
    # Region 2 wants 5, B has 2: 3 more come from A at 5 instead of 1, so a unit fewer at B costs 4.
    # A serves region 1 (5) and 3 of region 2, and keeps 2: one unit fewer there costs nothing.
    prices = opportunity_costs(
        _forecast("SKU-A", 5, 5),
        {("A", "SKU-A"): 10, ("B", "SKU-A"): 2},
        _nodes("A", "B"),
        COSTS,
        unmet_cost=50,
    )
    assert prices == {("B", "SKU-A"): pytest.approx(4.0)}
    # The other way round: B has plenty, A is short for region 1 (whose next best source costs 4).
    prices = opportunity_costs(
        _forecast("SKU-A", 5, 5),
        {("A", "SKU-A"): 2, ("B", "SKU-A"): 10},
        _nodes("A", "B"),
        COSTS,
        unmet_cost=50,
    )
    assert prices == {("A", "SKU-A"): pytest.approx(3.0)}


def test_when_the_stock_cannot_serve_the_forecast_every_unit_is_worth_the_unmet_cost_less_shipping() -> None:
    # 5 units for 10 wanted: every unit serves its own region, and one fewer leaves a unit unmet (50).
    prices = opportunity_costs(
        _forecast("SKU-A", 5, 5),
        {("A", "SKU-A"): 3, ("B", "SKU-A"): 2},
        _nodes("A", "B"),
        COSTS,
        unmet_cost=50,
    )
    assert prices == {("A", "SKU-A"): pytest.approx(49.0), ("B", "SKU-A"): pytest.approx(49.0)}


def test_nothing_is_scarce_when_every_node_could_serve_the_whole_forecast_alone() -> None:
    prices = opportunity_costs(
        _forecast("SKU-A", 5, 5),
        {("A", "SKU-A"): 10, ("B", "SKU-A"): 10},
        _nodes("A", "B"),
        COSTS,
        unmet_cost=50,
    )
    assert prices == {}
    assert (
        opportunity_costs(_forecast("SKU-A", 0, 0), {("A", "SKU-A"): 1}, _nodes("A"), COSTS[:1], unmet_cost=5)
        == {}
    )


def test_a_region_a_node_cannot_reach_is_served_elsewhere_or_not_at_all() -> None:
    # B reaches only region 2 and has 1 unit; A (far from both, 6 a unit) has plenty.
    costs = np.array([[6.0, 6.0], [math.inf, 1.0]])
    prices = opportunity_costs(
        _forecast("SKU-A", 3, 3),
        {("A", "SKU-A"): 20, ("B", "SKU-A"): 1},
        _nodes("A", "B"),
        costs,
        unmet_cost=50,
    )
    assert prices == {("B", "SKU-A"): pytest.approx(5.0)}


def test_skus_are_priced_independently_and_prices_are_never_negative() -> None:
    forecast = Forecast(
        _forecast("x", 1, 1).regions, MappingProxyType({"SKU-A": (5.0, 5.0), "SKU-B": (1.5, 1.5)})
    )
    supply = {("A", "SKU-A"): 10, ("B", "SKU-A"): 2, ("A", "SKU-B"): 1, ("B", "SKU-B"): 1}
    prices = opportunity_costs(forecast, supply, _nodes("A", "B"), COSTS, unmet_cost=50)
    assert prices[("B", "SKU-A")] == pytest.approx(4.0)
    # SKU-B: 2 units for 3 wanted, whatever SKU-A does: each unit fewer is a unit unmet.
    assert prices[("A", "SKU-B")] == prices[("B", "SKU-B")] == pytest.approx(49.0)
    assert all(price > 0 for price in prices.values())
    with pytest.raises(ValueError, match="costs are"):
        opportunity_costs(forecast, supply, _nodes("A"), COSTS, unmet_cost=50)


def test_the_forecast_scales_the_window_to_the_horizon_and_shares_demand_by_region() -> None:
    sales = [
        Sale(53.48, -2.24, "M1 1AA", "GB", "SKU-A", 3),
        Sale(53.40, -2.10, "M1 1AA", "GB", "SKU-B", 1),
        Sale(51.52, -0.10, "EC1A 1BB", "GB", "SKU-A", 4),
    ]
    forecast = forecast_demand(sales, observed_hours=12, horizon_hours=24, cell_degrees=1.0)
    assert [r.region_id for r in forecast.regions] == ["GB:51:-1", "GB:53:-3"]
    london, manchester = forecast.regions
    assert london.postal_code == "EC1A 1BB"
    # The cell is located where its sales went, weighted by units.
    assert manchester.latitude == pytest.approx((53.48 * 3 + 53.40) / 4)
    # SKU-A sold 7 in 12 h: 14 in 24 h, shared as all units were (London 4 of 8, Manchester 4 of 8).
    assert forecast.demand["SKU-A"] == pytest.approx((7.0, 7.0))
    assert forecast.demand["SKU-B"] == pytest.approx((1.0, 1.0))
    assert region_of("GB", -0.5, -0.5, 1.0) == "GB:-1:-1"
    assert forecast_demand([], observed_hours=1, horizon_hours=1, cell_degrees=1).regions == ()
    with pytest.raises(ValueError):
        forecast_demand(sales, observed_hours=0, horizon_hours=24, cell_degrees=1.0)


def test_collected_orders_are_demand_at_their_store() -> None:
    network = uk_network()
    home = order(line("1", "SKU-A", 2), to="london")
    [sale] = sales_of(home, network)
    assert (sale.postal_code, sale.sku, sale.units) == ("EC1A 1BB", "SKU-A", 2)
    collect = order(
        line("1", "SKU-A"), to="london", delivery=StorePickup(kind="bopis", pickup_store_id="STORE-YORK-01")
    )
    [sale] = sales_of(collect, network)
    assert sale.postal_code == PLACES["york"][1]


def test_prices_from_recent_orders_keep_a_regional_nodes_last_units_for_its_region() -> None:
    network = network_from_events(
        [
            node("DC-LONDON", "london"),
            node("DC-GLASGOW", "glasgow"),
            service("royal-mail-48", ServiceLevel.STANDARD, 2, "3.00"),
        ]
    )
    # Glaswegians keep buying SKU-A; London sells a little of it. Glasgow holds 2, London plenty.
    sales = [Sale(55.86, -4.25, "G1 1XQ", "GB", "SKU-A", 1)] * 6 + [
        Sale(51.52, -0.10, "EC1A 1BB", "GB", "SKU-A", 1)
    ]
    prices = lookahead_prices(
        sales,
        {("DC-GLASGOW", "SKU-A"): 2, ("DC-LONDON", "SKU-A"): 50},
        network=network,
        policy=looking_ahead(),
        now=NOW,
        observed_hours=24,
    )
    # A unit fewer in Glasgow is a Glaswegian served from London, 555 km away: the 250-1000 km band's
    # surcharge (2.50) against none.
    assert prices == {("DC-GLASGOW", "SKU-A"): pytest.approx(2.5)}
    nodes = shipping_nodes(network, looking_ahead())
    assert [n.node_id for n in nodes] == ["DC-GLASGOW", "DC-LONDON"]
    costs = unit_costs(
        network,
        nodes,
        forecast_demand(sales, observed_hours=24, horizon_hours=24, cell_degrees=1).regions,
        looking_ahead(),
        NOW,
    )
    assert costs.shape == (2, 2) and np.isfinite(costs).all()


def test_stores_without_ship_from_store_and_closed_nodes_are_not_priced() -> None:
    network = network_from_events(
        [
            node("DC-LONDON", "london"),
            node("DC-SHUT", "leeds", open=False),
            node("STORE-SHIPS", "leeds", NodeKind.STORE, STORE_CAPS),
            node("STORE-PICKUP-ONLY", "york", NodeKind.STORE, STORE_CAPS[1:]),
            service("royal-mail-48", ServiceLevel.STANDARD, 2, "3.00"),
        ]
    )
    assert [n.node_id for n in shipping_nodes(network, looking_ahead())] == ["DC-LONDON", "STORE-SHIPS"]
    no_stores = looking_ahead().model_copy(update={"ship_from_store": ShipFromStoreRule(enabled=False)})
    assert [n.node_id for n in shipping_nodes(network, no_stores)] == ["DC-LONDON"]


# ---------------------------------------------------------------------------
# Protecting ship-complete orders
# ---------------------------------------------------------------------------


def _sold(sku: str, units: int, *, ship_complete: bool = True) -> Sale:
    return Sale(53.48, -2.24, "M1 1AA", "GB", sku, units, ship_complete)


def _protect(
    sales: list[Sale], supply: dict[tuple[str, str], int], **given: Any
) -> dict[tuple[str, str], float]:
    options: dict[str, Any] = {"observed_hours": 24, "horizon_hours": 24, "hold_cost": 10.0, "lines": 3}
    return ship_complete_prices(sales, supply, _nodes("A", "B", "C"), **{**options, **given})


def test_the_only_node_that_can_fill_a_ship_complete_order_keeps_its_units() -> None:
    # Ship-complete orders want X and Y. A holds both: it fills every such order (chance 1). B holds
    # X only, half of the demand: it fills one with chance 0.5 ** 2.
    sales = [_sold("X", 5), _sold("Y", 5)]
    supply = {("A", "X"): 2, ("A", "Y"): 2, ("B", "X"): 10}
    prices = _protect(sales, supply)
    # A's X is needed when B cannot fill (0.75); A's Y always (no one else has Y). B's X never: A
    # fills any order B could. 5 units wanted over the horizon take all of A's 2.
    assert prices == {("A", "X"): pytest.approx(10 * 3 * 0.75), ("A", "Y"): pytest.approx(10 * 3)}
    # A node whose units the ship-complete demand cannot use up is priced for the share it can.
    plenty = _protect(sales, {**supply, ("A", "Y"): 20})
    assert plenty[("A", "Y")] == pytest.approx(10 * 3 * 5 / 20)


def test_only_the_ship_complete_share_of_demand_is_protected() -> None:
    supply = {("A", "X"): 20, ("A", "Y"): 20}
    every_order = _protect([_sold("X", 5), _sold("Y", 5)], supply)
    half = _protect(
        [
            _sold("X", 5),
            _sold("Y", 5),
            _sold("X", 5, ship_complete=False),
            _sold("Y", 5, ship_complete=False),
        ],
        supply,
    )
    # Twice the demand, half of it ship-complete: as many ship-complete units, the same prices.
    assert half == pytest.approx(every_order)
    assert _protect([_sold("X", 5, ship_complete=False)], supply) == {}
    assert _protect([_sold("X", 5)], supply, hold_cost=0.0) == {}
    # A node that ships no parcels (not among the shipping nodes) is left out.
    assert _protect([_sold("X", 5)], {("D", "X"): 1}) == {}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("XYZW"), st.integers(1, 9), st.booleans()), min_size=1, max_size=12),
    st.dictionaries(
        st.tuples(st.sampled_from("ABC"), st.sampled_from("XYZW")), st.integers(0, 30), max_size=12
    ),
    st.integers(2, 6),
)
def test_protection_prices_are_bounded_by_holding_the_whole_order(
    sold: list[tuple[str, int, bool]], supply: dict[tuple[str, str], int], lines: int
) -> None:
    prices = _protect([_sold(sku, units, ship_complete=sc) for sku, units, sc in sold], supply, lines=lines)
    assert all(0 < price <= 10 * lines + 1e-9 for price in prices.values())
    assert all(supply.get(key, 0) > 0 for key in prices)


def test_the_policy_adds_the_protection_to_the_transportation_prices() -> None:
    network = uk_network()
    sales = [
        *sales_of(
            order(line("1", "SKU-A", 3), line("2", "SKU-B", 3), to="leeds", ship_complete=True), network
        )
    ]
    assert all(sale.ship_complete for sale in sales)
    supply = {("DC-MANCHESTER", "SKU-A"): 2, ("DC-MANCHESTER", "SKU-B"): 2, ("DC-LONDON", "SKU-A"): 50}
    options: dict[str, Any] = {"network": network, "now": NOW, "observed_hours": 24}
    plain = lookahead_prices(sales, supply, policy=looking_ahead(), **options)
    protecting = lookahead_prices(
        sales, supply, policy=looking_ahead(ship_complete_hold_cost=10.0), **options
    )
    assert set(protecting) >= set(plain)
    assert (
        protecting[("DC-MANCHESTER", "SKU-B")] >= plain.get(("DC-MANCHESTER", "SKU-B"), 0.0) + 10 * 3 - 1e-6
    )
    assert all(protecting[key] >= price for key, price in plain.items())


# ---------------------------------------------------------------------------
# The look-ahead term in the decision
# ---------------------------------------------------------------------------


def test_no_prices_give_exactly_the_plan_of_today() -> None:
    stock = {("DC-MANCHESTER", "SKU-A"): 5, ("DC-LONDON", "SKU-A"): 5, ("DC-LONDON", "SKU-B"): 2}
    the_order = order(line("1", "SKU-A"), line("2", "SKU-B"), to="london")
    before = plan_for(the_order, stock)
    network = uk_network()
    kwargs: dict[str, Any] = {"network": network, "stock": stock, "capacity_used": {}, "now": NOW}
    assert sourcing.decide(the_order, policy=load_policy(), opportunity={}, **kwargs) == before
    assert sourcing.decide(the_order, policy=looking_ahead(), opportunity=NO_OPPORTUNITY, **kwargs) == before
    # Prices given but the policy's look-ahead off: ignored.
    prices = {("DC-LONDON", "SKU-A"): 100.0}
    assert sourcing.decide(the_order, policy=load_policy(), opportunity=prices, **kwargs) == before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_empty_prices_change_no_plan(scenario: dict[str, Any]) -> None:
    """With no prices, with look-ahead on or off, every plan is the one made without the keyword."""
    inputs: dict[str, Any] = {
        "network": scenario["network"],
        "stock": scenario["stock"],
        "capacity_used": scenario["used"],
        "now": NOW,
        "excluded_nodes": scenario["excluded"],
    }
    before = sourcing.decide(scenario["order"], policy=scenario["policy"], **inputs)
    for the_policy in (scenario["policy"], looking_ahead(scenario["policy"])):
        for empty in ({}, NO_OPPORTUNITY):
            assert (
                sourcing.decide(scenario["order"], policy=the_policy, opportunity=empty, **inputs) == before
            )


def test_a_priced_node_keeps_its_units_and_the_plan_says_so() -> None:
    stock = {("DC-MANCHESTER", "SKU-A"): 1, ("DC-LONDON", "SKU-A"): 5}
    the_order = order(line("1", "SKU-A"), to="manchester")
    myopic = plan_for(the_order, stock)
    assert [s.node_id for s in myopic.shipments] == ["DC-MANCHESTER"]
    prices = {("DC-MANCHESTER", "SKU-A"): 3.2}
    kwargs: dict[str, Any] = {"network": uk_network(), "stock": stock, "capacity_used": {}, "now": NOW}
    plan = sourcing.decide(the_order, policy=looking_ahead(), opportunity=prices, **kwargs)
    assert [s.node_id for s in plan.shipments] == ["DC-LONDON"]
    # total_cost is what the plan costs now: the same as London's plan without any look-ahead.
    without_manchester = plan_for(the_order, {("DC-LONDON", "SKU-A"): 5})
    assert plan.total_cost == without_manchester.total_cost
    assert plan.total_cost > myopic.total_cost
    [said] = [s for s in plan.explanation if s.startswith("Look-ahead")]
    assert said == (
        "Look-ahead: DC-MANCHESTER kept its SKU-A for later orders it serves best (look-ahead cost 3.20 per "
        f"unit there), so it ships from DC-LONDON instead (0.00 there); the cheapest plan for this order "
        f"alone would have cost {myopic.total_cost:.2f}, this one {plan.total_cost:.2f}."
    )
    # The weight scales the prices: at a tenth, the price no longer outweighs the longer trip.
    light = sourcing.decide(the_order, policy=looking_ahead(weight=0.1), opportunity=prices, **kwargs)
    assert [s.node_id for s in light.shipments] == ["DC-MANCHESTER"]
    assert not any(s.startswith("Look-ahead") for s in light.explanation)


def test_the_greedy_search_weighs_the_prices_too() -> None:
    stock = {("DC-MANCHESTER", "SKU-A"): 1, ("DC-LONDON", "SKU-A"): 5}
    the_order = order(line("1", "SKU-A"), to="manchester")
    prices = {("DC-MANCHESTER", "SKU-A"): 3.2}
    plan = sourcing.decide(
        the_order,
        network=uk_network(),
        stock=stock,
        capacity_used={},
        policy=looking_ahead(),
        now=NOW,
        opportunity=prices,
        _force_heuristic=True,
    )
    assert [s.node_id for s in plan.shipments] == ["DC-LONDON"]


def test_a_split_line_takes_the_unpriced_units_first() -> None:
    # No node has 4: the line is split, and of two nodes holding 2 each the priced one goes last.
    stock = {("DC-MANCHESTER", "SKU-A"): 2, ("DC-LONDON", "SKU-A"): 2, ("STORE-LEEDS-01", "SKU-A"): 2}
    the_order = order(line("1", "SKU-A", 4), to="leeds")
    kwargs: dict[str, Any] = {"network": uk_network(), "stock": stock, "capacity_used": {}, "now": NOW}
    myopic = sourcing.decide(the_order, policy=load_policy(), **kwargs)
    used = {s.node_id for s in myopic.shipments}
    priced = sorted(used)[0]
    plan = sourcing.decide(the_order, policy=looking_ahead(), opportunity={(priced, "SKU-A"): 30.0}, **kwargs)
    assert priced not in {s.node_id for s in plan.shipments}
    assert sum(s.lines[0].quantity for s in plan.shipments) == 4


PRICES = st.sampled_from((0.0, 0.0, 0.0, 0.4, 2.0, 7.5, 40.0))


@st.composite
def priced_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario of the sourcing properties, with look-ahead on and random prices."""
    scenario = draw(scenarios())
    network: NetworkView = scenario["network"]
    skus = sorted({ln.sku for ln in scenario["order"].lines})
    scenario["opportunity"] = {(n, sku): draw(PRICES) for n in sorted(network.nodes) for sku in skus}
    scenario["policy"] = looking_ahead(scenario["policy"], weight=draw(st.sampled_from((0.5, 1.0, 3.0))))
    return scenario


def priced_run(scenario: dict[str, Any], heuristic: bool = False, decide_with: Any = None) -> Any:
    return (decide_with or sourcing.decide)(
        scenario["order"],
        network=scenario["network"],
        stock=scenario["stock"],
        capacity_used=scenario["used"],
        policy=scenario["policy"],
        now=NOW,
        excluded_nodes=scenario["excluded"],
        opportunity=scenario["opportunity"],
        _force_heuristic=heuristic,
    )


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(priced_scenarios(), st.booleans())
def test_look_ahead_plans_stay_feasible(scenario: dict[str, Any], heuristic: bool) -> None:
    """Whatever the prices: no node gives more than its stock, max_shipments and ship-complete hold,
    every unit is planned or waits, and the plan costs what its shipments cost."""
    plan = priced_run(scenario, heuristic)
    the_order = scenario["order"]
    network: NetworkView = scenario["network"]
    taken: Counter[tuple[str, str]] = Counter()
    for shipment in plan.shipments:
        assert network.nodes[shipment.node_id].open
        assert shipment.node_id not in scenario["excluded"]
        for sku_line in shipment.lines:
            taken[(shipment.node_id, sku_line.sku)] += sku_line.quantity
    for key, units in taken.items():
        assert units <= scenario["stock"].get(key, 0), key
    limit = 1 if the_order.ship_complete else scenario["policy"].max_shipments
    assert len(plan.shipments) <= limit
    assert len({s.node_id for s in plan.shipments}) == len(plan.shipments)
    if the_order.ship_complete:
        assert plan.outcome in (PlanOutcome.SHIP, PlanOutcome.HOLD_FOR_STOCK, PlanOutcome.UNFULFILLABLE)
    if plan.outcome is not PlanOutcome.UNFULFILLABLE:
        planned: Counter[str] = Counter()
        for shipment in plan.shipments:
            for sku_line in shipment.lines:
                planned[sku_line.line_id] += sku_line.quantity
        for backordered in plan.backordered:
            planned[backordered.line_id] += backordered.quantity
        assert planned == Counter({ln.line_id: ln.quantity for ln in the_order.lines})
    # total_cost is the real cost of the shipments, never the look-ahead term.
    shipments_cost = sum(s.cost for s in plan.shipments)
    splits = scenario["policy"].split_cost * max(0, len(plan.shipments) - 1)
    assert plan.total_cost == pytest.approx(shipments_cost + splits, abs=1e-3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_scenarios())
def test_the_exact_search_finds_the_optimum_with_prices(scenario: dict[str, Any]) -> None:
    """Branch and bound with the look-ahead term (its bound included) against brute force."""
    assert_every_search_optimal(lambda decide_with: priced_run(scenario, decide_with=decide_with))


@st.composite
def searches(draw: st.DrawFn) -> dict[str, Any]:
    """Orders that give the branch and bound work: several lines, several DCs holding them, prices on
    most units, few shipments allowed."""
    places = draw(st.lists(st.sampled_from(sorted(PLACES)), min_size=2, max_size=4, unique=True))
    node_ids = [f"DC-{place.upper()}" for place in places]
    network = network_from_events(
        [
            *(node(node_id, place) for node_id, place in zip(node_ids, places, strict=True)),
            service("royal-mail-48", ServiceLevel.STANDARD, 2, "3.00"),
            service("evri-ground", ServiceLevel.GROUND, 3, "2.50", "0.50"),
        ]
    )
    skus = ("SKU-A", "SKU-B", "SKU-C", "SKU-D")
    lines = [
        line(
            str(i + 1),
            draw(st.sampled_from(skus)),
            draw(st.integers(1, 3)),
            weight=draw(st.sampled_from(("0.5", "4.000"))),
        )
        for i in range(draw(st.integers(2, 5)))
    ]
    return {
        "order": order(*lines, to=draw(st.sampled_from(sorted(PLACES)))),
        "network": network,
        "stock": {(n, sku): draw(st.sampled_from((0, 2, 3, 6))) for n in node_ids for sku in skus},
        "used": {},
        "excluded": frozenset(),
        "opportunity": {
            (n, sku): draw(st.sampled_from((0.0, 0.3, 1.0, 2.5, 6.0))) for n in node_ids for sku in skus
        },
        "policy": looking_ahead(
            load_policy().model_copy(
                update={
                    "max_shipments": draw(st.sampled_from((1, 2, 2, 3))),
                    "backorder_policy": draw(st.sampled_from(("ship_available", "hold_for_stock"))),
                }
            )
        ),
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(searches())
def test_the_exact_search_with_prices_finds_the_optimum_of_busy_searches(scenario: dict[str, Any]) -> None:
    test_the_exact_search_finds_the_optimum_with_prices.hypothesis.inner_test(scenario)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(priced_scenarios())
def test_look_ahead_plans_are_deterministic(scenario: dict[str, Any]) -> None:
    assert priced_run(scenario) == priced_run(scenario)


def test_the_packaged_policies_differ_only_in_the_look_ahead() -> None:
    default, ahead = load_policy(), load_policy(LOOKAHEAD_YAML)
    assert not default.lookahead.enabled and ahead.lookahead.enabled
    assert ahead.version != default.version
    assert ahead.model_copy(update={"version": default.version, "lookahead": default.lookahead}) == default


# ---------------------------------------------------------------------------
# The offline comparison
# ---------------------------------------------------------------------------


def test_scarce_stock_covers_each_skus_demand_in_the_seeded_proportions() -> None:
    network = build_network(seed=2, stores=8, skus=30)
    orders = order_stream(network, seed=2, count=80)
    stock = scarce_stock(network, orders, 1.5)
    demand: Counter[str] = Counter()
    for o in orders:
        for ln in o.lines:
            demand[ln.sku] += ln.quantity
    held: Counter[str] = Counter()
    for (_, sku), units in stock.items():
        held[sku] += units
    seeded = {sku for (_, sku), units in network.stock().items() if units > 0}
    for sku in seeded:
        assert held[sku] == round(1.5 * demand[sku])
    assert set(stock) <= {key for key, units in network.stock().items() if units > 0}


def test_the_look_ahead_comparison_reports_every_row_and_plans_feasibly(tmp_path: Path) -> None:
    network = build_network(seed=4, stores=10, skus=40)
    orders = order_stream(network, seed=4, count=50, hours=12)
    ahead = looking_ahead(refresh_seconds=1800, window_hours=6, horizon_hours=6).model_copy(
        update={"version": "ahead-test"}
    )
    report = compare_lookahead(network, orders, load_policy(), ahead, seed=4, cover=1.2, time_limit_s=15)
    # Both strategies planned every order without overselling (the run stops loudly otherwise).
    assert report.myopic.result.orders == report.lookahead.result.orders == 50
    assert report.lookahead.refreshes >= 2
    data = report.to_json()
    strategies: list[dict[str, object]] = data["strategies"]  # type: ignore[assignment]
    assert [s["strategy"] for s in strategies] == ["default-2", "ahead-test"]
    assert {"clairvoyant", "gap_closed_vs_lower_bound", "gap_closed_vs_best_plan"} <= set(data)
    best = report.clairvoyant
    # The hindsight optimum (their rules and max_shipments kept, capacity left out) is never worse
    # than either strategy.
    for strategy in (report.myopic, report.lookahead):
        assert best.lower_bound <= strategy.result.objective + 1e-6 * max(1.0, strategy.result.objective)
    # The gap's parts add up: units held at the yardstick's price, and the rest.
    parts = report.gap_parts()
    assert parts["held"] + parts["rest"] == pytest.approx(
        report.myopic.result.objective - best.objective, abs=0.02
    )
    saved = report.myopic.result.objective - report.lookahead.result.objective
    assert parts["held_saved"] + parts["rest_saved"] == pytest.approx(saved, abs=0.02)
    assert data["gap_parts"] == parts and data["clairvoyant"]["backordered_units"] == best.backordered_units
    table = format_lookahead_table(report)
    assert "units held" in table
    for row in ("| myopic (", "| look-ahead (", "| clairvoyant (", "Gap closed"):
        assert row in table
    json.dumps(data)
    with pytest.raises(ValueError, match="look-ahead on"):
        compare_lookahead(network, orders, ahead, ahead, seed=4)


def test_the_clairvoyant_keeps_the_policies_max_shipments_and_channel_rules() -> None:
    network = uk_network()
    policy = load_policy()
    # Three lines, each stocked at one node only: all three ship only as three shipments.
    scattered = order(line("1", "SKU-A"), line("2", "SKU-B"), line("3", "SKU-C"))
    stock = {("DC-MANCHESTER", "SKU-A"): 1, ("DC-LONDON", "SKU-B"): 1, ("STORE-LEEDS-01", "SKU-C"): 1}
    stream = [order_options(scattered, network=network, policy=yardstick_policy(policy), now=NOW)]
    free = solve_optimum(stream, stock)
    capped = solve_optimum(stream, stock, max_shipments=2)
    assert free.objective < BACKORDER_PENALTY_PER_UNIT
    # Two shipments at most: one line waits, and its unit is charged as back-ordered.
    assert capped.objective > BACKORDER_PENALTY_PER_UNIT
    assert capped.objective - BACKORDER_PENALTY_PER_UNIT < free.objective
    assert (free.backordered_units, capped.backordered_units) == (0, 1)
    # Marketplace orders never ship from stores under the default policy; the yardstick alone would.
    market = order(line("1", "SKU-C"), channel=Channel.MARKETPLACE)
    physical = order_options(market, network=network, policy=yardstick_policy(policy), now=NOW)
    ruled = order_options(market, network=network, policy=policy, now=NOW, rules=True)
    assert "STORE-LEEDS-01" in physical.nodes and "STORE-LEEDS-01" not in ruled.nodes
    allowed = [{node_id: set(c.serves) for node_id, c in ruled.nodes.items()}]
    assert solve_optimum([physical], stock).objective < BACKORDER_PENALTY_PER_UNIT
    ruled_out = solve_optimum([physical], stock, allowed=allowed)
    assert ruled_out.objective == BACKORDER_PENALTY_PER_UNIT and ruled_out.backordered_units == 1
    with pytest.raises(ValueError, match="allowed has"):
        solve_optimum([physical], stock, allowed=[])


def test_cli_simulate_lookahead_writes_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert (
        main(
            [
                "simulate",
                "--orders",
                "30",
                "--seed",
                "6",
                "--out",
                str(out),
                "--lookahead",
                "--optimum-seconds",
                "10",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| look-ahead (lookahead-2)" in printed and "Gap closed" in printed
    data = json.loads((out / "lookahead.json").read_text())
    assert data["orders"] == 30 and data["stock_cover"] == 1.5
    # Seed 6's 30 orders at the default 6% hold two ship-complete orders.
    assert data["ship_complete_orders"] == 2 and "30 orders (2 ship complete)" in printed
    assert [s["strategy"] for s in data["strategies"]] == ["default-2", "lookahead-2"]
    # The first policy must be the myopic one.
    assert (
        main(["simulate", "--orders", "5", "--out", str(out), "--policy", str(LOOKAHEAD_YAML), "--lookahead"])
        == 2
    )


@pytest.mark.parametrize(("share", "complete"), [("0", 0), ("1", 20)])
def test_cli_simulate_sets_the_share_of_ship_complete_orders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], share: str, complete: int
) -> None:
    out = tmp_path / "results"
    argv = ["simulate", "--orders", "20", "--seed", "3", "--out", str(out), "--lookahead"]
    assert main([*argv, "--optimum-seconds", "5", "--ship-complete-rate", share]) == 0
    data = json.loads((out / "lookahead.json").read_text())
    assert data["orders"] == 20 and data["ship_complete_orders"] == complete
    assert f"20 orders ({complete} ship complete)" in capsys.readouterr().out


def test_the_share_of_ship_complete_orders_changes_only_their_flags() -> None:
    network = build_network(seed=5, stores=10, skus=40)
    usual = order_stream(network, seed=5, count=60)
    none = order_stream(network, seed=5, count=60, ship_complete_rate=0.0)
    every = order_stream(network, seed=5, count=60, ship_complete_rate=1.0)
    assert any(o.ship_complete for o in usual)
    assert not any(o.ship_complete for o in none) and all(o.ship_complete for o in every)
    # The same orders otherwise: a regime compares with the default stream order by order.
    for a, b, c in zip(usual, none, every, strict=True):
        assert a.model_copy(update={"ship_complete": False}) == b
        assert a.model_copy(update={"ship_complete": True}) == c
    with pytest.raises(ValueError, match="between 0 and 1"):
        order_stream(network, seed=5, count=1, ship_complete_rate=1.5)


def test_cli_simulate_refuses_a_share_outside_0_to_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--orders", "5", "--out", str(tmp_path), "--ship-complete-rate", "1.5"]
    assert main(argv) == 2
    assert "--ship-complete-rate is a share of the orders, between 0 and 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# decide-node's view, on the real PostgreSQL
# ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_the_view_prices_recent_orders_against_the_ledger(db: asyncpg.Connection) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    glasgow, london, sku = f"DC-GLA-{tag}", f"DC-LON-{tag}", f"SKU-LA-{tag}"
    network = network_from_events(
        [
            node(glasgow, "glasgow"),
            node(london, "london"),
            service("royal-mail-48", ServiceLevel.STANDARD, 2, "3.00"),
        ]
    )
    # Long ago, so that no other test's orders fall in the window the view reads.
    now = datetime(2020, 6, 1, 12, 0, tzinfo=UTC)
    placed = [("glasgow", 6, "validated"), ("london", 1, "validated"), ("london", 40, "held")]
    order_ids = []
    for i, (place, units, status) in enumerate(placed):
        the_order = order(line("1", sku, units), to=place, order_id=f"ORD-LA-{tag}-{i}")
        order_ids.append(the_order.order_id)
        await db.execute(
            "INSERT INTO validate_orders (order_id, sequence, status, order_json, updated_at)"
            " VALUES ($1, 1, $2, $3, $4)",
            the_order.order_id,
            status,
            the_order.model_dump_json(),
            now - timedelta(hours=2),
        )
    await db.executemany(
        "INSERT INTO reserve_ledger (node_id, sku, on_hand, reserved, safety_stock) VALUES ($1, $2, $3, $4, $5)",
        [(glasgow, sku, 5, 2, 1), (london, sku, 60, 0, 0)],
    )
    try:
        view = LookaheadView(looking_ahead(window_hours=24, horizon_hours=24), lambda: network)
        metrics = RuntimeMetrics()
        view.bind_metrics(metrics)
        assert not view.ready
        prices = await view.refresh(db, now=now)
        assert view.ready and view.state is prices
        # Glasgow can promise 5 - 2 - 1 = 2 for 6 Glaswegian units a day: its units are scarce; London's
        # are not. The held order is no demand.
        assert view.lines_seen == 2
        assert prices == {(glasgow, sku): pytest.approx(2.5)}
        # What an SRE sees of it: one policy looks ahead, prices from now, 2 lines, 1 priced position.
        sample = metrics.registry.get_sample_value
        assert sample("orchestrator_lookahead_policies") == 1
        assert sample("orchestrator_lookahead_refreshes_total", {"outcome": "ok"}) == 1
        assert sample("orchestrator_lookahead_refresh_seconds_count") == 1
        assert sample("orchestrator_lookahead_prices_computed_timestamp_seconds") == now.timestamp()
        assert sample("orchestrator_lookahead_window_lines") == 2
        assert sample("orchestrator_lookahead_priced_positions") == 1
        # A day later the window is empty: no prices.
        assert await view.refresh(db, now=now + timedelta(days=2)) == {}
    finally:
        await db.execute("DELETE FROM validate_orders WHERE order_id = ANY($1::text[])", order_ids)
        await db.execute("DELETE FROM reserve_ledger WHERE node_id = ANY($1::text[])", [glasgow, london])


@pytest.mark.integration
async def test_the_view_knows_which_recent_orders_ship_complete(db: asyncpg.Connection) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    glasgow, london, x, y = f"DC-GLA-{tag}", f"DC-LON-{tag}", f"SKU-X-{tag}", f"SKU-Y-{tag}"
    network = network_from_events(
        [
            node(glasgow, "glasgow"),
            node(london, "london"),
            service("royal-mail-48", ServiceLevel.STANDARD, 2, "3.00"),
        ]
    )
    now = datetime(2020, 7, 1, 12, 0, tzinfo=UTC)
    complete = order(
        line("1", x, 2), line("2", y, 2), to="glasgow", ship_complete=True, order_id=f"ORD-SC-{tag}"
    )
    await db.execute(
        "INSERT INTO validate_orders (order_id, sequence, status, order_json, updated_at)"
        " VALUES ($1, 1, 'validated', $2, $3)",
        complete.order_id,
        complete.model_dump_json(),
        now - timedelta(hours=1),
    )
    # Glasgow has one of each: only it can fill an order for both. London has plenty of X alone.
    await db.executemany(
        "INSERT INTO reserve_ledger (node_id, sku, on_hand, reserved, safety_stock) VALUES ($1, $2, $3, 0, 0)",
        [(glasgow, x, 1), (glasgow, y, 1), (london, x, 60)],
    )
    try:
        plain = await LookaheadView(looking_ahead(), lambda: network).refresh(db, now=now)
        protecting = LookaheadView(looking_ahead(ship_complete_hold_cost=10.0), lambda: network)
        prices = await protecting.refresh(db, now=now)
        extra = {key: prices[key] - plain.get(key, 0.0) for key in prices}
        # Glasgow's Y: no one else has it (10 x 3 lines); its X: London fills with chance 0.5 ** 2.
        assert extra == {(glasgow, x): pytest.approx(22.5), (glasgow, y): pytest.approx(30.0)}
    finally:
        await db.execute("DELETE FROM validate_orders WHERE order_id = $1", complete.order_id)
        await db.execute("DELETE FROM reserve_ledger WHERE node_id = ANY($1::text[])", [glasgow, london])


@pytest.mark.integration
async def test_the_view_refreshes_in_the_background_and_follows_the_policies_in_use(
    database_url: str, db: asyncpg.Connection
) -> None:
    in_use: list[Policy | None] = [load_policy(), None]  # (active, shadow), as decide-node has them
    view = LookaheadView(lambda: in_use, lambda: uk_network())
    # Look-ahead off everywhere: ready at once, no prices, nothing to read.
    assert view.ready and view.state == {} and view.prices_for(in_use[0]) == {}  # type: ignore[arg-type]
    stop = asyncio.Event()
    await view.start(Settings(database_url=database_url), stop)
    try:
        await asyncio.sleep(0.1)
        assert view.refreshed_at is None
        # A shadow with look-ahead on is deployed: it is priced (the active policy still is not).
        shadow = looking_ahead(refresh_seconds=0.2)
        in_use[1] = shadow
        await view.refresh(db)
        assert view.refreshed_at is not None
        assert view.state == {} and view.prices_for(load_policy()) == {}
        assert isinstance(view.prices_for(shadow), MappingProxyType)
    finally:
        stop.set()
        await view.close()
    # The background task prices on its own once a policy with look-ahead on is in use.
    ahead = LookaheadView(looking_ahead(refresh_seconds=0.2), lambda: uk_network())
    assert not ahead.ready
    stop = asyncio.Event()
    await ahead.start(Settings(database_url=database_url), stop)
    try:
        for _ in range(100):
            if ahead.ready:
                break
            await asyncio.sleep(0.05)
        assert ahead.ready and ahead.refreshed_at is not None
    finally:
        stop.set()
        await ahead.close()
    # With the database away it keeps trying, counts each failure, and is not ready without prices.
    away = LookaheadView(looking_ahead(refresh_seconds=0.2), lambda: uk_network())
    metrics = RuntimeMetrics()
    away.bind_metrics(metrics)
    stop = asyncio.Event()
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    await away.start(Settings(database_url=nowhere), stop)
    try:
        for _ in range(100):
            if metrics.registry.get_sample_value(
                "orchestrator_lookahead_refreshes_total", {"outcome": "failed"}
            ):
                break
            await asyncio.sleep(0.05)
        assert (
            metrics.registry.get_sample_value("orchestrator_lookahead_refreshes_total", {"outcome": "failed"})
            == 1
        )
        assert not away.ready and away.refreshed_at is None
    finally:
        stop.set()
        await away.close()


def test_a_row_without_a_known_place_is_skipped() -> None:
    from orchestrator.stages.lookahead_view import sale_of_row

    network = uk_network()
    bopis = {
        "delivery": json.dumps({"kind": "bopis", "pickup_store_id": "STORE-YORK-01"}),
        "ship_to": None,
        "sku": "SKU-A",
        "units": 2,
    }
    sale = sale_of_row(bopis, network)
    assert sale is not None and sale.postal_code == address("york").postal_code
    assert (
        sale_of_row({"delivery": {"kind": "standard"}, "ship_to": None, "sku": "A", "units": 1}, network)
        is None
    )
    broken = {"delivery": {"kind": "standard"}, "ship_to": {"latitude": "x"}, "sku": "A", "units": 1}
    assert sale_of_row(broken, network) is None
