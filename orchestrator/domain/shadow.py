"""Shadow policies: a candidate routing policy decides every live order beside the active one,
and only the active one's plan is carried out. Pure: no Kafka, no database.

Two parts:

- **Deployment**: which policy is active, which one is in shadow, and what a rollback returns to,
  folded from the append-only record of changes (`decide_policy_changes`, written by
  `orchestrator policy ...`). No active policy in the record means each decide-node's policy
  file, as before policies could be deployed.
- **Comparison**: both plans of one decision measured by one yardstick (the measures
  `orchestrator simulate` uses offline: what the carriers charge, shipments per order, split
  rate, promise hit rate, plus capacity breaches), whether they differ, and the report over a
  window of decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrator.contract.pipeline import PlanDecided
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy, PolicyError, parse_policy
from orchestrator.domain.sourcing import TIMES

# ---------------------------------------------------------------------------------------- deployment


class PolicyAction(StrEnum):
    """What a change to the deployed policies did (`decide_policy_changes.action`)."""

    ACTIVATE = "activate"  # a policy file made active at once, without a shadow period
    DEPLOY_SHADOW = "deploy_shadow"
    WITHDRAW_SHADOW = "withdraw_shadow"
    PROMOTE = "promote"  # the shadow becomes active; the active it replaces can be rolled back to
    ROLLBACK = "rollback"  # back to the active before the latest promote or activate


ACTIVE = "active"
SHADOW = "shadow"


class DeploymentError(ValueError):
    """A change that cannot be made now (nothing to promote, nothing to roll back to...)."""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One row of the record: `role` holds `version` (its YAML as deployed) after the change."""

    id: int
    at: datetime
    who: str
    action: PolicyAction
    role: str
    #: Both None: the role holds nothing (a withdrawn shadow) or, for `active`, the policy file.
    version: str | None
    policy_yaml: str | None
    previous_version: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Deployed:
    """A policy deployed in a role: its version, its YAML, and the change that put it there."""

    version: str
    policy_yaml: str
    change_id: int


@dataclass(frozen=True, slots=True)
class Deployment:
    """The policies decide-node uses, as the record of changes says."""

    #: None: each decide-node's policy file.
    active: Deployed | None = None
    shadow: Deployed | None = None
    #: The actives a rollback returns to, the latest last (None: the policy file).
    earlier: tuple[Deployed | None, ...] = ()
    #: The id of the last change folded in.
    last_change: int = 0

    def apply(self, change: PolicyChange) -> Deployment:
        """The deployment after `change` (changes are applied in id order)."""
        held = (
            Deployed(change.version, change.policy_yaml, change.id)
            if change.version is not None and change.policy_yaml is not None
            else None
        )
        action = change.action
        if action is PolicyAction.DEPLOY_SHADOW:
            return Deployment(self.active, held, self.earlier, change.id)
        if action is PolicyAction.WITHDRAW_SHADOW:
            return Deployment(self.active, None, self.earlier, change.id)
        if action is PolicyAction.PROMOTE:
            return Deployment(held, None, (*self.earlier, self.active), change.id)
        if action is PolicyAction.ACTIVATE:
            return Deployment(held, self.shadow, (*self.earlier, self.active), change.id)
        # ROLLBACK: the row names what it restored; the stack says what the next rollback restores.
        return Deployment(held, self.shadow, self.earlier[:-1], change.id)


def fold_changes(changes: Iterable[PolicyChange], start: Deployment | None = None) -> Deployment:
    """The deployment after `changes`, applied in id order onto `start` (default: nothing deployed)."""
    state = start or Deployment()
    for change in sorted(changes, key=lambda c: c.id):
        if change.id > state.last_change:
            state = state.apply(change)
    return state


@dataclass(frozen=True, slots=True)
class NewChange:
    """A change to append to the record (its id and time come from the database)."""

    action: PolicyAction
    role: str
    version: str | None
    policy_yaml: str | None
    previous_version: str | None


def _name(deployed: Deployed | None) -> str:
    return "the policy file" if deployed is None else deployed.version


def _reused_version(history: Sequence[PolicyChange], policy: Policy) -> bool:
    """True when `policy.version` was deployed before as another policy."""
    for change in history:
        if change.version != policy.version or change.policy_yaml is None:
            continue
        try:
            if parse_policy(change.policy_yaml, f"change {change.id}") != policy:
                return True
        except PolicyError:
            return True  # what was deployed then no longer reads as a policy: not the same one
    return False


def plan_change(
    state: Deployment,
    action: PolicyAction,
    *,
    policy: Policy | None = None,
    policy_yaml: str | None = None,
    history: Sequence[PolicyChange] = (),
) -> NewChange:
    """The row that makes `action` on `state`, or DeploymentError saying why it cannot be made.

    `policy` (and the YAML it was read from) is what ACTIVATE and DEPLOY_SHADOW deploy. Plans
    record only the policy's version, so a version found in `history` as another policy is refused.
    """
    if action in (PolicyAction.ACTIVATE, PolicyAction.DEPLOY_SHADOW):
        if policy is None or policy_yaml is None:
            raise DeploymentError(f"{action.value} needs a policy")
        version = policy.version
        if _reused_version(history, policy):
            raise DeploymentError(
                f"version {version} was deployed before with other contents; plans record only the"
                " version, so give the changed policy a new one"
            )
        if action is PolicyAction.DEPLOY_SHADOW:
            if state.active is not None and state.active.version == version:
                raise DeploymentError(f"version {version} is already the active policy")
            previous = state.shadow.version if state.shadow else None
            return NewChange(action, SHADOW, version, policy_yaml, previous)
        if state.active is not None and state.active.version == version:
            raise DeploymentError(f"version {version} is already the active policy")
        if state.shadow is not None and state.shadow.version == version:
            raise DeploymentError(
                f"version {version} is in shadow: `orchestrator policy promote` makes it active"
            )
        return NewChange(action, ACTIVE, version, policy_yaml, state.active.version if state.active else None)
    if action is PolicyAction.WITHDRAW_SHADOW:
        if state.shadow is None:
            raise DeploymentError("no shadow policy is deployed")
        return NewChange(action, SHADOW, None, None, state.shadow.version)
    if action is PolicyAction.PROMOTE:
        if state.shadow is None:
            raise DeploymentError(
                "no shadow policy is deployed: nothing to promote"
                " (`orchestrator policy deploy FILE --shadow` deploys one)"
            )
        shadow = state.shadow
        previous = state.active.version if state.active else None
        return NewChange(action, ACTIVE, shadow.version, shadow.policy_yaml, previous)
    # ROLLBACK
    if not state.earlier:
        raise DeploymentError(
            f"nothing to roll back to: {_name(state.active)} has been active since the record began"
        )
    back = state.earlier[-1]
    return NewChange(
        action,
        ACTIVE,
        None if back is None else back.version,
        None if back is None else back.policy_yaml,
        state.active.version if state.active else None,
    )


# ---------------------------------------------------------------------------------------- comparison


@dataclass(frozen=True, slots=True)
class PlanMeasures:
    """One plan of a decision, measured; `plan` is its summary (`plan_summary`)."""

    version: str
    outcome: str
    #: What the carriers charge for its shipments: one yardstick for every policy.
    cost: float
    #: The policy's own objective value (its weights: not comparable across policies).
    objective: float
    shipments: int
    #: Every line planned and every shipment arriving by the order's promised date.
    promise_hit: bool
    #: Shipments planned at a node whose capacity for its day was already used up.
    capacity_breaches: int
    plan: Mapping[str, Any] = field(default_factory=dict)

    @property
    def planned(self) -> bool:
        return self.shipments > 0

    @property
    def split(self) -> bool:
        return self.shipments > 1


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """One decision planned by both policies: the active plan (carried out) and the shadow's."""

    order_id: str
    plan_version: int
    decided_at: datetime
    differs: bool
    active: PlanMeasures
    shadow: PlanMeasures


def capacity_breaches(
    plan: PlanDecided, *, network: NetworkView, capacity_used: Mapping[str, int], now: datetime
) -> int:
    """Shipments of `plan` at a node whose capacity on the shipment's ship date (planned at `now`)
    is already taken by what is planned there (`capacity_used`, as the decision saw it)."""
    breaches = 0
    for shipment in plan.shipments:
        day = network.ship_date(shipment.node_id, now)
        if capacity_used.get(shipment.node_id, 0) >= network.capacity_on(shipment.node_id, day):
            breaches += 1
    return breaches


def promise_hit(plan: PlanDecided) -> bool:
    """As `orchestrator simulate` counts it: something shipped, nothing left waiting, and every
    shipment arriving by the order's promised date."""
    promised = plan.order.promised_delivery_date
    return (
        bool(plan.shipments)
        and not plan.backordered
        and all(s.promised_delivery_date <= promised for s in plan.shipments)
    )


def plan_shape(plan: PlanDecided) -> tuple[object, ...]:
    """What a plan does, without ids, times or costs: two plans of one shape are the same decision."""
    shipments = sorted(
        (
            s.node_id,
            s.carrier.service_id,
            tuple(sorted((line.line_id, line.sku, line.quantity) for line in s.lines)),
        )
        for s in plan.shipments
    )
    waiting = sorted((line.line_id, line.sku, line.quantity) for line in plan.backordered)
    return plan.outcome.value, tuple(shipments), tuple(waiting)


def plans_differ(active: PlanDecided, shadow: PlanDecided) -> bool:
    """Other nodes, carrier services or quantities, or another outcome."""
    return plan_shape(active) != plan_shape(shadow)


def plan_summary(plan: PlanDecided) -> dict[str, Any]:
    """What the report shows of a plan: its shipments, back-orders, cost and explanation (JSON)."""
    return {
        "policy_version": plan.policy_version,
        "outcome": plan.outcome.value,
        "total_cost": round(plan.total_cost, 4),
        "shipments": [
            {
                "node_id": s.node_id,
                "service_id": s.carrier.service_id,
                "lines": [{"line_id": x.line_id, "sku": x.sku, "quantity": x.quantity} for x in s.lines],
                "promised_delivery_date": s.promised_delivery_date.isoformat(),
                "shipping_cost": float(s.shipping_cost),
            }
            for s in plan.shipments
        ],
        "backordered": [
            {"line_id": x.line_id, "sku": x.sku, "quantity": x.quantity} for x in plan.backordered
        ],
        "explanation": list(plan.explanation),
    }


def measure(
    plan: PlanDecided, *, network: NetworkView, capacity_used: Mapping[str, int], now: datetime
) -> PlanMeasures:
    return PlanMeasures(
        version=plan.policy_version,
        outcome=plan.outcome.value,
        cost=float(sum(s.shipping_cost for s in plan.shipments)),
        objective=plan.total_cost,
        shipments=len(plan.shipments),
        promise_hit=promise_hit(plan),
        capacity_breaches=capacity_breaches(plan, network=network, capacity_used=capacity_used, now=now),
        plan=plan_summary(plan),
    )


def compare(
    active: PlanDecided,
    shadow: PlanDecided,
    *,
    network: NetworkView,
    capacity_used: Mapping[str, int],
    now: datetime,
) -> ShadowDecision:
    """Both plans of one decision, made on the same inputs, measured alike."""
    return ShadowDecision(
        order_id=active.order_id,
        plan_version=active.plan_version,
        decided_at=active.decided_at,
        differs=plans_differ(active, shadow),
        active=measure(active, network=network, capacity_used=capacity_used, now=now),
        shadow=measure(shadow, network=network, capacity_used=capacity_used, now=now),
    )


def _units(lines: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(f"{x['line_id']} {x['sku']} {TIMES}{x['quantity']}" for x in lines)


def describe(summary: Mapping[str, Any]) -> str:
    """A plan summary in one line (`ship: DC-A by t-ground (1 SKU x2) arriving 2026-05-03`, with the
    multiplication sign for the x, as `explain` writes it)."""
    parts = [
        f"{s['node_id']} by {s['service_id']} ({_units(s['lines'])}) arriving {s['promised_delivery_date']}"
        for s in summary.get("shipments", ())
    ]
    text = "; ".join(parts) if parts else "no shipment"
    waiting = summary.get("backordered", ())
    if waiting:
        text += f"; back-ordered: {_units(waiting)}"
    return f"{summary.get('outcome', '?')}: {text}"


# ---------------------------------------------------------------------------------------- the report


@dataclass
class RoleTotals:
    """One policy's measures summed over the orders of a report."""

    version: str
    orders: int = 0
    cost: float = 0.0
    objective: float = 0.0
    shipments: int = 0
    planned: int = 0
    splits: int = 0
    promise_hits: int = 0
    capacity_breaches: int = 0

    def add(self, m: PlanMeasures) -> None:
        self.orders += 1
        self.cost += m.cost
        self.objective += m.objective
        self.shipments += m.shipments
        self.planned += m.planned
        self.splits += m.split
        self.promise_hits += m.promise_hit
        self.capacity_breaches += m.capacity_breaches

    def summary(self) -> dict[str, Any]:
        """The rates as `orchestrator simulate` states them (split rate over planned orders)."""
        per = self.orders or 1
        return {
            "version": self.version,
            "orders": self.orders,
            "cost": round(self.cost, 2),
            "cost_per_order": round(self.cost / per, 4),
            "objective_per_order": round(self.objective / per, 4),
            "shipments_per_order": round(self.shipments / per, 4),
            "split_rate": round(self.splits / self.planned, 4) if self.planned else 0.0,
            "promise_hit_rate": round(self.promise_hits / per, 4),
            "capacity_breaches": self.capacity_breaches,
        }


@dataclass
class PairReport:
    """The orders one active policy and one shadow policy both planned."""

    active: RoleTotals
    shadow: RoleTotals
    differing: int = 0

    @property
    def orders(self) -> int:
        return self.active.orders


@dataclass
class ShadowReport:
    since: datetime
    until: datetime
    #: Decisions in the window (an order re-planned counts once per plan).
    decisions: int
    #: One per (active, shadow) pair of versions, most orders first.
    pairs: list[PairReport]
    #: Orders planned differently, newest first, at most the report's limit.
    differing: list[ShadowDecision]
    differing_total: int

    @property
    def orders(self) -> int:
        return sum(p.orders for p in self.pairs)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "decisions": self.decisions,
            "orders": self.orders,
            "differing_total": self.differing_total,
            "pairs": [
                {
                    "active": p.active.summary(),
                    "shadow": p.shadow.summary(),
                    "orders": p.orders,
                    "differing": p.differing,
                }
                for p in self.pairs
            ],
            "differing": [
                {
                    "order_id": d.order_id,
                    "plan_version": d.plan_version,
                    "decided_at": d.decided_at.isoformat(),
                    "active": {"version": d.active.version, **d.active.plan},
                    "shadow": {"version": d.shadow.version, **d.shadow.plan},
                }
                for d in self.differing
            ],
        }


def shadow_report(
    decisions: Iterable[ShadowDecision], *, since: datetime, until: datetime, limit: int = 20
) -> ShadowReport:
    """Aggregate the decisions made in [since, until): each order counts once, by its latest plan
    in the window (a re-plan after a lost race or an amendment replaces the earlier one)."""
    latest: dict[str, ShadowDecision] = {}
    count = 0
    for d in decisions:
        if not since <= d.decided_at < until:
            continue
        count += 1
        known = latest.get(d.order_id)
        if known is None or d.plan_version > known.plan_version:
            latest[d.order_id] = d
    pairs: dict[tuple[str, str], PairReport] = {}
    for d in latest.values():
        key = (d.active.version, d.shadow.version)
        pair = pairs.get(key)
        if pair is None:
            pair = pairs[key] = PairReport(RoleTotals(key[0]), RoleTotals(key[1]))
        pair.active.add(d.active)
        pair.shadow.add(d.shadow)
        pair.differing += d.differs
    differing = sorted(
        (d for d in latest.values() if d.differs), key=lambda d: (d.decided_at, d.order_id), reverse=True
    )
    return ShadowReport(
        since=since,
        until=until,
        decisions=count,
        pairs=sorted(pairs.values(), key=lambda p: (-p.orders, p.active.version, p.shadow.version)),
        differing=differing[: max(0, limit)],
        differing_total=len(differing),
    )


def _change(before: float, after: float) -> str:
    if before == after:
        return "="
    if before == 0:
        return "new"
    return f"{(after - before) / abs(before):+.1%}"


def _difference(before: int, after: int) -> str:
    return "=" if before == after else f"{after - before:+d}"


def _points(before: float, after: float) -> str:
    return "=" if before == after else f"{(after - before) * 100:+.1f} pts"


def format_report(report: ShadowReport) -> str:
    """The report as text: one comparison table per pair of versions, then the differing orders
    with both plans and both explanations."""
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    out = [
        f"Shadow decisions from {report.since.strftime(fmt)} to {report.until.strftime(fmt)}:"
        f" {report.orders} orders ({report.decisions} decisions),"
        f" {report.differing_total} planned differently"
    ]
    if not report.pairs:
        out.append("no decision was shadowed in this window")
        return "\n".join(out)
    for pair in report.pairs:
        a, s = pair.active.summary(), pair.shadow.summary()
        share = pair.differing / pair.orders if pair.orders else 0.0
        rows = [
            ("", f"ACTIVE {a['version']}", f"SHADOW {s['version']}", "CHANGE"),
            ("orders", str(a["orders"]), str(s["orders"]), f"{pair.differing} differ ({share:.1%})"),
            ("shipping cost", f"{a['cost']:.2f}", f"{s['cost']:.2f}", _change(a["cost"], s["cost"])),
            (
                "cost/order",
                f"{a['cost_per_order']:.2f}",
                f"{s['cost_per_order']:.2f}",
                _change(a["cost_per_order"], s["cost_per_order"]),
            ),
            (
                "objective/order (own)",
                f"{a['objective_per_order']:.2f}",
                f"{s['objective_per_order']:.2f}",
                "",
            ),
            (
                "shipments/order",
                f"{a['shipments_per_order']:.2f}",
                f"{s['shipments_per_order']:.2f}",
                _change(a["shipments_per_order"], s["shipments_per_order"]),
            ),
            (
                "split rate",
                f"{a['split_rate']:.1%}",
                f"{s['split_rate']:.1%}",
                _points(a["split_rate"], s["split_rate"]),
            ),
            (
                "promise hit rate",
                f"{a['promise_hit_rate']:.1%}",
                f"{s['promise_hit_rate']:.1%}",
                _points(a["promise_hit_rate"], s["promise_hit_rate"]),
            ),
            (
                "capacity breaches",
                str(a["capacity_breaches"]),
                str(s["capacity_breaches"]),
                _difference(a["capacity_breaches"], s["capacity_breaches"]),
            ),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        out.append("")
        for r in rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    if report.differing:
        shown = len(report.differing)
        more = f", the newest {shown}" if shown < report.differing_total else ""
        out.append("")
        out.append(f"Orders planned differently ({report.differing_total}{more}):")
        for d in report.differing:
            out.append(f"{d.order_id} (plan {d.plan_version}, {d.decided_at.strftime(fmt)})")
            for role, m in (("active", d.active), ("shadow", d.shadow)):
                out.append(f"  {role} {m.version}: {describe(m.plan)}; shipping {m.cost:.2f}")
                out += [f"    {sentence}" for sentence in m.plan.get("explanation", ())]
    return "\n".join(out)


__all__ = [
    "ACTIVE",
    "SHADOW",
    "Deployed",
    "Deployment",
    "DeploymentError",
    "NewChange",
    "PairReport",
    "PlanMeasures",
    "PolicyAction",
    "PolicyChange",
    "RoleTotals",
    "ShadowDecision",
    "ShadowReport",
    "capacity_breaches",
    "compare",
    "describe",
    "fold_changes",
    "format_report",
    "measure",
    "plan_change",
    "plan_shape",
    "plan_summary",
    "plans_differ",
    "promise_hit",
    "shadow_report",
]
