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
#: Order placed -> first work order released: tens of milliseconds when idle, seconds under load; the
#: objective (deploy/prometheus/rules.yml) is a p99 under 5 s, so bounds cluster around it, and a
#: backlog of minutes still lands in a bucket of its own rather than all in +Inf.
RELEASE_LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


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
        self.batch_phase_seconds = Histogram(
            "orchestrator_batch_phase_seconds",
            "Time in each phase of a committed partition batch (handle, produce, offsets, commit), by stage.",
            ["stage", "phase"],
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
        self.returns_parked_events = Gauge(
            "orchestrator_returns_parked_events",
            "Node return events returns keeps until the OMS's authorisation of their return arrives"
            " (read from the database: every returns instance reports the same number).",
            registry=r,
        )
        self.returns_parked_oldest_seconds = Gauge(
            "orchestrator_returns_parked_oldest_seconds",
            "How long the oldest parked return event has waited (0 when none); past the park limit it"
            " is dead-lettered.",
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
        # Look-ahead prices (decide-node): how fresh they are and what they were computed from.
        self.lookahead_policies = Gauge(
            "orchestrator_lookahead_policies",
            "Routing policies in use (active, shadow) that look ahead; 0: sourcing is myopic.",
            registry=r,
        )
        self.lookahead_refreshes = Counter(
            "orchestrator_lookahead_refreshes_total",
            "Look-ahead price refreshes, by outcome (ok; failed: decisions keep the last prices).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "failed"):  # at 0 from the start: a rate over a failure's first count
            self.lookahead_refreshes.labels(outcome)
        self.lookahead_refresh_seconds = Histogram(
            "orchestrator_lookahead_refresh_seconds",
            "Time to refresh the look-ahead prices: read the window's orders and the ledger, solve.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.lookahead_computed_at = Gauge(
            "orchestrator_lookahead_prices_computed_timestamp_seconds",
            "When the look-ahead prices decisions use were computed (Unix time; 0: never).",
            registry=r,
        )
        self.lookahead_window_lines = Gauge(
            "orchestrator_lookahead_window_lines",
            "Order lines in the demand window the look-ahead prices were computed from.",
            registry=r,
        )
        self.lookahead_priced_positions = Gauge(
            "orchestrator_lookahead_priced_positions",
            "(node, SKU) positions whose units carry a look-ahead price above 0 (for the active policy, or"
            " the shadow when only it looks ahead).",
            registry=r,
        )
        # What the stages decided, counted by the stage itself once the batch commits (StageMeasures),
        # so a batch rolled back and retried is counted once. No stage label: one stage counts each.
        self.decisions = Counter(
            "orchestrator_decisions_total",
            "Plans decide-node made, by outcome (ship, partial, backorder, hold_for_stock, unfulfillable,"
            " preorder_wait: nothing ships and only pre-orders wait) and origin (order: a validated order,"
            " amended or released from hold included; redecide: after reserve lost a race or stock came"
            " for a ship-complete order; repair: a playbook's repair, an exchange, waiting lines released).",
            ["outcome", "origin"],
            registry=r,
        )
        self.split_decisions = Counter(
            "orchestrator_split_decisions_total",
            "Plans decide-node made with more than one shipment, by origin.",
            ["origin"],
            registry=r,
        )
        self.stockout_lines = Counter(
            "orchestrator_stockout_lines_total",
            "Order lines a plan leaves waiting for stock (its back-ordered lines): the short lines of a"
            " partial or backorder plan, every line of an order held whole (hold_for_stock); pre-order"
            " lines waiting for their release date and policy additions are not counted. A line decided"
            " again (a re-plan, stock arriving short) counts again.",
            ["outcome", "origin"],
            registry=r,
        )
        self.reservations = Counter(
            "orchestrator_reservations_total",
            "Plans reserve tried to hold stock for, by result (confirmed; lost_race: stock was gone, the"
            " plan went back to decide-node as a re-decide; superseded: the order was cancelled or"
            " changed since, or a repair was no longer needed) and plan (whole, repair).",
            ["result", "plan"],
            registry=r,
        )
        self.replan_units_left_out = Counter(
            "orchestrator_replan_units_left_out_total",
            "Units a whole re-plan (an amendment's, a re-decide) did not hold because they had left a"
            " node before the re-plan reached reserve: planned again, they would have shipped twice.",
            registry=r,
        )
        self.release_latency = Histogram(
            "orchestrator_order_release_latency_seconds",
            "Order placed (the OMS's placed_at) to its first work order released (release's commit),"
            " for orders planned as created: orders held (by the OMS or policy), amended before"
            " release, back-ordered, pre-ordered or held for stock are left out (that wait is not"
            " the orchestrator's).",
            buckets=RELEASE_LATENCY_BUCKETS,
            registry=r,
        )
        self.exceptions_opened = Counter(
            "orchestrator_exceptions_opened_total",
            "Exceptions the exceptions stage opened a case for (a repeated exception counts once), by kind.",
            ["kind"],
            registry=r,
        )
        self.exceptions_resolved = Counter(
            "orchestrator_exceptions_resolved_total",
            "Exception cases the playbooks finished with, by kind and resolution: the action that"
            " resolved it (reroute, split, rebook_faster, backorder, notify_new_date, offer_options,"
            " cancel_line_refund), order_cancelled, or manual_review (handed to a person: the case"
            " stays unresolved in the review queue).",
            ["kind", "resolution"],
            registry=r,
        )
        self.exceptions_unresolved = Gauge(
            "orchestrator_exceptions_unresolved",
            "Exception cases not resolved, by state (open: waiting for a repair's outcome; in_review:"
            " in the manual-review queue). Read from the database: every exceptions instance reports"
            " the same number.",
            ["state"],
            registry=r,
        )
        self.exceptions_unresolved_oldest_seconds = Gauge(
            "orchestrator_exceptions_unresolved_oldest_seconds",
            "How long the oldest unresolved exception case of each state has been open (0 when none).",
            ["state"],
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
