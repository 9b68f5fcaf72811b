-- reserve: a waiting line whose plan was in flight when a node holding its SKU opened. That plan was
-- decided without the node; if the line comes back to wait, reserve asks for one more plan at once.
ALTER TABLE reserve_waiting ADD COLUMN recheck boolean NOT NULL DEFAULT false;
