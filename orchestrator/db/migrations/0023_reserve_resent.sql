-- reserve: units of a shipment that left and that a playbook sends again (a lost parcel). A whole
-- re-plan leaves out what has left a node already, but not these: they never arrive, and the
-- re-send a re-plan gives back must be planned once more.
CREATE TABLE reserve_resent (
    shipment_id text NOT NULL,
    line_id text NOT NULL,
    order_id text NOT NULL,
    units integer NOT NULL CHECK (units > 0),
    plan_id text NOT NULL,
    PRIMARY KEY (shipment_id, line_id)
);
CREATE INDEX reserve_resent_order ON reserve_resent (order_id);

-- What of an order has left, read when a whole re-plan comes.
CREATE INDEX reserve_reservations_order_left ON reserve_reservations (order_id) WHERE consumed > 0;
