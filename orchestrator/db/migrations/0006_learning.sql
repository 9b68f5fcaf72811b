-- Routing that learns from execution (orchestrator/domain/learning.py). monitor
-- counts every node's and carrier service's outcomes into per-minute buckets
-- and moves their circuit breakers; decide-node reads both (read-only), and
-- operators override breakers with `orchestrator routing override`.

-- Append-only: one row per counted event, never updated, so monitor's partitions never wait on
-- each other's row locks (a busy DC's outcomes arrive on every partition at once). Sums are
-- taken over (subject, minute) when read.
CREATE TABLE learning_buckets (
    subject         text        NOT NULL,   -- node:<id> or service:<id>
    minute          timestamptz NOT NULL,   -- the minute it happened in (whole minute, UTC)
    acknowledged    integer     NOT NULL DEFAULT 0,
    rejected        integer     NOT NULL DEFAULT 0,
    picked          integer     NOT NULL DEFAULT 0,
    short_picked    integer     NOT NULL DEFAULT 0,
    node_cancelled  integer     NOT NULL DEFAULT 0,
    shipped         integer     NOT NULL DEFAULT 0,
    shipped_late    integer     NOT NULL DEFAULT 0,
    delivered       integer     NOT NULL DEFAULT 0,
    delivered_late  integer     NOT NULL DEFAULT 0,
    lateness_days   integer     NOT NULL DEFAULT 0,
    lost            integer     NOT NULL DEFAULT 0
);
CREATE INDEX learning_buckets_subject ON learning_buckets (subject, minute);
CREATE INDEX learning_buckets_minute ON learning_buckets (minute);

-- The carrier service and promised date of what a node shipped, for the carrier's outcomes.
CREATE TABLE learning_shipments (
    work_order_id   text        PRIMARY KEY,
    service_id      text        NOT NULL,
    promised_date   date        NOT NULL
);

CREATE TABLE learning_breakers (
    subject          text        PRIMARY KEY,
    state            text        NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    since            timestamptz,
    until            timestamptz,
    reason           text        NOT NULL DEFAULT '',
    override         text        CHECK (override IN ('open', 'closed')),
    override_reason  text        NOT NULL DEFAULT '',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- decide-node's: which order is the one probe a half-open node or service gets in one probation
-- (period = the end of the cool-down that started it). The first order to claim it is the probe;
-- the others are decided without that subject until its breaker moves.
CREATE TABLE decide_probes (
    subject     text        NOT NULL,
    period      timestamptz NOT NULL,
    order_id    text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, period)
);
