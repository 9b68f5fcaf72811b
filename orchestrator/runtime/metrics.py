"""Prometheus metrics every worker exposes.

One `RuntimeMetrics` per process, on its own registry (no module-level
collectors), shared by the stages that process runs; each series carries
the stage label.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RuntimeMetrics:
    """The runtime's metrics; names and labels are documented in the README."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "orchestrator_events_consumed_total",
            "Events read from a topic and handled (or dead-lettered), by stage, topic and event type.",
            ["stage", "topic", "event_type"],
            registry=r,
        )
        self.events_produced = Counter(
            "orchestrator_events_produced_total",
            "Events committed to a topic, by stage, topic and event type.",
            ["stage", "topic", "event_type"],
            registry=r,
        )
        self.events_failed = Counter(
            "orchestrator_events_failed_total",
            "Handling attempts that failed (retried or dead-lettered), by stage, topic and reason.",
            ["stage", "topic", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "orchestrator_dead_letters_total",
            "Records sent to a dead-letter topic, by stage, source topic and reason.",
            ["stage", "topic", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "orchestrator_events_duplicate_total",
            "Events skipped because their id was already handled (redeliveries), by stage and topic.",
            ["stage", "topic"],
            registry=r,
        )
        self.handling_seconds = Histogram(
            "orchestrator_event_handling_seconds",
            "Time spent in a stage's handler for one event, by stage and event type.",
            ["stage", "event_type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "orchestrator_batch_commit_seconds",
            "Time from the start of a partition batch to its committed transaction, by stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "orchestrator_consumer_lag_messages",
            "Messages in a partition not yet handled by the stage's consumer group.",
            ["stage", "topic", "partition"],
            registry=r,
        )
        self.transient_faults = Counter(
            "orchestrator_transient_faults_total",
            "Batches rolled back and retried after a transient fault, by stage and kind.",
            ["stage", "kind"],
            registry=r,
        )
        self.routing_breaker = Gauge(
            "orchestrator_routing_breaker",
            "1 for the state each node or carrier service's circuit breaker is in (closed, open, half_open); "
            'alert on state="open".',
            ["subject", "state"],
            registry=r,
        )
        self.partitions_assigned = Gauge(
            "orchestrator_partitions_assigned",
            "Input partitions this instance of the stage is assigned now; over all instances of a stage it"
            " adds up to the partitions of its inputs once a rebalance settles.",
            ["stage"],
            registry=r,
        )
        self.monitor_parked_events = Gauge(
            "orchestrator_monitor_parked_events",
            "Node and carrier events monitor keeps until the release of the work they are about arrives"
            " (read from the database: every monitor instance reports the same number).",
            registry=r,
        )
        self.monitor_parked_oldest_seconds = Gauge(
            "orchestrator_monitor_parked_oldest_seconds",
            "How long the oldest parked event has waited (0 when none); past the park limit it is"
            " dead-lettered.",
            registry=r,
        )
        # Shadow policies (decide-node): counted once a decision commits, while a shadow is deployed,
        # for both plans of each decision: role="active" (carried out) and role="shadow".
        self.policy_deployed = Gauge(
            "orchestrator_policy_deployed",
            "1 for the routing policy version decide-node uses in each role (active, shadow).",
            ["role", "version"],
            registry=r,
        )
        shadow_labels = ["role", "version"]
        self.shadow_decisions = Counter(
            "orchestrator_shadow_decisions_total",
            "Decisions planned by both the active and the shadow policy.",
            shadow_labels,
            registry=r,
        )
        self.shadow_differing = Counter(
            "orchestrator_shadow_differing_decisions_total",
            "Decisions the shadow policy planned differently (nodes, carrier services, quantities, outcome).",
            ["active_version", "shadow_version"],
            registry=r,
        )
        self.shadow_shipping_cost = Counter(
            "orchestrator_shadow_shipping_cost_total",
            "What the carriers charge for the plans, summed (the order's currency units).",
            shadow_labels,
            registry=r,
        )
        self.shadow_shipments = Counter(
            "orchestrator_shadow_shipments_total", "Shipments the plans have.", shadow_labels, registry=r
        )
        self.shadow_planned = Counter(
            "orchestrator_shadow_planned_decisions_total",
            "Plans with at least one shipment (the split rate's denominator).",
            shadow_labels,
            registry=r,
        )
        self.shadow_splits = Counter(
            "orchestrator_shadow_split_decisions_total",
            "Plans with more than one shipment.",
            shadow_labels,
            registry=r,
        )
        self.shadow_promise_hits = Counter(
            "orchestrator_shadow_promise_hits_total",
            "Plans shipping every line by the order's promised date.",
            shadow_labels,
            registry=r,
        )
        self.shadow_capacity_breaches = Counter(
            "orchestrator_shadow_capacity_breaches_total",
            "Shipments planned at a node whose capacity for the day was already used up.",
            shadow_labels,
            registry=r,
        )
        self.stage_ready = Gauge(
            "orchestrator_stage_ready",
            "1 while the stage is consuming normally, 0 while starting, backing off or stopped.",
            ["stage"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
