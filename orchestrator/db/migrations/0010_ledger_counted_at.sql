-- reserve: when the count a ledger row holds was true at the source. A count
-- older than that (an upstream resending an old snapshot, or one overtaken
-- by a later count) is history, not news: it must not put old stock back.
-- Null: the row was never counted (only deltas so far).
ALTER TABLE reserve_ledger ADD COLUMN counted_at timestamptz;
