-- The runtime's idempotency record: one row per event a database stage handled.
CREATE TABLE runtime_processed_events (
    stage            text        NOT NULL,
    event_id         text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    -- The records the handler produced, replayed if the Kafka transaction was lost.
    outputs          bytea       NOT NULL,
    processed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stage, event_id)
);

-- Pruning old idempotency records walks this index.
CREATE INDEX runtime_processed_events_processed_at ON runtime_processed_events (processed_at);
