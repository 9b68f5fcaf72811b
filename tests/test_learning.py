"""Routing that learns, the pure parts: measures, risk, the circuit breaker, and the decision using them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract.pipeline import PlanOutcome
from orchestrator.domain.learning import (
    Breaker,
    BreakerState,
    LearningPolicy,
    Measures,
    Override,
    evidence,
    next_breaker,
    risk_cost,
    routing_risk,
)
from orchestrator.domain.policy import load_policy
from orchestrator.domain.sourcing import BREAKER_OPEN, decide
from orchestrator.sim import build_network, order_stream

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = LearningPolicy(min_samples=10, trip_rate=0.3, trip_ratio=3.0, cooldown_seconds=600)


def node(picked: int, short: int, ack: int | None = None, rejected: int = 0) -> Measures:
    taken = picked + short if ack is None else ack
    return Measures("node:DC-1", acknowledged=taken, rejected=rejected, picked=picked, short_picked=short)


def test_rates_read_as_the_operations_team_counts_them() -> None:
    m = Measures(
        "node:DC-1", acknowledged=45, rejected=5, picked=40, short_picked=5, shipped=40, shipped_late=4
    )
    assert m.rejection_rate == 0.1 and m.acceptance_rate == 0.9
    assert round(m.short_pick_rate, 3) == 0.111 and m.on_time_ship_rate == 0.9
    s = Measures("service:ground", delivered=20, delivered_late=5, lateness_days=10, lost=1)
    assert s.on_time_delivery_rate == 0.75 and s.mean_lateness_days == 2.0
    assert round(s.failure_rate, 3) == round(6 / 21, 3)
    assert m.failure_rate == (5 + 5) / 50  # refused or short, of the 50 work orders it was given
    assert evidence(node(88, 12), 24) == (
        "node DC-1: 12% short picks, 0% rejections, 0% shipped on time in the last 24 h (100 work orders)"
    )


def test_risk_is_believed_only_with_enough_outcomes_and_grows_with_failures() -> None:
    assert risk_cost(node(4, 4), POLICY) == 0.0  # 8 work orders < 10
    low, high = risk_cost(node(95, 5), POLICY), risk_cost(node(60, 40), POLICY)
    assert 0 < low < high
    assert risk_cost(node(60, 40), POLICY.model_copy(update={"enabled": False})) == 0.0


@settings(max_examples=200, deadline=None)
@given(picked=st.integers(0, 200), short=st.integers(0, 200), extra=st.integers(1, 50))
def test_more_failures_never_lower_the_risk(picked: int, short: int, extra: int) -> None:
    assert risk_cost(node(picked, short), POLICY) <= risk_cost(node(picked, short + extra), POLICY) + 1e-9
    assert 0.0 <= node(picked, short).failure_rate <= 1.0


def test_a_surge_far_above_its_normal_trips_the_breaker_and_a_normal_rate_does_not() -> None:
    closed = Breaker("node:DC-1")
    surge = next_breaker(closed, {"short_picked": 1}, node(6, 6), node(190, 10), T0, POLICY)
    assert surge.state is BreakerState.OPEN and surge.until == T0 + timedelta(seconds=600)
    assert "failures jumped to" in surge.reason and "its normal is" in surge.reason
    # A node that always fails this much is expensive (risk), not broken: its normal is as bad.
    usual = next_breaker(closed, {"short_picked": 1}, node(6, 6), node(100, 100), T0, POLICY)
    assert usual.state is BreakerState.CLOSED
    # Too few recent work orders to judge.
    assert next_breaker(closed, {"short_picked": 1}, node(2, 2), node(190, 10), T0, POLICY) == closed


def test_after_the_cool_down_one_probe_decides() -> None:
    tripped = Breaker("node:DC-1", BreakerState.OPEN, since=T0, until=T0 + timedelta(seconds=600), reason="x")
    assert not tripped.routable(T0 + timedelta(seconds=10))
    later = T0 + timedelta(seconds=601)
    assert tripped.effective(later) is BreakerState.HALF_OPEN and tripped.routable(later)
    ok = next_breaker(tripped, {"picked": 1}, node(6, 6), node(190, 10), later, POLICY)
    assert ok.state is BreakerState.CLOSED and ok.reason == "the probe succeeded"
    bad = next_breaker(tripped, {"short_picked": 1}, node(6, 6), node(190, 10), later, POLICY)
    assert bad.state is BreakerState.OPEN and bad.until == later + timedelta(seconds=600)


def test_an_operator_override_wins_and_clearing_it_returns_to_the_measures() -> None:
    forced = Breaker("node:DC-1", override=Override.OPEN, override_reason="stock count")
    assert not forced.routable(T0)
    kept = Breaker("node:DC-1", BreakerState.OPEN, until=T0 + timedelta(hours=1), override=Override.CLOSED)
    assert kept.routable(T0)
    risk = routing_risk({}, {"node:DC-1": forced}, T0, POLICY)
    assert risk.closed_nodes == {"DC-1": "out of routing: operator override: stock count"}


NETWORK = build_network(seed=5, stores=10, skus=40)
ORDERS = order_stream(NETWORK, seed=5, count=40)
DEFAULT = load_policy()
NOW = ORDERS[0].placed_at


def _plan(order, risk=None):  # type: ignore[no-untyped-def]
    kwargs = {} if risk is None else {"risk": risk}
    return decide(
        order,
        network=NETWORK.view(),
        stock=NETWORK.stock(),
        capacity_used={},
        policy=DEFAULT,
        now=NOW,
        **kwargs,
    )


def test_an_open_breaker_keeps_every_plan_off_the_node_with_the_reason() -> None:
    shipped = [o for o in ORDERS if _plan(o).outcome is PlanOutcome.SHIP]
    busiest = max(
        {s.node_id for o in shipped for s in _plan(o).shipments},
        key=lambda nid: sum(1 for o in shipped for s in _plan(o).shipments if s.node_id == nid),
    )
    breaker = Breaker(f"node:{busiest}", BreakerState.OPEN, until=NOW + timedelta(hours=1), reason="surge")
    risk = routing_risk({}, {breaker.subject: breaker}, NOW, POLICY)
    for o in shipped:
        plan = _plan(o, risk)
        assert busiest not in {s.node_id for s in plan.shipments}
        verdict = next(c for c in plan.candidates if c.node_id == busiest)
        assert BREAKER_OPEN in {r.code for r in verdict.reasons}


def test_a_risky_node_loses_work_it_would_otherwise_win() -> None:
    o = next(o for o in ORDERS if _plan(o).outcome is PlanOutcome.SHIP and len(_plan(o).shipments) == 1)
    chosen = _plan(o).shipments[0].node_id
    bad = Measures(f"node:{chosen}", acknowledged=50, picked=25, short_picked=25)
    risk = routing_risk({bad.subject: bad}, {}, NOW, POLICY.model_copy(update={"node_risk_weight": 500.0}))
    moved = _plan(o, risk)
    assert moved.shipments and chosen not in {s.node_id for s in moved.shipments}
    assert risk.evidence[bad.subject].startswith(f"node {chosen}: 50% short picks")


def test_simulate_shows_the_learning_policy_walking_into_fewer_failures_than_the_static_one() -> None:
    from orchestrator.sim.learning_sim import busiest_dc, compare_learning

    network = build_network(seed=7)
    orders = order_stream(network, seed=7, count=300)
    failing = busiest_dc(network, orders, DEFAULT)
    static, learning = compare_learning(
        network, orders, DEFAULT, failing_node=failing, failure_rate=0.4, seed=7
    )
    assert static.name.startswith("static") and learning.name == "learning"
    assert static.orders == learning.orders == 300
    assert learning.to_failing_node < static.to_failing_node * 0.6
    assert learning.short_picks < static.short_picks
    # Avoiding the node costs a little more shipping, not a lot.
    assert static.shipping_cost <= learning.shipping_cost <= static.shipping_cost * 1.05
    again = compare_learning(network, orders, DEFAULT, failing_node=failing, failure_rate=0.4, seed=7)
    assert [r.to_json() for r in again] == [static.to_json(), learning.to_json()]


def test_the_simulate_command_reports_learning_against_static(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    assert (
        main(["simulate", "--orders", "60", "--seed", "3", "--failing-node", "auto", "--out", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "Learning vs static:" in out and "| learning |" in out and "| static (no learning) |" in out
    report = json.loads((tmp_path / "learning.json").read_text())
    assert [r["strategy"] for r in report["runs"]] == ["static (no learning)", "learning"]
    assert main(["simulate", "--orders", "5", "--failing-node", "NOPE", "--out", str(tmp_path)]) == 2
