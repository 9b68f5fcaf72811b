"""Shadow policies, the pure part: the deployment folded from the record of changes (deploy,
promote, rollback), both plans of a decision measured alike, and the report over a window."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
import structlog
import yaml

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.pipeline import OrderValidated, PlanDecided
from orchestrator.domain.policy import Policy, parse_policy
from orchestrator.domain.shadow import (
    Deployment,
    DeploymentError,
    PolicyAction,
    PolicyChange,
    ShadowDecision,
    capacity_breaches,
    compare,
    describe,
    fold_changes,
    format_report,
    plan_change,
    plans_differ,
    promise_hit,
    shadow_report,
)
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext
from orchestrator.stages.policy_store import PolicyView
from tests.test_sourcing import NOW, line, order, plan_for, policy, uk_network

# ------------------------------------------------------------------------------------ deployment


def _yaml(p: Policy) -> str:
    return yaml.safe_dump(p.model_dump(mode="json"))


def _record(
    changes: list[PolicyChange], state: Deployment, action: PolicyAction, p: Policy | None = None
) -> Deployment:
    """Plan the change on `state`, append it as the database would, and fold it."""
    new = plan_change(state, action, policy=p, policy_yaml=_yaml(p) if p else None, history=changes)
    change = PolicyChange(
        id=len(changes) + 1,
        at=NOW + timedelta(minutes=len(changes)),
        who="alice",
        action=new.action,
        role=new.role,
        version=new.version,
        policy_yaml=new.policy_yaml,
        previous_version=new.previous_version,
    )
    changes.append(change)
    after = state.apply(change)
    assert after == fold_changes(changes), "folding the whole record gives the same state"
    return after


def test_a_shadow_is_promoted_and_rolled_back_to_the_policy_file() -> None:
    changes: list[PolicyChange] = []
    candidate = policy(version="candidate-1")
    state = _record(changes, Deployment(), PolicyAction.DEPLOY_SHADOW, candidate)
    assert state.active is None and state.shadow is not None and state.shadow.version == "candidate-1"
    assert parse_policy(state.shadow.policy_yaml, "x") == candidate, "the YAML recorded is the policy"

    state = _record(changes, state, PolicyAction.PROMOTE)
    assert state.active is not None and state.active.version == "candidate-1"
    assert state.shadow is None
    assert state.earlier == (None,), "the policy file is what a rollback returns to"
    assert changes[-1].previous_version is None and changes[-1].role == "active"

    state = _record(changes, state, PolicyAction.ROLLBACK)
    assert state.active is None and state.earlier == ()
    assert changes[-1].version is None and changes[-1].previous_version == "candidate-1"


def test_rollbacks_walk_back_through_every_promotion() -> None:
    changes: list[PolicyChange] = []
    state = Deployment()
    for version in ("v1", "v2", "v3"):
        state = _record(changes, state, PolicyAction.DEPLOY_SHADOW, policy(version=version))
        state = _record(changes, state, PolicyAction.PROMOTE)
    assert state.active is not None and state.active.version == "v3"
    state = _record(changes, state, PolicyAction.ROLLBACK)
    assert state.active is not None and state.active.version == "v2"
    assert changes[-1].version == "v2" and changes[-1].previous_version == "v3"
    state = _record(changes, state, PolicyAction.ROLLBACK)
    assert state.active is not None and state.active.version == "v1"
    state = _record(changes, state, PolicyAction.ROLLBACK)
    assert state.active is None
    with pytest.raises(DeploymentError, match="nothing to roll back to"):
        _record(changes, state, PolicyAction.ROLLBACK)


def test_activate_keeps_the_shadow_and_can_be_rolled_back() -> None:
    changes: list[PolicyChange] = []
    state = _record(changes, Deployment(), PolicyAction.DEPLOY_SHADOW, policy(version="s-1"))
    state = _record(changes, state, PolicyAction.ACTIVATE, policy(version="hotfix-1"))
    assert state.active is not None and state.active.version == "hotfix-1"
    assert state.shadow is not None and state.shadow.version == "s-1"
    state = _record(changes, state, PolicyAction.ROLLBACK)
    assert state.active is None and state.shadow is not None


def test_changes_that_cannot_be_made_are_refused_with_the_reason() -> None:
    changes: list[PolicyChange] = []
    with pytest.raises(DeploymentError, match="nothing to promote"):
        _record(changes, Deployment(), PolicyAction.PROMOTE)
    with pytest.raises(DeploymentError, match="no shadow policy"):
        _record(changes, Deployment(), PolicyAction.WITHDRAW_SHADOW)
    state = _record(changes, Deployment(), PolicyAction.DEPLOY_SHADOW, policy(version="a-1"))
    state = _record(changes, state, PolicyAction.PROMOTE)
    with pytest.raises(DeploymentError, match="already the active policy"):
        _record(changes, state, PolicyAction.DEPLOY_SHADOW, policy(version="a-1"))
    # One version never names two policies: plans record only the version.
    with pytest.raises(DeploymentError, match="deployed before with other contents"):
        _record(changes, state, PolicyAction.DEPLOY_SHADOW, policy(version="a-1", split_cost=99.0))
    state = _record(changes, state, PolicyAction.DEPLOY_SHADOW, policy(version="b-1"))
    with pytest.raises(DeploymentError, match="in shadow"):
        _record(changes, state, PolicyAction.ACTIVATE, policy(version="b-1"))
    state = _record(changes, state, PolicyAction.WITHDRAW_SHADOW)
    assert state.shadow is None and changes[-1].previous_version == "b-1"


def test_a_fold_resumes_from_where_it_stopped() -> None:
    changes: list[PolicyChange] = []
    state = _record(changes, Deployment(), PolicyAction.DEPLOY_SHADOW, policy(version="r-1"))
    state = _record(changes, state, PolicyAction.PROMOTE)
    halfway = fold_changes(changes[:1])
    assert fold_changes(changes[1:], halfway) == state
    assert fold_changes(changes, state) == state, "changes already folded in are not applied twice"


# ------------------------------------------------------------------------------------ comparison

STOCK = {("DC-MANCHESTER", "KETTLE"): 5, ("DC-LONDON", "KETTLE"): 5}
LONDON_FIRST = policy(version="london-first-1", ranked_nodes=("DC-LONDON",), rank_bonus=100.0)


def _plans() -> tuple[PlanDecided, PlanDecided]:
    """One order planned by the packaged policy (active) and by LONDON_FIRST (shadow)."""
    o = order(line("1", "KETTLE"))
    return plan_for(o, STOCK), plan_for(o, STOCK, the_policy=LONDON_FIRST)


def test_the_same_decision_by_another_policy_does_not_differ() -> None:
    o = order(line("1", "KETTLE"))
    active = plan_for(o, STOCK)
    same = plan_for(o, STOCK, the_policy=policy(version="renamed-1"))
    assert not plans_differ(active, same)


def test_both_plans_are_measured_alike_and_the_difference_is_seen() -> None:
    active, shadow = _plans()
    assert [s.node_id for s in active.shipments] == ["DC-MANCHESTER"]
    assert [s.node_id for s in shadow.shipments] == ["DC-LONDON"]
    d = compare(active, shadow, network=uk_network(), capacity_used={}, now=NOW)
    assert d.differs
    assert (d.active.version, d.shadow.version) == (active.policy_version, "london-first-1")
    assert d.active.cost == float(active.shipments[0].shipping_cost)
    assert d.shadow.cost == float(shadow.shipments[0].shipping_cost) > d.active.cost, "London is further"
    assert d.shadow.objective == shadow.total_cost, "each policy's own objective, beside the yardstick"
    assert d.active.shipments == d.shadow.shipments == 1 and not d.active.split
    assert d.active.promise_hit and d.shadow.promise_hit
    assert d.active.capacity_breaches == d.shadow.capacity_breaches == 0
    assert d.shadow.plan["shipments"][0]["node_id"] == "DC-LONDON"
    assert d.shadow.plan["explanation"] == list(shadow.explanation)
    assert describe(d.shadow.plan).startswith("ship: DC-LONDON by ")


def test_a_split_and_a_back_order_are_counted() -> None:
    o = order(line("1", "KETTLE"), line("2", "TOASTER", 2))
    stock = {("DC-MANCHESTER", "KETTLE"): 1, ("DC-LONDON", "TOASTER"): 1}
    plan = plan_for(o, stock)
    d = compare(plan, plan, network=uk_network(), capacity_used={}, now=NOW)
    assert d.active.shipments == 2 and d.active.split and d.active.planned
    assert plan.backordered, "one toaster is missing"
    assert not d.active.promise_hit, "a line left waiting misses the promise"


def test_a_shipment_arriving_after_the_promised_date_misses_it() -> None:
    o = order(line("1", "KETTLE"), promised=date(2025, 3, 10))  # today: no service arrives today
    plan = plan_for(o, STOCK)
    assert plan.shipments and not promise_hit(plan)


def test_a_shipment_to_a_node_whose_day_is_full_is_a_capacity_breach() -> None:
    active, shadow = _plans()
    network = uk_network()
    full = {"DC-LONDON": network.capacity_on("DC-LONDON", NOW.date())}
    assert capacity_breaches(shadow, network=network, capacity_used=full, now=NOW) == 1
    assert capacity_breaches(active, network=network, capacity_used=full, now=NOW) == 0
    almost = {"DC-LONDON": full["DC-LONDON"] - 1}
    assert capacity_breaches(shadow, network=network, capacity_used=almost, now=NOW) == 0


# ------------------------------------------------------------------------------------ the report


def _decision(order_id: str, version: int, at: datetime, *, far: bool = True) -> ShadowDecision:
    o = order(line("1", "KETTLE"), order_id=order_id)
    active = plan_for(o, STOCK)
    shadow = plan_for(o, STOCK, the_policy=LONDON_FIRST if far else policy(version="london-first-1"))
    d = compare(active, shadow, network=uk_network(), capacity_used={}, now=NOW)
    return replace(d, plan_version=version, decided_at=at)


def test_the_report_counts_each_order_once_by_its_latest_plan_in_the_window() -> None:
    t0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    decisions = [
        _decision("A", 1, t0),
        _decision("A", 2, t0 + timedelta(minutes=1), far=False),  # re-planned: the same as active
        _decision("B", 1, t0 + timedelta(minutes=2)),
        _decision("C", 1, t0 + timedelta(minutes=3), far=False),
        _decision("OLD", 1, t0 - timedelta(hours=2)),  # before the window
    ]
    report = shadow_report(decisions, since=t0 - timedelta(minutes=30), until=t0 + timedelta(hours=1))
    assert report.decisions == 4 and report.orders == 3
    [pair] = report.pairs
    assert pair.differing == 1 and report.differing_total == 1
    assert [d.order_id for d in report.differing] == ["B"]
    a, s = pair.active.summary(), pair.shadow.summary()
    b = next(d for d in decisions if d.order_id == "B")
    assert a["orders"] == s["orders"] == 3
    assert s["cost"] == round(2 * b.active.cost + b.shadow.cost, 2)
    assert a["cost"] == round(3 * b.active.cost, 2)
    assert a["shipments_per_order"] == s["shipments_per_order"] == 1.0
    assert a["split_rate"] == 0.0 and a["promise_hit_rate"] == 1.0
    text = format_report(report)
    assert "3 orders (4 decisions), 1 planned differently" in text
    assert "B (plan 1," in text and "shadow london-first-1: ship: DC-LONDON by" in text
    for sentence in (*b.active.plan["explanation"], *b.shadow.plan["explanation"]):
        assert sentence in text, "both explanations are shown"
    data = report.to_json()
    assert (
        data["pairs"][0]["differing"] == 1 and data["differing"][0]["shadow"]["version"] == "london-first-1"
    )


def test_the_report_separates_pairs_of_versions_and_limits_the_orders_listed() -> None:
    t0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    first = [_decision(f"O{i}", 1, t0 + timedelta(seconds=i)) for i in range(5)]
    other = replace(first[0], order_id="X", active=replace(first[0].active, version="other-active"))
    report = shadow_report([*first, other], since=t0, until=t0 + timedelta(hours=1), limit=2)
    assert [p.orders for p in report.pairs] == [5, 1], "most orders first"
    assert {p.active.version for p in report.pairs} == {first[0].active.version, "other-active"}
    assert report.differing_total == 6 and [d.order_id for d in report.differing] == ["O4", "O3"]
    assert "the newest 2" in format_report(report)
    empty = shadow_report([], since=t0, until=t0 + timedelta(hours=1))
    assert "no decision was shadowed" in format_report(empty)


# ------------------------------------------------------------------------------------ decide-node's hook


def _context() -> HandlerContext:
    o = order(line("1", "KETTLE"))
    event = Envelope.new(
        OrderValidated(order_id=o.order_id, sequence=1, action="plan", order=o), source="test"
    )
    # Any connection will do: the row is deferred to the end of the batch, not written here.
    return HandlerContext(
        stage="decide-node", topic="t", event=event, db=object(), now=NOW, log=structlog.get_logger("test")
    )


def test_a_shadow_decision_is_recorded_with_the_batch_and_counted_once_it_commits() -> None:
    metrics = RuntimeMetrics()
    view = PolicyView(policy(), refresh_seconds=1)
    view.bind_metrics(metrics)
    active, shadow = _plans()
    ctx = _context()
    view.record_shadow(ctx, active, lambda: shadow, network=uk_network(), capacity_used={})
    [(statement, args)] = ctx.deferred
    assert statement.startswith("INSERT INTO decide_shadow_plans")
    assert args[:6] == ("ORD-1", 1, active.decided_at, active.policy_version, "london-first-1", True)
    assert not ctx.emitted, "a shadow plan is never emitted"

    def sample(name: str, role: str, version: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"role": role, "version": version})

    assert sample("orchestrator_shadow_decisions_total", "shadow", "london-first-1") is None, (
        "not yet committed"
    )
    for callback in ctx.on_commit:
        callback()
    assert sample("orchestrator_shadow_decisions_total", "shadow", "london-first-1") == 1
    assert sample("orchestrator_shadow_decisions_total", "active", active.policy_version) == 1
    assert sample("orchestrator_shadow_shipping_cost_total", "shadow", "london-first-1") == float(
        shadow.shipments[0].shipping_cost
    )
    assert sample("orchestrator_shadow_promise_hits_total", "active", active.policy_version) == 1
    assert (
        metrics.registry.get_sample_value(
            "orchestrator_shadow_differing_decisions_total",
            {"active_version": active.policy_version, "shadow_version": "london-first-1"},
        )
        == 1
    )


def test_a_shadow_that_fails_to_plan_records_nothing_and_changes_nothing() -> None:
    view = PolicyView(policy(), refresh_seconds=1)
    active, _ = _plans()
    ctx = _context()

    def broken() -> PlanDecided:
        raise RuntimeError("a shadow policy's bug")

    view.record_shadow(ctx, active, broken, network=uk_network(), capacity_used={})
    assert not ctx.deferred and not ctx.on_commit and not ctx.emitted
