-- monitor: a collect-in-store work order has no carrier. Once the store has it ready (its
-- `wms.shipped`), the next word is the customer collecting it, which may take days: its deadline is
-- the playbooks' `collection_within`, not a carrier's next scan.
ALTER TABLE monitor_shipments ADD COLUMN pickup boolean NOT NULL DEFAULT false;
