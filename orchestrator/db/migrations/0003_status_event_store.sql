-- status-sync: the append-only event store of every order's story, and the
-- current-state projection (status_orders, from 0002) folded from it.
CREATE TABLE status_events (
    position        bigserial   PRIMARY KEY,
    event_id        text        NOT NULL UNIQUE,
    order_id        text        NOT NULL,
    event_type      text        NOT NULL,
    source          text        NOT NULL,   -- ce_source: which stage or system said it
    topic           text        NOT NULL,
    occurred_at     timestamptz NOT NULL,   -- ce_time
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    causation_id    text,
    correlation_id  text        NOT NULL,
    summary         text        NOT NULL,   -- the event in words, for timelines
    payload         jsonb       NOT NULL
);
CREATE INDEX status_events_order ON status_events (order_id, position);

ALTER TABLE status_orders ADD COLUMN reasons jsonb NOT NULL DEFAULT '[]';
ALTER TABLE status_orders ADD COLUMN stage text;

-- The event store is append-only: refuse updates and deletes at the database itself.
CREATE FUNCTION status_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'status_events is append-only';
END;
$$;
CREATE TRIGGER status_events_no_update BEFORE UPDATE OR DELETE ON status_events
    FOR EACH ROW EXECUTE FUNCTION status_events_append_only();
