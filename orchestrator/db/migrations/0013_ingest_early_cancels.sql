-- ingest: cancellations the OMS published before the order they cancel. The order is cancelled the
-- moment its create arrives, instead of being fulfilled (the cancel itself is also dead-lettered,
-- so an operator sees the OMS's events out of order).
CREATE TABLE ingest_early_cancels (
    order_id     text        PRIMARY KEY,
    reason       text        NOT NULL,
    event_id     text        NOT NULL,
    received_at  timestamptz NOT NULL
);
