"""What the live view counts, from the records on the topics. Pure: the
observer feeds it (topic, event type, record time, payload) and asks for a
summary; the end-of-run summary and the test read the same numbers.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.contract.common import OrderState
from orchestrator.contract.returns import TERMINAL_RETURN_STATES, ReturnState

#: Order states in which a live order waits for nothing the simulation will send.
RESTING_STATES = frozenset(
    {
        OrderState.DELIVERED,
        OrderState.CANCELLED,
        OrderState.REJECTED,
        OrderState.BACK_ORDERED,
        # Held for stock (or by the OMS, until it says otherwise): nothing the run sends moves it.
        OrderState.ON_HOLD,
        OrderState.NEEDS_ATTENTION,
    }
)

#: Return states in which a return waits for nothing the simulation will send (a person decides the
#: ones that need attention).
RESTING_RETURN_STATES = frozenset(s.value for s in (*TERMINAL_RETURN_STATES, ReturnState.NEEDS_ATTENTION))

#: The headline of what happened to an order first: held by the OMS, or its first plan's shape.
DECISION_KINDS = (
    "single_node",
    "split",
    "ship_from_store",
    "bopis",
    "back_order",
    "held",
    "unfulfillable",
)


def decision_kind(plan: dict[str, Any], stores: frozenset[str]) -> str:
    """The headline of a `plan.decided` payload (a plan of the whole order)."""
    outcome = plan["outcome"]
    if outcome in ("backorder", "partial", "hold_for_stock"):
        return "back_order"
    if outcome == "unfulfillable":
        return "unfulfillable"
    if plan["order"]["delivery"]["kind"] == "bopis":
        return "bopis"
    shipments = plan["shipments"]
    if len(shipments) > 1:
        return "split"
    if shipments and shipments[0]["node_id"] in stores:
        return "ship_from_store"
    return "single_node"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


@dataclass
class LiveTally:
    """Counts of one live run: only orders whose id starts with `order_prefix`."""

    order_prefix: str
    stores: frozenset[str] = frozenset()
    orders: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    plan_outcomes: Counter[str] = field(default_factory=Counter)
    repairs_planned: int = 0
    work_orders: Counter[str] = field(default_factory=Counter)
    node_events: Counter[str] = field(default_factory=Counter)
    carrier_events: Counter[str] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    repair_outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: The first few dead letters' reasons, so a run that produced any says why.
    dead_letter_reasons: list[str] = field(default_factory=list)
    #: The latest state the OMS was told, per order.
    states: dict[str, str] = field(default_factory=dict)
    #: Orders the OMS placed on hold: their wait for the OMS is not the orchestrator's latency.
    held: set[str] = field(default_factory=set)
    #: The latest state of each return the OMS authorised ("requested" until the orchestrator tells
    #: one), and the order it is of.
    returns: dict[str, str] = field(default_factory=dict)
    return_orders: dict[str, str] = field(default_factory=dict)
    created_ms: dict[str, int] = field(default_factory=dict)
    released_ms: dict[str, int] = field(default_factory=dict)
    #: (record time, kind) of arrivals and first releases, for the rates of the last seconds.
    recent: deque[tuple[int, str]] = field(default_factory=deque)
    last_record_ms: int = 0

    def ours(self, order_id: object) -> bool:
        return isinstance(order_id, str) and order_id.startswith(self.order_prefix)

    def add(
        self, topic: str, event_type: str, timestamp_ms: int, data: dict[str, Any], *, dlq_reason: str = ""
    ) -> None:
        if topic.endswith(".dlq"):
            self.dead_letters[topic] += 1
            if len(self.dead_letter_reasons) < 20:
                self.dead_letter_reasons.append(f"{topic}: {event_type} {dlq_reason}")
            return
        order_id = data.get("order_id")
        if not self.ours(order_id):
            return
        assert isinstance(order_id, str)
        self.last_record_ms = max(self.last_record_ms, timestamp_ms)
        kind = event_type.rsplit(".", 1)[0]  # "order.created.v1" -> "order.created"
        if event_type.startswith("order.") and topic == "oms.orders.v1":
            self.orders[kind.split(".", 1)[1]] += 1
            if kind == "order.created" and order_id not in self.created_ms:
                self.created_ms[order_id] = timestamp_ms
                self.recent.append((timestamp_ms, "received"))
                if data.get("holds"):
                    self.decisions["held"] += 1  # the OMS holds it (payment, fraud) before any plan
                    self.held.add(order_id)
        elif kind == "plan.decided":
            if data.get("repair"):
                self.repairs_planned += 1
            else:
                self.plan_outcomes[data["outcome"]] += 1
                if data.get("plan_version") == 1:
                    self.decisions[decision_kind(data, self.stores)] += 1
        elif kind == "workorder.released":
            self.work_orders["released"] += 1
            if order_id not in self.released_ms:
                self.released_ms[order_id] = timestamp_ms
                self.recent.append((timestamp_ms, "released"))
        elif kind == "workorder.cancel_requested":
            self.work_orders["cancel_requested"] += 1
        elif kind.startswith("wms."):
            self.node_events[kind.split(".", 1)[1]] += 1
        elif kind.startswith("carrier."):
            self.carrier_events[kind.split(".", 1)[1]] += 1
        elif kind == "exception.raised":
            self.exceptions[data["kind"]] += 1
        elif kind == "exception.repair_outcome":
            self.repair_outcomes[f"{data['action']}:{'ok' if data['succeeded'] else 'failed'}"] += 1
        elif kind == "order.status_changed":
            self.states[order_id] = data["state"]
        elif kind == "return.authorised" and topic == "oms.returns.v1":
            # Asked for: under way until the orchestrator tells its first state (kept if it already has).
            self.returns.setdefault(data["return_id"], "requested")
            self.return_orders[data["return_id"]] = order_id
        elif kind == "return.status_changed":
            self.returns[data["return_id"]] = data["state"]
            self.return_orders[data["return_id"]] = order_id

    def rate(self, kind: str, now_ms: int, window_s: float = 5.0) -> float:
        """`kind` ("received" or "released") per second over the last `window_s` seconds."""
        horizon = now_ms - window_s * 1000
        while self.recent and self.recent[0][0] < now_ms - 60_000:
            self.recent.popleft()
        return sum(1 for t, k in self.recent if k == kind and t >= horizon) / window_s

    def latencies_ms(self) -> list[float]:
        """Order placed → its first work order released, for orders the OMS did not hold."""
        return [
            float(self.released_ms[o] - t)
            for o, t in self.created_ms.items()
            if o in self.released_ms and o not in self.held
        ]

    def unsettled(self) -> list[str]:
        """Orders not yet in a resting state, or with a return still under way (nothing more to wait for)."""
        returning = {
            self.return_orders[r] for r, state in self.returns.items() if state not in RESTING_RETURN_STATES
        }
        return [o for o in self.created_ms if self.states.get(o) not in RESTING_STATES or o in returning]

    def summary(self) -> dict[str, Any]:
        latencies = self.latencies_ms()
        return {
            "orders": dict(self.orders),
            "decisions": {k: self.decisions.get(k, 0) for k in DECISION_KINDS},
            "plan_outcomes": dict(self.plan_outcomes),
            "repairs_planned": self.repairs_planned,
            "work_orders": dict(self.work_orders),
            "node_events": dict(self.node_events),
            "carrier_events": dict(self.carrier_events),
            "exceptions": dict(self.exceptions),
            "repair_outcomes": dict(self.repair_outcomes),
            "final_states": dict(Counter(self.states.values())),
            "returns": {"authorised": len(self.returns), "states": dict(Counter(self.returns.values()))},
            "latency_ms": {
                "orders": len(latencies),
                "p50": percentile(latencies, 50),
                "p99": percentile(latencies, 99),
            },
            "dead_letters": dict(self.dead_letters),
            "dead_letter_reasons": list(self.dead_letter_reasons),
        }


__all__ = [
    "DECISION_KINDS",
    "RESTING_RETURN_STATES",
    "RESTING_STATES",
    "LiveTally",
    "decision_kind",
    "percentile",
]
