-- ingest: the lines amendments removed from each order, as they were before removal. A line can
-- ship before the amendment that removes it reaches the node; returns takes such a line back.
ALTER TABLE ingest_orders ADD COLUMN removed_lines jsonb NOT NULL DEFAULT '[]';
