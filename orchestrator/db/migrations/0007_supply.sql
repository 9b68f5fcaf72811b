-- reserve: supply that is expected (purchase orders, advance shipping notices)
-- and the order lines waiting for supply (back-orders and pre-orders). One
-- first-come-first-served queue per SKU over them gives every waiting line its
-- expected date and says which lines to plan when stock arrives
-- (orchestrator/domain/supply.py).

CREATE TABLE reserve_inbound (
    node_id        text        NOT NULL,
    sku            text        NOT NULL,
    reference      text        NOT NULL,   -- the PO / ASN / transfer number
    supply_kind    text        NOT NULL,
    quantity       integer     NOT NULL CHECK (quantity > 0),
    expected_date  date        NOT NULL,
    as_of          timestamptz NOT NULL,   -- a late, older update never replaces a newer one
    PRIMARY KEY (node_id, sku, reference)
);
CREATE INDEX reserve_inbound_sku ON reserve_inbound (sku);

CREATE TABLE reserve_waiting (
    order_id       text        NOT NULL,
    line_id        text        NOT NULL,
    sku            text        NOT NULL,
    quantity       integer     NOT NULL CHECK (quantity > 0),
    since          timestamptz NOT NULL,   -- its place in the SKU's queue
    release_on     date,                   -- pre-order: the release date; null: a back-order
    -- true: a ship-complete order; when its stock is there the whole order is decided again.
    whole_order    boolean     NOT NULL DEFAULT false,
    sequence       integer     NOT NULL,   -- the ingest sequence of the order it waits in
    order_json     jsonb       NOT NULL,   -- the order as it stood, for the re-plan
    expected_date  date,                   -- what the customer was last told; null: not known yet
    -- waiting: in the queue; requested: a plan of it was asked for and is on its way.
    state          text        NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'requested')),
    requested_at   timestamptz,
    PRIMARY KEY (order_id, line_id)
);
CREATE INDEX reserve_waiting_sku ON reserve_waiting (sku, since);
CREATE INDEX reserve_waiting_due ON reserve_waiting (release_on) WHERE state = 'waiting';
