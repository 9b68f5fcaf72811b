-- decide-node's routing policies deployed from the database, and shadow decisions.
--
-- `orchestrator policy ...` appends to decide_policy_changes; decide-node folds it (in id order)
-- into the active policy, the shadow policy and the stack of earlier actives a rollback returns to
-- (orchestrator/domain/shadow.py). With no rows, decide-node plans by its policy file, as before.

-- The record of who put which policy version in which role, when: append-only.
CREATE TABLE decide_policy_changes (
    id                bigserial   PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    who               text        NOT NULL,
    action            text        NOT NULL
                      CHECK (action IN ('activate', 'deploy_shadow', 'withdraw_shadow', 'promote', 'rollback')),
    role              text        NOT NULL CHECK (role IN ('active', 'shadow')),
    -- What the role holds after the change; both null: nothing (shadow withdrawn) or, for the
    -- active role, the policy file of each decide-node process.
    version           text,
    policy_yaml       text,
    -- What the role held before (null: nothing, or the policy file).
    previous_version  text,
    note              text        NOT NULL DEFAULT ''
);

-- One row per decision made while a shadow policy was deployed: the active policy's plan (the one
-- carried out) and the shadow's on the same inputs (stock, capacity, time, learned risk), measured
-- alike. Append-only; `orchestrator shadow report` aggregates a window of it.
CREATE TABLE decide_shadow_plans (
    order_id                  text             NOT NULL,
    plan_version              integer          NOT NULL,
    decided_at                timestamptz      NOT NULL,
    active_version            text             NOT NULL,
    shadow_version            text             NOT NULL,
    -- Other nodes, carrier services or quantities, or another outcome.
    differs                   boolean          NOT NULL,
    active_outcome            text             NOT NULL,
    shadow_outcome            text             NOT NULL,
    -- What the carriers charge: the same yardstick for both (each policy's own objective beside it).
    active_cost               double precision NOT NULL,
    shadow_cost               double precision NOT NULL,
    active_objective          double precision NOT NULL,
    shadow_objective          double precision NOT NULL,
    active_shipments          integer          NOT NULL,
    shadow_shipments          integer          NOT NULL,
    -- Every line planned, each shipment arriving by the order's promised date.
    active_promise_hit        boolean          NOT NULL,
    shadow_promise_hit        boolean          NOT NULL,
    -- Shipments planned at a node whose capacity for its day is already used up.
    active_capacity_breaches  integer          NOT NULL,
    shadow_capacity_breaches  integer          NOT NULL,
    -- Shipments, back-orders, cost and the explanation of each plan.
    active_plan               jsonb            NOT NULL,
    shadow_plan               jsonb            NOT NULL,
    PRIMARY KEY (order_id, plan_version)
);
CREATE INDEX decide_shadow_plans_decided_at ON decide_shadow_plans (decided_at);
