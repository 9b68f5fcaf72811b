-- monitor: one row per released work order (one planned shipment), with the
-- milestone it reached and its deadlines. The deadlines live here, not in
-- memory, so the timers survive restarts: the ticker of any instance finds
-- what fell due by scanning these columns.
CREATE TABLE monitor_shipments (
    work_order_id           text        PRIMARY KEY,
    order_id                text        NOT NULL,
    shipment_id             text        NOT NULL,
    node_id                 text        NOT NULL,
    state                   text        NOT NULL CHECK (state IN (
                                'released', 'acknowledged', 'picked', 'packed', 'shipped', 'in_transit',
                                'delivered', 'cancel_requested', 'cancelled', 'rejected', 'node_cancelled',
                                'lost')),
    lines                   jsonb       NOT NULL,   -- the work order's lines: [{line_id, sku, quantity}]
    promised_delivery_date  date        NOT NULL,
    ack_due_at              timestamptz NOT NULL,   -- release + the acknowledge timeout
    ship_due_at             timestamptz NOT NULL,   -- the work order's ship_by (the carrier cut-off)
    scan_due_at             timestamptz,            -- set when shipped, pushed forward by every scan
    tracking_number         text,
    last_event_at           timestamptz,            -- occurred_at of the latest node or carrier event
    fired                   text[]      NOT NULL DEFAULT '{}',  -- timers that raised their exception
    raised                  text[]      NOT NULL DEFAULT '{}',  -- exception ids raised, so each is raised once
    correlation_id          text        NOT NULL,   -- the order's story, carried onto timer events
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX monitor_shipments_order ON monitor_shipments (order_id);
-- A node closing strands the work still at it.
CREATE INDEX monitor_shipments_open_at_node ON monitor_shipments (node_id)
    WHERE state IN ('released', 'acknowledged', 'picked', 'packed');
-- The ticker's three scans, each only over the rows its deadline still applies to.
CREATE INDEX monitor_shipments_ack_due ON monitor_shipments (ack_due_at) WHERE state = 'released';
CREATE INDEX monitor_shipments_ship_due ON monitor_shipments (ship_due_at)
    WHERE state IN ('released', 'acknowledged', 'picked', 'packed');
CREATE INDEX monitor_shipments_scan_due ON monitor_shipments (scan_due_at)
    WHERE state IN ('shipped', 'in_transit');
