-- monitor: node and carrier events about work monitor has not seen released
-- yet. The release travels on another topic and may come later (a burst, a
-- restart with a backlog on both topics); rather than hold its partition, the
-- event is kept here, exactly as it arrived, in the transaction that commits
-- its offset. The release's handler replays the order's parked events in
-- arrival order and deletes them; monitor's ticker dead-letters those still
-- waiting after the park limit.
CREATE TABLE monitor_parked_events (
    event_id          text        PRIMARY KEY,   -- ce_id: a redelivered event is parked once
    order_id          text        NOT NULL,
    work_order_id     text,                      -- null for carrier events: they name the shipment
    shipment_id       text,
    event_type        text        NOT NULL,
    awaited           text        NOT NULL,      -- what it waits for, in words, for the dead letter
    -- The record as it arrived: a replay decodes it again, a dead letter sends it unchanged.
    source_topic      text        NOT NULL,
    source_partition  integer     NOT NULL,
    source_offset     bigint      NOT NULL,
    source_timestamp  bigint      NOT NULL,      -- ms since the epoch, the record's timestamp
    record_key        bytea,
    record_value      bytea,
    header_names      text[]      NOT NULL,
    header_values     bytea[]     NOT NULL,
    parked_at         timestamptz NOT NULL,
    -- Arrival order across wms and carrier topics: one order's parkings are serialised by its lock.
    arrival           bigint      GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX monitor_parked_events_order ON monitor_parked_events (order_id, arrival);
-- The ticker's scan for events that waited too long.
CREATE INDEX monitor_parked_events_parked_at ON monitor_parked_events (parked_at);
