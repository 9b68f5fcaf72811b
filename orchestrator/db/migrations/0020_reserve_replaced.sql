-- reserve: the repairs it held of work a node was asked to stop (a node that refused, closed, did
-- not acknowledge...). If that node ships the work after all, the repair is undone: its new
-- shipments not yet gone are given back (release cancels their work orders) and its lines stop
-- waiting, so the lines do not ship twice.
CREATE TABLE reserve_replaced (
    shipment_id  text        NOT NULL,   -- the failing shipment the repair replaced
    plan_id      text        NOT NULL,   -- the repair's plan
    order_id     text        NOT NULL,
    sequence     integer     NOT NULL,   -- the order sequence the repair was decided on
    line_ids     text[]      NOT NULL,   -- the lines it planned again
    shipment_ids text[]      NOT NULL,   -- its new shipments (none when the lines all wait)
    held_at      timestamptz NOT NULL,
    undone_at    timestamptz,            -- set when the failing shipment left after all
    PRIMARY KEY (shipment_id, plan_id)
);
