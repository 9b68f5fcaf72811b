"""The learning policy against the static one on a network with a failing node.

Both plan the same seeded order stream with the same starting stock, in the
order the orders were placed. After each plan, execution is simulated: every
work order at the failing node comes up short with the given probability,
every other node works normally. The learning run counts those outcomes the
way monitor does (per-minute buckets, the policy's windows) and decides the
next order with the risk and breakers they give; the static run never looks.
The numbers say how much failure each policy walked into, and what avoiding it
cost in shipping.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.learning import (
    COUNTERS,
    Breaker,
    BreakerState,
    LearningPolicy,
    Measures,
    next_breaker,
    node_subject,
    recent_window_start,
    routing_risk,
)
from orchestrator.domain.policy import Policy
from orchestrator.domain.sourcing import decide
from orchestrator.sim.geography import SimNetwork


@dataclass
class LearningRun:
    name: str
    orders: int = 0
    shipments: int = 0
    to_failing_node: int = 0
    short_picks: int = 0
    shipping_cost: float = 0.0
    breaker_trips: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "strategy": self.name,
            "orders": self.orders,
            "shipments": self.shipments,
            "work_orders_to_failing_node": self.to_failing_node,
            "short_picks": self.short_picks,
            # Each short pick is a re-route (the playbook re-plans the missing units elsewhere).
            "reroutes": self.short_picks,
            "short_pick_orders_rate": round(self.short_picks / self.orders, 4) if self.orders else 0.0,
            "shipping_cost": round(self.shipping_cost, 2),
            "breaker_trips": self.breaker_trips,
        }


class _Memory:
    """monitor's buckets and breakers, in memory."""

    def __init__(self, policy: LearningPolicy) -> None:
        self.policy = policy
        self.buckets: dict[tuple[str, datetime], Counter[str]] = {}
        self.breakers: dict[str, Breaker] = {}

    def measures(self, since: datetime, until: datetime | None = None) -> dict[str, Measures]:
        sums: dict[str, Counter[str]] = {}
        for (subject, minute), counts in self.buckets.items():
            if minute >= since and (until is None or minute < until):
                sums.setdefault(subject, Counter()).update(counts)
        return {s: Measures(s, **{k: c[k] for k in COUNTERS}) for s, c in sums.items()}

    def learn(self, subject: str, outcome: dict[str, int], now: datetime) -> bool:
        """Count an outcome; True when it tripped the subject's breaker."""
        minute = now.replace(second=0, microsecond=0)
        self.buckets.setdefault((subject, minute), Counter()).update(outcome)
        before = self.breakers.get(subject, Breaker(subject))
        recent = self.measures(recent_window_start(before, now, self.policy)).get(subject, Measures(subject))
        normal_until = now - timedelta(seconds=self.policy.recent_seconds)
        normal = self.measures(now - timedelta(hours=self.policy.window_hours), normal_until).get(
            subject, Measures(subject)
        )
        after = next_breaker(before, outcome, recent, normal, now, self.policy, at=now)
        self.breakers[subject] = after
        return after.state is BreakerState.OPEN and before.automatic(now) is not BreakerState.OPEN


def compare_learning(
    network: SimNetwork,
    orders: Sequence[OrderCreated],
    policy: Policy,
    *,
    failing_node: str,
    failure_rate: float,
    seed: int,
    learned_after: timedelta = timedelta(hours=2),
) -> list[LearningRun]:
    """The static and the learning policy over the same stream, with `failing_node` short-picking
    `failure_rate` of its work orders. A pick's outcome is known `learned_after` the order (the time
    a node takes to pick it), so learning always acts on news a little old."""
    view = network.view()
    runs = []
    for name, learning in (
        ("static (no learning)", policy.learning.model_copy(update={"enabled": False})),
        ("learning", policy.learning.model_copy(update={"enabled": True})),
    ):
        rng = random.Random(seed)  # the same luck for both: only the routing differs
        run = LearningRun(name)
        stock = dict(network.stock())
        used: dict[object, dict[str, int]] = {}
        memory = _Memory(learning)
        routed = policy.model_copy(update={"learning": learning})
        # Outcomes are known only when the node has worked the order: (when, subject, outcome).
        pending: list[tuple[datetime, str, dict[str, int]]] = []
        for order in orders:
            now = order.placed_at.astimezone(UTC)
            pending.sort(key=lambda p: p[0])
            while pending and pending[0][0] <= now:
                known_at, subject, outcome = pending.pop(0)
                run.breaker_trips += memory.learn(subject, outcome, known_at)
            risk = routing_risk(
                memory.measures(now - timedelta(hours=learning.window_hours)), memory.breakers, now, learning
            )
            day = used.setdefault(now.date(), {})
            plan = decide(
                order, network=view, stock=stock, capacity_used=day, policy=routed, now=now, risk=risk
            )
            run.orders += 1
            for shipment in plan.shipments:
                run.shipments += 1
                run.shipping_cost += float(shipment.shipping_cost)
                day[shipment.node_id] = day.get(shipment.node_id, 0) + 1
                for line in shipment.lines:
                    stock[(shipment.node_id, line.sku)] = (
                        stock.get((shipment.node_id, line.sku), 0) - line.quantity
                    )
                failing = shipment.node_id == failing_node
                short = failing and rng.random() < failure_rate
                run.to_failing_node += failing
                run.short_picks += short
                outcome = (
                    {"acknowledged": 1, "short_picked": 1} if short else {"acknowledged": 1, "picked": 1}
                )
                pending.append((now + learned_after, node_subject(shipment.node_id), outcome))
        runs.append(run)
    return runs


def busiest_dc(network: SimNetwork, orders: Sequence[OrderCreated], policy: Policy) -> str:
    """The node the static policy sends the most work orders to: the one whose failure hurts most."""
    view = network.view()
    static = policy.model_copy(update={"learning": policy.learning.model_copy(update={"enabled": False})})
    stock = dict(network.stock())
    counts: Counter[str] = Counter()
    for order in orders[: min(len(orders), 200)]:
        plan = decide(order, network=view, stock=stock, capacity_used={}, policy=static, now=order.placed_at)
        for s in plan.shipments:
            counts[s.node_id] += 1
            for line in s.lines:
                stock[(s.node_id, line.sku)] = stock.get((s.node_id, line.sku), 0) - line.quantity
    return counts.most_common(1)[0][0]


def format_learning_table(runs: Sequence[LearningRun], failing_node: str, failure_rate: float) -> str:
    lines = [
        f"Learning vs static: {failing_node} short-picks {failure_rate:.0%} of its work orders",
        "",
        "| strategy | orders | shipments | work orders to the failing node | short picks = re-routes | "
        "orders hit | shipping cost | breaker trips |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        hit = r.short_picks / r.orders if r.orders else 0.0
        lines.append(
            f"| {r.name} | {r.orders} | {r.shipments} | {r.to_failing_node} | {r.short_picks} | "
            f"{hit:.1%} | {r.shipping_cost:,.2f} | {r.breaker_trips} |"
        )
    return "\n".join(lines)


__all__ = ["LearningRun", "busiest_dc", "compare_learning", "format_learning_table"]
