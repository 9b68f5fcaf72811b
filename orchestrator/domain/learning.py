"""Routing that learns from execution: rolling measures per node and per carrier
service, the risk they add to a decision's cost, and a circuit breaker that
takes a subject out of routing when its failures jump far above its own normal.

Pure: monitor counts outcomes into per-minute buckets (its tables), decide-node
reads the sums through `RoutingRisk`; everything here is arithmetic on them.
A subject is `node:<node id>` or `service:<carrier service id>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.contract.base import EventPayload
from orchestrator.contract.execution import (
    NodeCancelReason,
    ShipmentDelivered,
    ShipmentLost,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderPicked,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)

#: The counters a bucket keeps (columns of `learning_buckets`).
COUNTERS = (
    "acknowledged",
    "rejected",
    "picked",
    "short_picked",
    "node_cancelled",
    "shipped",
    "shipped_late",
    "delivered",
    "delivered_late",
    "lateness_days",
    "lost",
)

#: The counters that are failures of their subject.
FAILURES = ("rejected", "short_picked", "node_cancelled", "delivered_late", "lost")
#: The counters that are successes: a probe that earns one closes the breaker (taking the work is
#: not enough; picking it, or delivering, is).
SUCCESSES = ("picked", "shipped", "delivered")

_Rate = Annotated[float, Field(ge=0, le=1)]


class LearningPolicy(BaseModel):
    """The `learning:` section of the routing policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Use the measures and breakers in decisions.")
    window_hours: int = Field(
        default=24, ge=1, le=24 * 14, description="The long window: a subject's normal."
    )
    recent_seconds: int = Field(
        default=900, ge=60, description="The short window a surge is judged on (whole minutes)."
    )
    node_risk_weight: float = Field(
        default=10.0, ge=0, description="Cost added to a shipment per unit of its node's failure rate."
    )
    service_risk_weight: float = Field(
        default=10.0, ge=0, description="Cost added to a shipment per unit of its service's failure rate."
    )
    min_samples: int = Field(default=10, ge=1, description="Outcomes needed before a rate is believed.")
    trip_rate: _Rate = Field(
        default=0.3, description="A recent failure rate at least this trips the breaker..."
    )
    trip_ratio: float = Field(
        default=3.0, ge=1, description="... when it is also this many times the normal."
    )
    cooldown_seconds: int = Field(default=900, ge=1, description="How long a tripped subject stays out.")
    refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often decide-node reads the measures and breakers again."
    )


@dataclass(frozen=True, slots=True)
class Measures:
    """Outcome counts of one subject over a window."""

    subject: str
    acknowledged: int = 0
    rejected: int = 0
    picked: int = 0
    short_picked: int = 0
    node_cancelled: int = 0
    shipped: int = 0
    shipped_late: int = 0
    delivered: int = 0
    delivered_late: int = 0
    lateness_days: int = 0
    lost: int = 0

    @property
    def is_node(self) -> bool:
        return self.subject.startswith("node:")

    @property
    def samples(self) -> int:
        """What the failure rate is over: work orders a node was given (taken or refused; a node that
        never acknowledges is counted by what it picked), or deliveries a service made (or lost)."""
        if self.is_node:
            taken = max(self.acknowledged, self.picked + self.short_picked + self.node_cancelled)
            return taken + self.rejected
        return self.delivered + self.lost

    @property
    def failures(self) -> int:
        if self.is_node:
            return self.rejected + self.short_picked + self.node_cancelled
        return self.delivered_late + self.lost

    @property
    def failure_rate(self) -> float:
        return min(1.0, self.failures / self.samples) if self.samples else 0.0

    def rate(self, part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rate(self.rejected, self.acknowledged + self.rejected)

    @property
    def acceptance_rate(self) -> float:
        return 1.0 - self.rejection_rate if self.acknowledged + self.rejected else 0.0

    @property
    def short_pick_rate(self) -> float:
        return self.rate(self.short_picked, self.picked + self.short_picked)

    @property
    def on_time_ship_rate(self) -> float:
        return self.rate(self.shipped - self.shipped_late, self.shipped)

    @property
    def on_time_delivery_rate(self) -> float:
        return self.rate(self.delivered - self.delivered_late, self.delivered)

    @property
    def mean_lateness_days(self) -> float:
        return self.rate(self.lateness_days, self.delivered_late)

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "subject": self.subject,
            "samples": self.samples,
            "failure_rate": round(self.failure_rate, 4),
            "acceptance_rate": round(self.acceptance_rate, 4),
            "rejection_rate": round(self.rejection_rate, 4),
            "short_pick_rate": round(self.short_pick_rate, 4),
            "on_time_ship_rate": round(self.on_time_ship_rate, 4),
            "on_time_delivery_rate": round(self.on_time_delivery_rate, 4),
            "mean_lateness_days": round(self.mean_lateness_days, 2),
        }


def node_subject(node_id: str) -> str:
    return f"node:{node_id}"


def service_subject(service_id: str) -> str:
    return f"service:{service_id}"


def node_outcomes(event: EventPayload, ship_due_at: datetime | None) -> dict[str, int]:
    """What a node's execution event adds to its counters."""
    if isinstance(event, WorkOrderAcknowledged):
        return {"acknowledged": 1}
    if isinstance(event, WorkOrderRejected):
        return {"rejected": 1}
    if isinstance(event, WorkOrderPicked):
        return {"picked": 1}
    if isinstance(event, WorkOrderShortPicked):
        return {"short_picked": 1}
    if isinstance(event, WorkOrderCancelledByNode):
        # A cancellation the orchestrator asked for is not the node's failure.
        return {} if event.reason is NodeCancelReason.REQUESTED else {"node_cancelled": 1}
    if isinstance(event, WorkOrderShipped):
        late = ship_due_at is not None and event.occurred_at > ship_due_at
        return {"shipped": 1, "shipped_late": int(late)}
    return {}


def service_outcomes(event: EventPayload, promised: datetime | None) -> dict[str, int]:
    """What a tracking event adds to its service's counters (`promised`: end of the promised day)."""
    if isinstance(event, ShipmentDelivered):
        if promised is None or event.occurred_at <= promised:
            return {"delivered": 1}
        days = max(1, (event.occurred_at.date() - promised.date()).days)
        return {"delivered": 1, "delivered_late": 1, "lateness_days": days}
    if isinstance(event, ShipmentLost):
        return {"lost": 1}
    return {}


def risk_cost(measures: Measures, policy: LearningPolicy) -> float:
    """Cost a shipment through this subject carries: its failure rate, weighted, once believed."""
    if not policy.enabled or measures.samples < policy.min_samples:
        return 0.0
    weight = policy.node_risk_weight if measures.is_node else policy.service_risk_weight
    return round(weight * measures.failure_rate, 4)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def evidence(measures: Measures, hours: int) -> str:
    """The measures in words, for explanations: "node DC-X: 12% short picks, ... in the last 24 h"."""
    name = measures.subject.replace(":", " ", 1)
    if measures.is_node:
        parts = [
            f"{_pct(measures.short_pick_rate)} short picks",
            f"{_pct(measures.rejection_rate)} rejections",
            f"{_pct(measures.on_time_ship_rate)} shipped on time",
        ]
        unit = "work orders"
        count = measures.acknowledged + measures.rejected
    else:
        parts = [
            f"{_pct(measures.on_time_delivery_rate)} delivered on time",
            f"{measures.lost} lost",
            f"{measures.mean_lateness_days:.1f} days late on average when late",
        ]
        unit = "deliveries"
        count = measures.samples
    return f"{name}: {', '.join(parts)} in the last {hours} h ({count} {unit})"


# ---------------------------------------------------------------------------
# The circuit breaker
# ---------------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"  # routed normally
    OPEN = "open"  # out of routing until the cool-down ends
    HALF_OPEN = "half_open"  # back in routing on probation: the next outcome decides


class Override(StrEnum):
    OPEN = "open"  # an operator took it out of routing
    CLOSED = "closed"  # an operator keeps it in routing whatever the measures say


@dataclass(frozen=True, slots=True)
class Breaker:
    subject: str
    state: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    until: datetime | None = None
    reason: str = ""
    override: Override | None = None
    override_reason: str = ""

    def automatic(self, now: datetime) -> BreakerState:
        """The state by the measures alone: an open breaker whose cool-down has ended lets a probe through."""
        if self.state is BreakerState.OPEN and self.until is not None and now >= self.until:
            return BreakerState.HALF_OPEN
        return self.state

    def effective(self, now: datetime) -> BreakerState:
        """The state decisions use now: an operator's override wins."""
        if self.override is Override.OPEN:
            return BreakerState.OPEN
        if self.override is Override.CLOSED:
            return BreakerState.CLOSED
        return self.automatic(now)

    def routable(self, now: datetime) -> bool:
        return self.effective(now) is not BreakerState.OPEN


def _surge(recent: Measures, normal: Measures, policy: LearningPolicy) -> str | None:
    """Why the recent failures are far above the subject's own normal, or None."""
    if recent.samples < policy.min_samples:
        return None
    rate = recent.failure_rate
    # No normal known yet (too few outcomes before the surge): the rate alone decides.
    baseline = normal.failure_rate if normal.samples >= policy.min_samples else 0.0
    if rate >= policy.trip_rate and rate >= policy.trip_ratio * baseline:
        return (
            f"failures jumped to {_pct(rate)} over the last {policy.recent_seconds // 60} min "
            f"({recent.failures} of {recent.samples} judged; its normal is {_pct(baseline)})"
        )
    return None


def recent_window_start(breaker: Breaker, now: datetime, policy: LearningPolicy) -> datetime:
    """Where the short window starts: never before the breaker last closed, so the surge that
    tripped it does not trip it again the moment the probe has closed it."""
    start = now - timedelta(seconds=policy.recent_seconds)
    if breaker.state is BreakerState.CLOSED and breaker.since is not None:
        return max(start, breaker.since)
    return start


def next_breaker(
    breaker: Breaker,
    outcome: Mapping[str, int],
    recent: Measures,
    normal: Measures,
    now: datetime,
    policy: LearningPolicy,
    *,
    at: datetime | None = None,
) -> Breaker:
    """The breaker after one more outcome of its subject.

    Closed: trips open on a surge. Open: stays so until the cool-down ends. Half-open (cool-down
    over): the probe's outcome closes it, or opens it again for another cool-down.
    """
    # The measures keep moving the breaker under an override, so clearing it leaves the true state.
    state = breaker.automatic(now)
    failed = any(outcome.get(k, 0) for k in FAILURES)
    # A probe is work done after the cool-down: an outcome from before it says nothing new.
    after_cooldown = at is None or breaker.until is None or at >= breaker.until
    succeeded = not failed and after_cooldown and any(outcome.get(k, 0) for k in SUCCESSES)
    cooldown = timedelta(seconds=policy.cooldown_seconds)
    if state is BreakerState.HALF_OPEN:
        if failed and after_cooldown:
            return replace(
                breaker,
                state=BreakerState.OPEN,
                since=now,
                until=now + cooldown,
                reason="the probe after the cool-down failed too",
            )
        if succeeded:
            return replace(
                breaker, state=BreakerState.CLOSED, since=now, until=None, reason="the probe succeeded"
            )
        return breaker
    if state is BreakerState.CLOSED and failed:
        why = _surge(recent, normal, policy)
        if why is not None:
            return replace(breaker, state=BreakerState.OPEN, since=now, until=now + cooldown, reason=why)
    return breaker


def learning_sentences(
    shipments: list[tuple[str, str]], candidates: list[str], risk: RoutingRisk
) -> list[str]:
    """What learning did to a plan, in words: the risk its shipments carry (node, service pairs)
    and the nodes it kept out of routing among those considered."""
    out = []
    for node_id, service_id in shipments:
        for subject, cost in (
            (f"node:{node_id}", risk.node_cost.get(node_id)),
            (f"service:{service_id}", risk.service_cost.get(service_id)),
        ):
            if cost:
                out.append(f"Risk from execution, {risk.evidence[subject]}: +{cost:.2f} on the cost.")
    for node_id in candidates:
        if node_id in risk.closed_nodes:
            out.append(f"{node_id} is {risk.closed_nodes[node_id]}.")
    return list(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class RoutingRisk:
    """What a decision needs from learning: cost per node and service, who is out, and why."""

    node_cost: Mapping[str, float] = field(default_factory=dict)
    service_cost: Mapping[str, float] = field(default_factory=dict)
    #: Nodes and services whose breaker is open (or forced open): not routed to.
    closed_nodes: Mapping[str, str] = field(default_factory=dict)
    closed_services: Mapping[str, str] = field(default_factory=dict)
    #: Subject -> its measures in words, for every subject with a risk cost.
    evidence: Mapping[str, str] = field(default_factory=dict)
    #: Subjects on probation (cool-down over): subject -> the end of that cool-down. One probe each.
    probation: Mapping[str, datetime] = field(default_factory=dict)

    def without(self, subject: str, why: str) -> RoutingRisk:
        """The same, with `subject` out of routing for this decision."""
        kind, name = subject.split(":", 1)
        if kind == "node":
            return replace(self, closed_nodes={**self.closed_nodes, name: why})
        return replace(self, closed_services={**self.closed_services, name: why})


NO_RISK = RoutingRisk()


def routing_risk(
    measures: Mapping[str, Measures], breakers: Mapping[str, Breaker], now: datetime, policy: LearningPolicy
) -> RoutingRisk:
    """The learning a decision uses, from the long-window measures and the breakers."""
    if not policy.enabled:
        return NO_RISK
    node_cost: dict[str, float] = {}
    service_cost: dict[str, float] = {}
    words: dict[str, str] = {}
    for subject, m in measures.items():
        cost = risk_cost(m, policy)
        if cost <= 0:
            continue
        kind, name = subject.split(":", 1)
        (node_cost if kind == "node" else service_cost)[name] = cost
        words[subject] = evidence(m, policy.window_hours)
    closed_nodes: dict[str, str] = {}
    closed_services: dict[str, str] = {}
    probation: dict[str, datetime] = {}
    for subject, b in breakers.items():
        if b.effective(now) is BreakerState.HALF_OPEN and b.until is not None:
            probation[subject] = b.until
        if b.routable(now):
            continue
        kind, name = subject.split(":", 1)
        why = f"operator override: {b.override_reason}" if b.override is Override.OPEN else b.reason
        until = f" until {b.until:%H:%M:%S} UTC" if b.override is None and b.until else ""
        (closed_nodes if kind == "node" else closed_services)[name] = f"out of routing{until}: {why}"
    return RoutingRisk(node_cost, service_cost, closed_nodes, closed_services, words, probation)


__all__ = [
    "COUNTERS",
    "FAILURES",
    "NO_RISK",
    "SUCCESSES",
    "Breaker",
    "BreakerState",
    "LearningPolicy",
    "Measures",
    "Override",
    "RoutingRisk",
    "evidence",
    "learning_sentences",
    "next_breaker",
    "node_outcomes",
    "node_subject",
    "recent_window_start",
    "risk_cost",
    "routing_risk",
    "service_outcomes",
    "service_subject",
]
