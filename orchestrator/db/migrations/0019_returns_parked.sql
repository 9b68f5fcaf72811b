-- returns: a node's event (received, inspected) about a return the OMS's
-- authorisation has not reached us for yet (a store takes back goods the
-- moment the customer walks in; the authorisation travels on another topic).
-- Rather than hold the node topic's partition, the event is kept here, as it
-- arrived, in the transaction that commits its offset. The authorisation's
-- handler replays the return's parked events in arrival order and deletes
-- them; returns' ticker dead-letters those still waiting after the park limit.
CREATE TABLE returns_parked_events (
    event_id          text        PRIMARY KEY,   -- ce_id: a redelivered event is parked once
    return_id         text        NOT NULL,
    order_id          text        NOT NULL,
    event_type        text        NOT NULL,
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
    arrival           bigint      GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX returns_parked_events_return ON returns_parked_events (return_id, arrival);
-- The ticker's scan for events that waited too long.
CREATE INDEX returns_parked_events_parked_at ON returns_parked_events (parked_at);
