-- reserve: a shipment consumes what it reserved. `consumed` counts the units of a reservation that
-- left with its shipment; `quantity` stays what is still held while the row is active (a row whose
-- units all left is 'consumed').
ALTER TABLE reserve_reservations ADD COLUMN consumed integer NOT NULL DEFAULT 0 CHECK (consumed >= 0);
CREATE INDEX reserve_reservations_shipment ON reserve_reservations (shipment_id);

-- The shipment log of each ledger position since its last count: a count taken before a shipment
-- left, arriving after it, must not put its units back (see orchestrator.domain.stock_counts).
CREATE TABLE reserve_shipped (
    node_id     text        NOT NULL,
    sku         text        NOT NULL,
    shipped_at  timestamptz NOT NULL,
    units       integer     NOT NULL CHECK (units > 0)
);
CREATE INDEX reserve_shipped_position ON reserve_shipped (node_id, sku, shipped_at);
