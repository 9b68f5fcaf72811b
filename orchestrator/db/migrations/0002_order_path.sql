-- The order path: each stage's own tables, prefixed with the stage's name.
-- No stage writes another stage's tables; decide-node and validate read the
-- reserve stage's ledger (a slightly stale view is fine there: reserve is
-- the atomic check).

-- ingest: every order's current shape and its sequence of accepted changes.
CREATE TABLE ingest_orders (
    order_id    text        PRIMARY KEY,
    sequence    integer     NOT NULL,
    cancelled   boolean     NOT NULL DEFAULT false,
    order_json  jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- validate: where each order stands with respect to checks and holds.
CREATE TABLE validate_orders (
    order_id    text        PRIMARY KEY,
    sequence    integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('validated', 'held', 'rejected', 'cancelled')),
    holds       text[]      NOT NULL DEFAULT '{}',
    reasons     jsonb       NOT NULL DEFAULT '[]',
    order_json  jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- decide-node: every plan ever made, for `orchestrator explain`.
CREATE TABLE decide_plans (
    order_id      text        NOT NULL,
    plan_version  integer     NOT NULL,
    sequence      integer     NOT NULL,
    outcome       text        NOT NULL,
    plan_json     jsonb       NOT NULL,
    decided_at    timestamptz NOT NULL,
    PRIMARY KEY (order_id, plan_version)
);

CREATE TABLE decide_orders (
    order_id        text    PRIMARY KEY,
    latest_version  integer NOT NULL,
    sequence        integer NOT NULL,
    cancelled       boolean NOT NULL DEFAULT false
);

-- reserve: the inventory ledger, the one place of truth for availability.
CREATE TABLE reserve_ledger (
    node_id       text        NOT NULL,
    sku           text        NOT NULL,
    on_hand       integer     NOT NULL,
    safety_stock  integer     NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    reserved      integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, sku)
);
CREATE INDEX reserve_ledger_sku ON reserve_ledger (sku);

CREATE TABLE reserve_reservations (
    reservation_id  text        PRIMARY KEY,
    order_id        text        NOT NULL,
    plan_id         text        NOT NULL,
    shipment_id     text        NOT NULL,
    line_id         text        NOT NULL,
    node_id         text        NOT NULL,
    sku             text        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity > 0),
    status          text        NOT NULL CHECK (status IN ('active', 'released', 'consumed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    released_at     timestamptz
);
CREATE INDEX reserve_reservations_order ON reserve_reservations (order_id) WHERE status = 'active';

-- Shipments planned per node and local day: the capacity decide-node checks against.
CREATE TABLE reserve_node_load (
    node_id    text    NOT NULL,
    day        date    NOT NULL,
    shipments  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, day)
);

CREATE TABLE reserve_orders (
    order_id        text    PRIMARY KEY,
    sequence        integer NOT NULL,
    active_plan_id  text,
    redecides       integer NOT NULL DEFAULT 0,
    cancelled       boolean NOT NULL DEFAULT false
);

-- release: every work order sent to a node.
CREATE TABLE release_work_orders (
    work_order_id  text        PRIMARY KEY,
    order_id       text        NOT NULL,
    plan_id        text        NOT NULL,
    shipment_id    text        NOT NULL,
    node_id        text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('released', 'cancel_requested')),
    payload        jsonb       NOT NULL,
    released_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX release_work_orders_order ON release_work_orders (order_id);

-- status-sync: each order's current state and the sequence of its transitions.
CREATE TABLE status_orders (
    order_id    text        PRIMARY KEY,
    state       text        NOT NULL,
    sequence    integer     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
